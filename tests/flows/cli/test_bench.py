"""``loadwise bench ingest | replay | env | fork`` (flows/cli/bench.py): ``--json`` prints one JSON
object with the figures. No timing assertions."""

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
    assert set(EnvBenchResult.model_fields) <= set(data)
    assert data["num_requests"] == 60
    assert data["hold_kv_headroom"] == 0.1
    assert data["identical_results"] is True
    # held requests: router calls with Hold next to ticking, same results (training/routing/bench_engine.py)
    assert data["replay_hold_identical_to_ticking"] is True
    assert 0 < data["replay_hold_router_calls"] <= data["replay_ticking_router_calls"]


def test_bench_fork_of_a_trace_file(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{i},{i * 0.02:.3f},{100 + 7 * i},{5 + i % 40},conv" for i in range(80)]
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens,task\n" + "\n".join(rows) + "\n")
    args = ["bench", "fork", "--trace", str(trace), "--profile", "v100-llama2-7b-paper", "--forks", "3"]
    data = one_json(runner.invoke(app, [*args, "--json"]))
    assert data["requests"] == 80
    assert [p["instances"] for p in data["points"]] == [4, 4, 4, 8, 8, 8]
    assert all(p["identical"] for p in data["points"])
    assert all(p["fork_us_per_instance"] > 0 for p in data["points"])
    out = runner.invoke(app, ["bench", "fork", "--trace", str(trace), "--profile", "nope"])
    assert out.exit_code == 2


def test_bench_replay_of_a_trace_file(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{i},{i * 0.05:.3f},{100 + 7 * i},{5 + i % 9},conv" for i in range(60)]
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens,task\n" + "\n".join(rows) + "\n")
    args = ["bench", "replay", "--trace", str(trace), "--instances", "2", "--router", "least_request"]
    data = one_json(runner.invoke(app, [*args, "--json"]))
    assert data["num_requests"] == 60
    assert data["num_instances"] == 2
    assert data["router"] == "least_request"
    assert data["identical_results"] is True
    assert data["sim_requests_per_s"] > 0
    assert data["step_sim_requests_per_s"] > 0


def test_bench_replay_refuses_unknown_names(tmp_path: Path) -> None:
    for option, value in (("--router", "nope"), ("--profile", "nope")):
        out = runner.invoke(app, ["bench", "replay", option, value, "--json"])
        assert out.exit_code == 2, out.output
        assert "unknown" in out.output
    out = runner.invoke(app, ["bench", "replay", "--trace", str(tmp_path / "missing.csv")])
    assert out.exit_code == 2, out.output


def test_bench_replay_of_an_unreadable_trace_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("hello,world\n1,2\n")
    out = runner.invoke(app, ["bench", "replay", "--trace", str(bad)])
    assert out.exit_code == 1, out.output
    assert out.output.startswith("error: ")
    assert out.output.count("\n") == 1
    assert "Traceback" not in out.output
