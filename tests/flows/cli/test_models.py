"""``loadwise train-predictor``, ``fit-estimator``, ``train-router``, ``models``, ``promote``, ``rollback``
(flows/cli/models.py): the registry is probed before any training, config files and flags merge, the
read-only commands create nothing, every refusal is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.registry import ModelRegistry

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "job"),
    [
        (["fit-estimator"], "flows.models.estimator.fit_estimator"),
        (["fit-estimator", "--flow"], "flows.models.estimator.fit_estimator"),
        (["train-predictor"], "flows.models.predictor.train_predictor"),
        (["train-router", "--timesteps", "10"], "flows.models.router.train_router_policy"),
    ],
)
@pytest.mark.parametrize("uri", ["sqlite:////proc/loadwise-x.db", "bogus://nowhere"])
def test_a_bad_store_fails_in_seconds_before_any_training(
    home: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], job: str, uri: str
):
    """Before the fix fit-estimator fitted for 148 s, then crashed at registration with a traceback."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the registry")

    monkeypatch.setattr(job, never)  # a tripwire: the job must not start
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = CliRunner().invoke(app, command)
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    (line,) = out.output.strip().splitlines()
    assert line.startswith("error: ")
    assert "MLFLOW_TRACKING_URI" in line


def test_read_only_model_commands_on_an_empty_home_create_nothing(home: Path):

    runner = CliRunner()
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    assert f"no registry at {home / 'mlflow.db'} yet" in listed.output
    assert json.loads(runner.invoke(app, ["models", "--json"]).stdout)["models"] == []
    for command in (["promote", "llm-router", "1"], ["rollback", "llm-router"]):
        out = runner.invoke(app, command)
        assert out.exit_code == 1, out.output
        assert out.output.strip() == (
            f"error: no registry at {home / 'mlflow.db'} yet (nothing registered: train a model first, e.g. "
            "loadwise fit-estimator; or set MLFLOW_TRACKING_URI)"
        )
    assert not home.exists()  # before the fix: $LOADWISE_HOME/mlflow.db was created


def test_promote_on_an_unsupported_store_says_so(home: Path, monkeypatch: pytest.MonkeyPatch):

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    out = CliRunner().invoke(app, ["promote", "llm-router", "1"])
    assert out.exit_code == 1
    assert "unsupported MLflow tracking URI 'bogus://nowhere'" in out.output
    assert "no version" not in out.output  # before the fix: "no version '1' of model 'llm-router'"


def test_train_router_reads_a_config_file_and_flags_override_it(
    home: Path, shared_data: Path, tmp_path: Path
):
    """The issue's other settings (instances, rate, chunked prefill) come from a file or flags, and the
    registered version records the setting it was trained and judged on."""

    config = tmp_path / "router.toml"
    config.write_text(
        'variant = "aware"\ntotal_timesteps = 5000\nnum_instances = 2\nrate_rps = 8.0\n'
        "chunked_prefill_tokens = 256\neval_every_episodes = 1\n"
    )
    args = ["--config", str(config), "--timesteps", "150", "--requests", "60", "--eval-seeds", "0",
            "--hold-headroom", "0.1"]  # fmt: skip
    out = CliRunner().invoke(app, ["train-router", *args, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["model"]["name"] == "llm-router"
    recorded = json.loads(ModelRegistry().get("llm-router", "challenger").tags["loadwise.config"])
    assert recorded["total_timesteps"] == 150  # the flag wins over the file
    assert (recorded["variant"], recorded["num_instances"], recorded["rate_rps"]) == ("aware", 2, 8.0)
    assert recorded["chunked_prefill_tokens"] == 256
    assert recorded["hold_kv_headroom"] == 0.1


def test_train_router_refuses_an_unknown_config_key_before_training(home: Path, tmp_path: Path):

    config = tmp_path / "router.yaml"
    config.write_text("total_timesteps: 100\nlearning_rat: 0.001\n")
    out = CliRunner().invoke(app, ["train-router", "--config", str(config)])
    assert out.exit_code == 2  # a usage error, like `loadwise run --config` with a bad file
    assert "invalid router config" in out.output
    assert "learning_rat" in out.output
    assert not (home / "rl").exists()


def test_train_predictor_on_a_missing_warehouse_is_a_one_line_error(home: Path, tmp_path: Path):

    out = CliRunner().invoke(app, ["train-predictor", "--warehouse", str(tmp_path / "none.duckdb")])
    assert out.exit_code == 1
    assert "no warehouse at" in out.output
    assert "Traceback" not in out.output
