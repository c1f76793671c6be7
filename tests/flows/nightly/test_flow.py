"""The ``nightly-retrain`` flow end to end on a small synthetic warehouse (tiny RL router).

One scenario, in order, because each phase starts from the state the previous one left:
first run (trains, evaluates the RL policy and the tuned rules, registers the best, which becomes
the first champion) -> second run with no new data (nothing retrained, nothing registered) -> a step
that fails (champion, warehouse and watermark untouched) -> a run whose candidates do not beat the
champion and the best baseline (refused; champion unchanged) -> another setting (not replaced).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.rl.samples import TINY
from warehouse.settings import PROJECT_ROOT

ROUTER = {k: v for k, v in TINY.items() if k != "num_instances"}


def _config(**over: object):
    from flows.nightly.config import NightlyConfig

    base = {
        "synthetic_rows": 1500,
        "profile": "v100-llama2-7b-paper",
        "rate_rps": 2.5,
        "num_instances": 2,
        "router": ROUTER,
        "eval_seeds": (0, 1, 2),
        "eval_requests": 40,
    }
    return NightlyConfig.model_validate({**base, **over})


def _first_details(db: Path) -> dict:
    """``ops.nightly_runs.details`` of the first ``ok`` run (its own function: the connection is gone
    when it returns, as the leak check at the end of the scenario needs)."""
    from warehouse.store import connect_readonly

    con = connect_readonly(db)
    try:
        row = con.execute(
            "SELECT details FROM ops.nightly_runs WHERE status = 'ok' ORDER BY finished_at LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return json.loads(row[0])


def _runs(db: Path) -> list[tuple]:
    from warehouse.store import connect_readonly

    con = connect_readonly(db)
    try:
        return con.execute(
            "SELECT status, watermark_file_id, retrained, promoted, decision FROM ops.nightly_runs "
            "ORDER BY finished_at"
        ).fetchall()
    finally:
        con.close()


def _request_count(db: Path) -> int:
    """In a frame of its own: a connection bound in the test's frame would live as long as the
    failed run's traceback, which Prefect keeps to the end of the process (nanobind leak at exit)."""
    from warehouse.store import connect_readonly

    with connect_readonly(db) as con:
        return con.execute("SELECT count(*) FROM marts.requests").fetchone()[0]


def _live_connections() -> set[int]:
    import gc

    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o).__name__ == "DuckDBPyConnection"}


