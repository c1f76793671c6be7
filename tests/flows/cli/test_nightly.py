"""``loadwise run`` and ``serve`` (flows/cli/nightly.py): a bad config, flag, schedule or warehouse fails in
one line before Prefect starts or anything is written; ``run`` end to end on a synthetic warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.nightly.configs import BAD_CONFIGS, write_config

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "contents", "needle"),
    [BAD_CONFIGS[i] for i in (0, 3, 4, 10, 12, 15, 22)],
    ids=[BAD_CONFIGS[i][0] for i in (0, 3, 4, 10, 12, 15, 22)],
)
def test_loadwise_run_refuses_a_bad_config_in_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, contents: str, needle: str
):
    """The issue's cases (unknown router key, profile, where, seed = -1, duplicate seeds, task
    runner, malformed YAML): exit 2, one line, and nothing written: no data
    home (no Prefect store, no warehouse, so no ``ops.nightly_runs`` row)."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOADWISE_HOME", str(home))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    path = write_config(tmp_path, name, contents)
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: invalid config: ")
    assert needle in lines[0]
    assert not home.exists()


def test_a_flag_is_checked_like_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    for flag, needle in ((["--task-runner", "tcp:/x"], "task_runner"), (["--eval-seeds", "1,1"], "distinct")):
        result = runner.invoke(app, ["run", *flag])
        assert result.exit_code == 2, result.output
        assert needle in result.output
    assert not (tmp_path / "home").exists()


def test_serve_refuses_a_bad_config_before_starting_a_server(tmp_path: Path):
    path = write_config(tmp_path, "c.toml", 'profile = "tpu-v9"\n')
    result = runner.invoke(app, ["serve", "--config", str(path), "--port", "1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: invalid config: {path}: profile: unknown profile 'tpu-v9'; one of "
        + result.output.split("one of ", 1)[1].strip()
    ]


def test_run_refuses_a_warehouse_that_is_not_one_before_prefect_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("LOADWISE_HOME", str(home))
    text = tmp_path / "notes.txt"
    text.write_text("not a warehouse\n")
    result = runner.invoke(app, ["run", "--warehouse", str(text)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"error: {text} is not a DuckDB database"
        + (result.output.split("is not a DuckDB database", 1)[1].rstrip())
    ]
    assert text.read_text() == "not a warehouse\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no lock, copy, home


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], 'error: invalid schedule: Invalid cron string: "61 * * * *"'),
        (["--timezone", "Mars/Base"], 'error: invalid schedule: timezone: Invalid timezone: "Mars/Base"'),
    ],
)
def test_serve_refuses_a_bad_schedule_before_starting_a_server(tmp_path: Path, args, message):
    result = runner.invoke(app, ["serve", *args, "--port", "1"])
    assert result.exit_code == 2
    _clean = result.exception is None or isinstance(result.exception, SystemExit)
    assert _clean, result.exception
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(message)


@pytest.mark.prefect
def test_run_without_shared_data_uses_synthetic(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loadwise run --config FILE``: the nightly flow on a synthetic warehouse, tiny RL router."""
    from flows.cli import app

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "nightly.toml"
    config.write_text(
        'synthetic_rows = 1200\nprofile = "v100-llama2-7b-paper"\nrate_rps = 2.5\nnum_instances = 2\n'
        "eval_requests = 40\n[router]\ntotal_timesteps = 200\nepisode_requests = 30\nnet_arch = [8]\n"
        "batch_size = 32\nlearning_starts = 50\neval_every_episodes = 3\neval_episodes = 1\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--config", str(config), "--eval-seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    assert "Workload classes" in result.output
    assert "nightly-retrain steps" in result.output
    assert "promotion gate:" in result.output
    assert (tmp_path / "home" / "warehouse.duckdb").exists()
    # The evaluation replayed every baseline and the challenger, stored in the warehouse.
    from training.routing.registry import router_names
    from warehouse.store import connect_readonly

    con = connect_readonly(tmp_path / "home" / "warehouse.duckdb")
    stored = {r[0] for r in con.execute("SELECT DISTINCT router FROM marts.eval_results").fetchall()}
    con.close()
    assert stored == {*router_names(), "challenger"}
    # The estimator (the paper's V100 preset) is registered and champion; no predictor without prompts.
    assert "impact-estimator" in result.output
    assert "first champion" in result.output
    assert (tmp_path / "home" / "mlflow.db").exists()
    again = runner.invoke(app, ["run", "--config", str(config), "--eval-seeds", "0,1", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output[again.output.index("{") :])
    assert summary["ingest"]["ingested"] == 0
    assert summary["steps"]["train-router"] in ("cached", "skipped: llm-router v1, trained from these "
                                                "inputs, is already the champion")  # fmt: skip


def test_run_rejects_an_invalid_config(tmp_path: Path) -> None:
    from flows.cli import app

    config = tmp_path / "nightly.yaml"
    config.write_text("retrain: sometimes\nrouter: {workload: main}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "invalid config" in result.output
    assert "retrain" in result.output
    config.write_text("router: {workload: main}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "may not set ['workload']" in result.output
