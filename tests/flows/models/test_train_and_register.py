"""Fit / train -> register -> a separate process without the project loads the champion and predicts
(flows/models: the jobs, their gates, by hand through ``loadwise promote`` / ``rollback`` too)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.registry import CHAMPION, ModelRegistry
from tests.consumer import consume
from training.simulator.profiles import PAPER_PROFILE, load_latency_model


def batches() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prefill_tokens": [0, 512, 2048],
            "prefill_attention_tokens2": [0.0, 512.0**2, 2048.0**2],
            "decode_seqs": [8, 4, 0],
            "decode_context_tokens": [8000, 3000, 0],
        }
    )


def test_fit_estimator_cli_registers_a_champion_a_bare_process_can_use(home: Path):
    from flows.cli import app

    out = CliRunner().invoke(app, ["fit-estimator", "--profile", PAPER_PROFILE, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"]["name"] == "impact-estimator"
    assert result["model"]["version"] == "1"
    assert set(result["model"]["aliases"]) == {"challenger", CHAMPION}
    assert result["promotion"]["promoted"]
    registry = ModelRegistry()
    assert registry.tracking_uri == f"sqlite:///{(home / 'mlflow.db').resolve()}"
    v = registry.get("impact-estimator", CHAMPION)
    assert json.loads(v.tags["loadwise.config"])["profile"] == PAPER_PROFILE
    assert registry.client.get_run(v.run_id).inputs.dataset_inputs == []  # the paper's preset: no data
    frame = batches()
    got, _ = consume("models:/impact-estimator@champion", registry.tracking_uri, frame)
    lm = load_latency_model(PAPER_PROFILE)
    want = [lm.iteration_time(*row) for row in frame.itertuples(index=False)]
    assert got["iteration_time_s"].tolist() == pytest.approx(want, rel=1e-12)


def test_a_different_profile_does_not_replace_the_champion(home: Path, shared_data: Path):
    from flows.models import fit_and_register_estimator

    registry = ModelRegistry()
    first = fit_and_register_estimator({"profile": PAPER_PROFILE}, registry)
    second = fit_and_register_estimator({"profile": "a100-llama2-7b"}, registry)
    assert first.decision.promoted
    assert not second.decision.promoted
    assert "promote by hand" in second.decision.reason
    assert second.metrics["chosen.holdout_mape_pct"] < 5.0
    assert registry.get("impact-estimator", CHAMPION).version == first.version.version
    # By hand the gate's verdict is shown and refuses; --force (with a reason) overrides it, recorded
    # on the version; rollback moves it back.
    from flows.cli import app

    v2 = second.version.version
    refused = CliRunner().invoke(app, ["promote", "impact-estimator", v2])
    assert refused.exit_code == 1, refused.output
    assert f"gate on impact-estimator v{v2}: refuses: {second.decision.reason}" in refused.output
    assert registry.get("impact-estimator", CHAMPION).version == first.version.version
    no_reason = CliRunner().invoke(app, ["promote", "impact-estimator", v2, "--force"])
    assert no_reason.exit_code == 2
    assert "--force needs --reason" in no_reason.output
    moved = CliRunner().invoke(app, ["promote", "impact-estimator", v2, "--force", "--reason", "A100 fleet"])
    assert moved.exit_code == 0, moved.output
    assert f"champion v{first.version.version}" in moved.output
    forced = json.loads(registry.get("impact-estimator", v2).tags["loadwise.forced"])
    assert forced["why"] == "A100 fleet"
    assert forced["gate"] == second.decision.reason
    back = CliRunner().invoke(app, ["rollback", "impact-estimator"])
    assert back.exit_code == 0, back.output
    assert registry.get("impact-estimator", CHAMPION).version == first.version.version


def test_an_identical_refit_is_not_registered_again_nor_promoted(home: Path, shared_data: Path):
    """The drift-watch run that missed its caches re-fitted the estimator and moved champion to v2
    with identical metrics ("promoted: 1.049 vs 1.049"): now it is reported as unchanged."""
    from flows.models import fit_and_register_estimator

    registry = ModelRegistry()
    first = fit_and_register_estimator({"profile": "a100-llama2-7b"}, registry)
    again = fit_and_register_estimator({"profile": "a100-llama2-7b"}, registry)
    assert first.decision.promoted
    assert again.version.reused
    assert again.version.version == first.version.version
    assert not again.decision.promoted
    assert again.decision.reason.startswith("unchanged: identical to impact-estimator v1")
    assert [v.version for v in registry.versions("impact-estimator")] == ["1"]
    assert registry.get("impact-estimator", CHAMPION).version == "1"
    # The engine iterations it was fitted on are the run's input dataset (issue 19).
    (used,) = registry.client.get_run(first.version.run_id).inputs.dataset_inputs
    assert used.dataset.name == "impact-estimator-train:a100-llama2-7b"
    fitted = json.loads(
        registry.download_artifact("impact-estimator", "1", "estimator", home / "e").read_text()
    )
    assert json.loads(used.dataset.profile)["num_rows"] == fitted["report"]["n_train_points"] > 0


@pytest.mark.prefect
def test_refit_flow_registers_and_publishes_the_report(prefect_harness: None, home: Path):
    from prefect.artifacts import Artifact

    from flows.models import refit_impact_estimator

    uri = f"sqlite:///{home / 'flow-mlflow.db'}"
    home.mkdir(parents=True, exist_ok=True)
    result = refit_impact_estimator({"profile": PAPER_PROFILE}, tracking_uri=uri)
    assert result["model"]["name"] == "impact-estimator"
    assert result["promotion"]["promoted"]
    artifact = Artifact.get("impact-estimator-report")
    assert artifact is not None
    assert "impact-estimator v1" in str(artifact.data)


def test_tiny_predictor_train_register_and_predict_in_a_bare_process(home: Path, tmp_path: Path):
    """The issue's tiny end-to-end: train (tiny random encoder) -> register -> load elsewhere -> predict."""
    from flows.models import LENGTH_PREDICTOR, train_and_register_predictor
    from tests.training.length.samples import castillo_rows, tiny_config, write_warehouse

    wh = write_warehouse(tmp_path / "w.duckdb", castillo_rows())
    registry = ModelRegistry()
    published = train_and_register_predictor(tiny_config().model_dump(), wh, registry)
    assert published.decision.promoted
    assert "mae_tokens" in published.metrics
    # the training prompts' rows are the run's input dataset (issue 19), validation and test left out
    (used,) = registry.client.get_run(published.version.run_id).inputs.dataset_inputs
    assert used.dataset.name.startswith(f"{LENGTH_PREDICTOR}-train:")
    from training.length.data import load_rows, split_prompts

    rows = load_rows(wh, tiny_config())
    n_train = int((split_prompts(rows["prompt_text"]) == "train").sum())
    assert 0 < json.loads(used.dataset.profile)["num_rows"] == n_train < len(rows)
    frame = pd.DataFrame(
        {
            "prompt_text": ["Please write a long essay about topic 3 for Apps.", None],
            "prompt_tokens": [13, 40],
            "task": ["Apps", "ShareGPT"],
        }
    )
    got, _ = consume(f"models:/{LENGTH_PREDICTOR}@champion", registry.tracking_uri, frame)
    probs = got[[c for c in got.columns if c.startswith("p_bucket_")]]
    assert probs.sum(axis=1).tolist() == pytest.approx([1.0, 1.0])
    assert (got["expected_output_tokens"] > 0).all()
    from training.length.train import TrainedLengthPredictor

    folder = registry.download_artifact(LENGTH_PREDICTOR, CHAMPION, "predictor", tmp_path / "dl")
    local = TrainedLengthPredictor.load(folder).predict_frame(frame)
    assert got["expected_output_tokens"].tolist() == pytest.approx(local["expected_output_tokens"].tolist())


