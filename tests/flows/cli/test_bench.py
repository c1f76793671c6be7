"""``loadwise bench ingest | replay | env`` (flows/cli/bench.py): ``--json`` prints one JSON object with the
figures. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.flows.cli.results import one_json
from training.rl.bench import EnvBenchResult

runner = CliRunner()


def test_bench_ingest_json(wh: Path) -> None:
    result = runner.invoke(app, ["bench", "ingest", "--rows", "3000", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["rows"] == 3000
    assert figures["ingest"]["rows_per_s"] > 0
    assert figures["ratio_vs_disk"] > 0


def test_bench_replay_json():
    data = one_json(runner.invoke(app, ["bench", "replay", "--json"]))
    assert data["sim_requests_per_s"] > 0


def test_bench_env_json():
    out = CliRunner().invoke(app, ["bench", "env", "--requests", "60", "--hold-headroom", "0.1", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)  # raises unless stdout is exactly one JSON document
    assert set(data) == set(EnvBenchResult.model_fields)
    assert data["num_requests"] == 60
    assert data["hold_kv_headroom"] == 0.1
    assert data["identical_results"] is True