@pytest.mark.prefect
def test_nightly_retrain_scenario(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.models import LLM_ROUTER
    from flows.nightly.flow import nightly_retrain
    from flows.registry import ModelRegistry

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "home" / "warehouse.duckdb"
    registry = ModelRegistry()
    connections_before = _live_connections()

    # 1. First run: everything runs; the best of the RL policy and the tuned rules is registered and,
    #    with no champion yet, becomes the first one (not significantly worse than the best baseline).
    first = nightly_retrain(_config())
    assert first["synthetic"]
    steps = first["steps"]
    assert steps["retrain-impact-estimator"] == "ran"
    assert steps["train-router"] == "ran"
    assert steps["evaluate-router"] == "ran"
    assert steps["retrain-length-predictor"].startswith("skipped")
    assert first["drift"]["drifted"] is None  # no reference window yet
    evaluation = first["evaluation"]
    names = ["challenger", "rule-workload_impact_greedy", "rule-workload_impact_greedy+hold",
             "rule-least_tokens+hold"]  # fmt: skip
    assert set(names) <= set(evaluation)
    assert "round_robin" in evaluation
    assert "champion" not in evaluation
    router = first["router"]
    assert [c["name"] for c in router["candidates"]] == names
    assert [c["policy"] for c in router["candidates"]] == ["rl", *(f"rule:{n[5:]}" for n in names[1:])]
    best = min(names, key=lambda n: (evaluation[n]["e2e_mean"], evaluation[n]["e2e_p99"], names.index(n)))
    assert router["chosen"] == best
    gate = first["gate"]
    assert gate["champion"] is None
    assert gate["challenger"] == best
    assert gate["best_baseline"] in evaluation
    assert [c["kind"] for c in gate["checks"]] == ["best_baseline"]
    assert first["promoted"], gate["reason"]
    assert gate["reason"].startswith(f"first champion: {best} is not significantly worse than the best")
    report_dir = Path(first["report_dir"])
    text = (report_dir / "report.md").read_text()
    assert "## Promotion gate" in text
    assert "## Router candidates" in text
    # no predictor champion (no data folder): every router routed on task means, and the report says so
    assert first["predictions"] == {"predictor": "task_mean", "stored": None}
    assert "## Length predictions the routers used" in text
    assert "routed with **task_mean**" in text
    assert all(f"| {n} |" in text for n in names)
    assert any(Path(tmp_path / "home" / "nightly" / "evaluations").rglob("e2e_cdf.png"))
    cache = tmp_path / "home" / "nightly" / "cache"
    assert any(p.name.startswith("router-") for p in cache.iterdir())  # step results, keyed by inputs
    runs = _runs(db)
    assert runs[-1][0] == "ok"
    assert runs[-1][1] >= 1
    # every step's wall time, every night: in the summary, the report and ops.nightly_runs
    seconds = first["step_seconds"]
    assert {"ingest-traces", "retrain-impact-estimator", "train-router", "evaluate-router"} <= set(seconds)
    assert all(v >= 0 for v in seconds.values())
    assert "| train-router | ran | " in text
    assert "| step | outcome | wall (s) |" in text
    assert set(_first_details(db)["step_seconds"]) == set(seconds) - {"publish-report"}
    assert set(first["step_cpu_seconds"]) == set(seconds)  # and each step's CPU seconds beside it
    assert set(_first_details(db)["step_cpu_seconds"]) == set(seconds) - {"publish-report"}
    from prefect.artifacts import Artifact

    for key in ("nightly-ingest", "impact-estimator-report", "nightly-router-candidates",
                "nightly-retrain-routers", "nightly-retrain-cdf", "nightly-retrain-report"):  # fmt: skip
        assert Artifact.get(key) is not None, key
    assert "Promotion gate" in str(Artifact.get("nightly-retrain-report").data)
    versions_after_first = len(registry.versions(LLM_ROUTER))
    assert versions_after_first == 1
    # The gate's comparison is logged next to the model version (tag + report in its run), with its
    # kind and why it was chosen; it is the champion.
    v1 = registry.versions(LLM_ROUTER)[0]
    assert registry.find(LLM_ROUTER, "champion").version == v1.version
    assert v1.tags["loadwise.gate"] == gate["reason"]
    assert v1.tags["loadwise.policy"] == router["policy"]
    assert v1.tags["loadwise.chosen"].startswith(f"{best}: the lowest mean E2E of the night's 4 candidate(s)")
    logged = registry.client.download_artifacts(v1.run_id, "reports/gate.md", str(tmp_path))
    assert "Promotion gate" in Path(logged).read_text()
    logged = registry.client.download_artifacts(v1.run_id, "reports/candidates.md", str(tmp_path))
    assert all(f"| {n} |" in Path(logged).read_text() for n in names)

    # 2. Same inputs again: every step is a cache hit (or skipped), no new model version; the
    #    champion chosen from these candidates stays.
    second = nightly_retrain(_config())
    assert second["ingest"]["ingested"] == 0
    assert second["drift"]["new_requests"] == 0
    assert second["steps"]["train-router"].startswith(
        f"skipped: llm-router v{v1.version} ({router['policy']}), chosen from these candidates, is already"
    )
    assert second["steps"]["retrain-impact-estimator"] == "cached"
    assert registry.find(LLM_ROUTER, "champion").version == v1.version
    assert _runs(db)[-1][2] == ""  # nothing retrained
    assert len(registry.versions(LLM_ROUTER)) == versions_after_first
    assert len(registry.versions("impact-estimator")) == 1

    # 3. A failing step: the flow fails, the champion, warehouse and watermark stay as they were.
    version1 = registry.versions(LLM_ROUTER)[0].version  # the champion to protect
    rows_before = _request_count(db)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("replay node lost")

    monkeypatch.setattr("flows.nightly.router.evaluate_spec", broken)
    with pytest.raises(RuntimeError, match="replay node lost"):
        nightly_retrain(_config(router={**ROUTER, "seed": 1}))
    monkeypatch.undo()
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.find(LLM_ROUTER, "champion").version == version1
    status, watermark, _, _, decision = _runs(db)[-1]
    assert status == "failed"
    assert watermark is None
    assert decision.startswith("evaluate-router failed: RuntimeError: replay node lost")
    assert _request_count(db) == rows_before
    assert _live_connections() <= connections_before  # the failed run's kept traceback holds none

    # 4. A tiny 300-step RL candidate (seed 1) and the rules vs the champion and the best baseline:
    #    the night's best is refused (a rule identical to the champion is not a candidate: it is it).
    third = nightly_retrain(_config(router={**ROUTER, "seed": 1}))
    assert third["steps"]["train-router"] == "cached"  # trained by the failed run, result kept
    assert third["steps"]["evaluate-router"] == "ran"
    assert "champion" in third["evaluation"]
    assert best not in [c["name"] for c in third["router"]["candidates"]] or best == "challenger"
    assert [c["kind"] for c in third["gate"]["checks"]] == ["champion", "best_baseline"]
    assert third["gate"]["config"]["confidence"] > 0.95  # raised for the choice among the candidates
    assert not third["promoted"]
    assert not third["gate"]["passed"]
    assert third["steps"]["promote-router"] == "kept the champion"
    assert registry.find(LLM_ROUTER, "champion").version == version1
    assert _runs(db)[-1][0] == "ok"

    # 5. A new setting (3 instances): the 2-instance champion is not replayed nor replaced.
    other = nightly_retrain(_config(num_instances=3))
    assert "champion" not in other["evaluation"]
    assert other["gate"]["reason"].startswith(f"not promoted: the champion v{version1} serves another")
    assert registry.find(LLM_ROUTER, "champion").version == version1


@pytest.mark.prefect
def test_drift_forces_retraining_between_schedules(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``retrain = "on-drift"`` (the hourly drift-watch): new data like the training window does not
    retrain (the watermark stays), a drifted arrival does (and the watermark moves)."""
    from datetime import datetime

    from flows.models import LLM_ROUTER
    from flows.nightly.flow import nightly_retrain
    from flows.registry import ModelRegistry
    from warehouse.ingest import ingest
    from warehouse.synthetic import SyntheticConfig, write_azure_file, write_azure_like

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "home" / "warehouse.duckdb"
    nightly_retrain(_config())
    registry = ModelRegistry()
    registry.promote(LLM_ROUTER, registry.versions(LLM_ROUTER)[0].version)
    watermark = _runs(db)[-1][1]
    next_day = datetime(2023, 11, 17, 18, 15, 0)

    # Same distributions and rate as the training window: nothing retrains, the watermark stays.
    similar = write_azure_like(tmp_path / "similar", SyntheticConfig(rows=1500, seed=9, start=next_day))
    ingest(similar, warehouse=db, source="synthetic")
    calm = nightly_retrain(_config(retrain="on-drift"))
    assert calm["drift"]["new_requests"] > 0
    assert calm["drift"]["drifted"] is False, calm["drift"]["reasons"]
    assert calm["steps"]["train-router"].startswith("skipped: retrain = on-drift")
    assert calm["gate"] is None
    assert _runs(db)[-1][1] == watermark

    # A burst of code requests at 4x the rate: drift, so the router retrains on the new data.
    burst = write_azure_file(tmp_path / "burst" / "code.csv", 1500, "code", seed=11, rate_per_s=32.0,
                             start=datetime(2023, 11, 18, 18, 15, 0))  # fmt: skip
    ingest([burst], warehouse=db, source="synthetic")
    drifted = nightly_retrain(_config(retrain="on-drift"))
    assert drifted["drift"]["drifted"] is True
    assert any("arrival rate" in r for r in drifted["drift"]["reasons"])
    assert drifted["steps"]["train-router"] == "ran"
    assert drifted["gate"] is not None
    assert _runs(db)[-1][1] > watermark


def test_the_example_config_is_the_defaults():
    from flows.nightly.config import NightlyConfig

    example = PROJECT_ROOT / "configs" / "nightly.toml"
    assert NightlyConfig.from_file(example) == NightlyConfig()


def test_config_files_are_validated(tmp_path: Path):
    from pydantic import ValidationError

    from flows.nightly.config import NightlyConfig

    (tmp_path / "a.yaml").write_text("eval_seeds: [0, 1]\ngate: {confidence: 0.99}\n")
    cfg = NightlyConfig.from_file(tmp_path / "a.yaml")
    assert cfg.eval_seeds == (0, 1)
    assert cfg.gate.confidence == 0.99
    (tmp_path / "b.json").write_text('{"retrian": "changed"}')
    with pytest.raises(ValidationError, match="retrian"):
        NightlyConfig.from_file(tmp_path / "b.json")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ValueError, match=r"\.toml, \.yaml"):
        NightlyConfig.from_file(tmp_path / "c.ini")


def test_the_sub_configs_are_typed_and_mirror_the_training_configs():
    """``[router]`` / ``[estimator]`` / ``[predictor]`` are typed (they were ``dict[str, Any]``): the
    training configs' fields, less those the run decides, with the nightly's defaults; the run builds
    its ``RouterTrainConfig`` / ``EstimatorConfig`` from them."""
    from flows.nightly.config import ROUTER_FIXED, NightlyConfig
    from training.impact.fit import EstimatorConfig
    from training.length.config import PredictorConfig
    from training.rl.config import RouterTrainConfig

    cfg = NightlyConfig.model_validate(
        {"router": {"variant": "aware", "net_arch": [16]}, "estimator": {"num_replays": 3},
         "predictor": {"buckets": "log2"}, "seed": 7, "num_instances": 3}
    )  # fmt: skip
    assert (cfg.router.total_timesteps, cfg.router.seed) == (20_000, None)  # the nightly's defaults
    assert set(type(cfg.router).model_fields) == set(RouterTrainConfig.model_fields) - set(ROUTER_FIXED)
    assert set(type(cfg.estimator).model_fields) == set(EstimatorConfig.model_fields)
    assert isinstance(cfg.predictor, PredictorConfig)
    assert cfg.predictor.buckets == "log2"
    (train,) = cfg.router_configs("w.duckdb", "v100-llama2-7b-paper", 2.5).values()
    assert train == RouterTrainConfig(
        variant="aware", net_arch=(16,), total_timesteps=20_000, checkpoint_every_steps=100_000, seed=7,
        workload="warehouse", warehouse="w.duckdb", where="format = 'azure'",
        profile="v100-llama2-7b-paper", rate_rps=2.5, num_instances=3,
    )  # fmt: skip
    assert train.reward.variant == "aware"
    candidates = cfg.model_copy(update={"router_seeds": (4, 2)}).router_configs(None, "a100-llama2-7b", 9.0)
    assert [c.seed for c in candidates.values()] == [4, 2]
    assert cfg.estimator.fit_config("a100-llama2-7b") == EstimatorConfig(
        profile="a100-llama2-7b", num_replays=3
    )
    assert NightlyConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # a deployment's parameters


def test_step_keys_change_with_any_input():
    from flows.nightly.keys import STEP_SOURCES, step_key
    from flows.registry import code_fingerprint

    base = step_key("router", config={"seed": 0}, data="abc", code="c1")
    assert base == step_key("router", data="abc", code="c1", config={"seed": 0})  # order-free
    assert base != step_key("router", config={"seed": 1}, data="abc", code="c1")
    assert base != step_key("router", config={"seed": 0}, data="abd", code="c1")
    assert base != step_key("router", config={"seed": 0}, data="abc", code="c2")
    assert code_fingerprint(STEP_SOURCES["router"]) != code_fingerprint(STEP_SOURCES["estimator"])


def test_a_changed_gate_invalidates_the_model_steps_that_register_and_gate(tmp_path: Path):
    """The estimator and predictor steps train, register and gate in one cached task: the gate's code
    (``flows/models``) is part of their key, so a changed gate decides again."""
    from flows.nightly.keys import STEP_SOURCES
    from flows.registry import code_fingerprint

    for folder in {f for sources in STEP_SOURCES.values() for f in sources}:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "code.py").write_text(f"# {folder}\n")
    before = {step: code_fingerprint(src, root=tmp_path) for step, src in STEP_SOURCES.items()}
    (tmp_path / "flows" / "models" / "code.py").write_text("# a stricter gate\n")
    after = {step: code_fingerprint(src, root=tmp_path) for step, src in STEP_SOURCES.items()}
    assert [s for s in STEP_SOURCES if before[s] != after[s]] == ["estimator", "predictor"]


@pytest.mark.prefect
def test_a_dask_cluster_gives_the_same_nightly_results(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Router candidates (two seeds) and evaluation replays on a local Dask cluster started here:
    the same code path as threads, and the same numbers."""
    from flows.nightly.flow import run_nightly

    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    results = {}
    for runner in ("threads", "dask"):
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: without this the second run would use the
        # first one's store (and, since issue 15, find the champion the first run promoted)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / runner))
        results[runner] = run_nightly(_config(router_seeds=(0, 1), task_runner=runner, eval_seeds=(0, 1)))
    threads, dask = results["threads"], results["dask"]
    assert dask["steps"]["train-router"] == "ran"
    assert dask["evaluation"] == threads["evaluation"]
    assert dask["gate"]["reason"] == threads["gate"]["reason"]
    candidates = Path(dask["report_dir"]).parents[1] / "evaluations"
    assert len(list(candidates.rglob("candidates.json"))) == 1