def test_train_router_registers_a_policy_that_compare_and_a_bare_process_use(home: Path, shared_data: Path):
    """train-router (a few hundred steps) -> llm-router@champion -> isolated consumer and compare."""
    from flows.cli import app

    runner = CliRunner()
    out = runner.invoke(
        app, ["train-router", "--timesteps", "200", "--requests", "150", "--eval-seeds", "0", "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"]["name"] == "llm-router"
    assert {"rl", "round_robin", "workload_impact_greedy"} <= set(result["evaluation"])
    assert "vs_best_baseline_pct" in result["metrics"]
    # The statistical gate decides, even for the first version (before the fix it became champion
    # on mean E2E alone): one replay is no interval, so it is refused, and so is promote by hand.
    assert CHAMPION not in result["model"]["aliases"]
    assert not result["promotion"]["promoted"]
    assert "needs at least 2 replays (seeds), got 1" in result["promotion"]["reason"]
    registry = ModelRegistry()
    assert registry.get("llm-router", "1").tags["loadwise.gate.passed"] == "false"
    run_id = registry.get("llm-router", "1").run_id  # the SB3 checkpoint is kept with the run
    saved = [a.path for a in registry.client.list_artifacts(run_id, "checkpoints")]
    assert saved == ["checkpoints/final_model.zip"]
    refused = runner.invoke(app, ["promote", "llm-router", "1"])
    assert refused.exit_code == 1
    assert "gate on llm-router v1: refuses: the gate refused v1: not promoted" in refused.output
    forced = runner.invoke(app, ["promote", "llm-router", "1", "--force", "--reason", "smoke test"])
    assert forced.exit_code == 0, forced.output
    version = registry.get("llm-router", CHAMPION)
    assert json.loads(version.tags["loadwise.config"])["total_timesteps"] == 200

    from mlflow.models import Model

    local = Path(registry.download_artifact("llm-router", CHAMPION, "policy_dir", home / "dl")).parents[1]
    example = Model.load(str(local)).load_input_example(str(local))  # a float64 tensor (issue 15)
    got, _ = consume("models:/llm-router@champion", registry.tracking_uri, pd.DataFrame(example))
    assert got["prediction"].between(-1, 3).all()

    compared = runner.invoke(
        app,
        [
            "compare",
            "--routers",
            "round_robin,llm-router@champion",
            "--requests",
            "150",
            "--seeds",
            "0",
            "--json",
        ],
    )
    assert compared.exit_code == 0, compared.output
    assert set(json.loads(compared.stdout)["routers"]) == {"round_robin", "rl"}

    # A second router of the same setting is judged against the champion, replayed on its windows.
    out = runner.invoke(
        app,
        ["train-router", "--timesteps", "200", "--requests", "150", "--eval-seeds", "0,1", "--seed", "1",
         "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"rl", CHAMPION, "round_robin"} <= set(result["evaluation"])
    v2 = registry.get("llm-router", result["model"]["version"])
    assert v2.tags["loadwise.gate.champion"] == "1"
    gate_md = registry.client.download_artifacts(v2.run_id, "reports/gate.md", str(home))
    assert "| champion | champion |" in Path(gate_md).read_text()
    want = v2.version if result["promotion"]["promoted"] else "1"
    assert registry.get("llm-router", CHAMPION).version == want
