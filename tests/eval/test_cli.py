"""The replay/compare CLI contract: ``--json`` prints exactly one JSON object on stdout."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # raises if stdout holds anything but one JSON document


def test_compare_json_contract():
    result = runner.invoke(
        app,
        ["compare", "--routers", "round_robin,least_request,decode_balancer", "--workload", "table2",
         "--requests", "40", "--seeds", "0,1", "--json"],
    )  # fmt: skip
    data = _json(result)
    assert set(data["routers"]) == {"round_robin", "least_request", "decode_balancer"}
    for name, figures in data["routers"].items():
        for key in ("e2e_mean", "e2e_p99", "ttft_mean", "tbt_mean", "preemptions", "vs_round_robin_pct"):
            assert key in figures
        assert figures["e2e_mean"] > 0
        assert (figures["vs_round_robin_pct"] is None) == (name == "round_robin")
    assert data["routers"]["decode_balancer"]["oracle"] is True
    assert data["seeds"] == [0, 1]


def test_compare_all_and_queue_policy(tmp_path):
    result = runner.invoke(
        app,
        ["compare", "--routers", "all", "--workload", "table2", "--requests", "30", "--seeds", "0",
         "--queue-policy", "lwl", "--json", "--out", str(tmp_path)],
    )  # fmt: skip
    data = _json(result)
    from training.routing import router_names

    assert list(data["routers"]) == router_names()
    assert (tmp_path / "report.md").is_file()


def test_replay_json_and_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "arrival_s,prompt_tokens,output_tokens\n" + "\n".join(f"{i},{50 + i},{5 + i}" for i in range(40))
    )
    data = _json(
        runner.invoke(
            app, ["replay", "--router", "least_kv", "--trace", str(path), "--instances", "2", "--json"]
        )
    )
    assert list(data["routers"]) == ["least_kv"]


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--routers", "nope", "--workload", "table2", "--json"],
        ["compare", "--routers", "round_robin", "--queue-policy", "lifo", "--workload", "table2"],
        ["compare", "--routers", "round_robin", "--seeds", "a,b", "--workload", "table2"],
        ["compare", "--routers", "round_robin", "--workload", "nope"],
        ["compare", "--routers", "round_robin", "--workload", "table2", "--profile", "tpu-v9"],
        ["replay", "--router", "round_robin", "--trace", "/no/such/file.csv"],
    ],
)
def test_bad_arguments_fail(args):
    result = runner.invoke(app, args)
    assert result.exit_code != 0


def test_human_output_is_a_table():
    result = runner.invoke(app, ["compare", "--routers", "round_robin,random", "--workload", "table2",
                                 "--requests", "20", "--seeds", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "round_robin" in result.stdout
    assert "E2E" in result.stdout


def test_bench_replay_json():
    data = _json(runner.invoke(app, ["bench", "replay", "--json"]))
    assert data["sim_requests_per_s"] > 0


def test_compare_chunked_prefill_changes_the_replay():
    base = ["compare", "--routers", "round_robin", "--workload", "table2", "--requests", "40", "--seeds", "0",
            "--json"]  # fmt: skip
    plain = _json(runner.invoke(app, base))
    chunked = _json(runner.invoke(app, [*base, "--chunked-prefill", "64"]))
    assert plain["chunked_prefill_tokens"] is None
    assert chunked["chunked_prefill_tokens"] == 64
    # 64-token chunks split every prefill of table2's long prompts over several iterations
    assert chunked["routers"]["round_robin"]["ttft_mean"] > plain["routers"]["round_robin"]["ttft_mean"]


def test_hold_headroom_reaches_the_hold_routers():
    base = ["compare", "--routers", "least_tokens+hold", "--workload", "table2", "--requests", "40",
            "--seeds", "0", "--json"]  # fmt: skip
    default = _json(runner.invoke(app, base))["routers"]["least_tokens+hold"]
    # 99 % headroom: only an empty instance can start a request, so requests wait at the router
    strict = _json(runner.invoke(app, [*base, "--hold-headroom", "0.99"]))["routers"]["least_tokens+hold"]
    assert strict["router_wait_mean"] > default["router_wait_mean"]
    bad = runner.invoke(app, [*base, "--hold-headroom", "1.5"])
    assert bad.exit_code == 2
