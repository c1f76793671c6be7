"""``loadwise run`` and ``serve`` (flows/cli/nightly.py): a bad config, flag, schedule or warehouse fails in
one line before Prefect starts or anything is written; ``run`` end to end on a synthetic warehouse."""

from __future__ import annotations

import json
import re
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
    # each step's start and end as it happened (stdout is not a terminal here: plain lines)
    assert "ingest-traces: started" in result.output
    assert re.search(r"\d\d:\d\d:\d\d train-router: ran in \d+\.\d s", result.output)
    assert re.search(r"evaluate-router: \d+/\d+ replays", result.output)
    assert (tmp_path / "home" / "warehouse.duckdb").exists()
    # The evaluation replayed every baseline and the challenger, stored in the warehouse.
    from training.routing.registry import router_names
    from warehouse.store import connect_readonly

    con = connect_readonly(tmp_path / "home" / "warehouse.duckdb")
    stored = {r[0] for r in con.execute("SELECT DISTINCT router FROM marts.eval_results").fetchall()}
    joined = con.execute(  # the analyst's join (issue 19): the run and the evaluation it judged by
        "SELECT n.status, count(DISTINCT e.router), bool_and(e.evaluated_at <= n.finished_at) "
        "FROM ops.nightly_runs AS n JOIN marts.eval_results AS e USING (evaluation_id) GROUP BY ALL"
    ).fetchall()
    con.close()
    assert {*router_names(), "challenger"} <= stored  # and the night's rule candidates (rule-*)
    assert all(n.startswith("rule-") for n in stored - {*router_names(), "challenger"}), stored
    assert joined == [("ok", len(stored), True)]
    # The estimator (the paper's V100 preset) is registered and champion; no predictor without prompts.
    assert "impact-estimator" in result.output
    assert "first champion" in result.output
    assert (tmp_path / "home" / "mlflow.db").exists()
    again = runner.invoke(app, ["run", "--config", str(config), "--eval-seeds", "0,1", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output[again.output.index("{") :])
    assert summary["ingest"]["ingested"] == 0
    # nothing new: the champion was chosen from these very candidates (an RL policy or a tuned rule)
    step = summary["steps"]["train-router"]
    assert step == "cached" or re.fullmatch(r"skipped: llm-router v1 \(.+\), chosen from these candidates, "
                                            r"is already the champion", step), step  # fmt: skip


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


_CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "CIRCLECI", "BUILDKITE",
                 "TF_BUILD", "CODEBUILD_BUILD_ID", "BITBUCKET_COMMIT", "TEAMCITY_VERSION", "DRONE",
                 "SEMAPHORE", "APPVEYOR", "BUDDY", "CI_NAME")  # fmt: skip


def _in_a_terminal(home: Path, **env: str) -> str:
    """What ``import flows.cli`` then Prefect (as ``loadwise run`` does) prints in a fresh terminal
    session (a pty as stdout and stderr) with a new ``PREFECT_HOME``."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from warehouse.settings import PROJECT_ROOT

    main, secondary = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if k not in (*_CI_VARIABLES, "DO_NOT_TRACK")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import flows.cli, prefect"],
        cwd=PROJECT_ROOT,
        env={**clean, "PREFECT_HOME": str(home), **env},
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    while proc.poll() is None or select.select([main], [], [], 0.2)[0]:
        if select.select([main], [], [], 0.2)[0]:
            try:
                chunks.append(os.read(main, 65536))
            except OSError:
                break
    os.close(main)
    proc.wait(timeout=60)
    return b"".join(chunks).decode(errors="replace")


def test_run_directly_in_a_terminal_prints_no_prefect_telemetry_notice(tmp_path: Path):
    """Run directly (not through make), ``loadwise run`` printed Prefect's first-run notice
    ("Prefect collects anonymous usage data ..."); the run environment sets ``DO_NOT_TRACK=1``."""
    notice = "anonymous usage data"
    assert notice in _in_a_terminal(tmp_path / "control", DO_NOT_TRACK="0")  # what a user saw
    assert notice not in _in_a_terminal(tmp_path / "home")
