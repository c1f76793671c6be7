"""Bad options of ``replay`` / ``compare`` are usage errors (exit 2) before any replay; a ``--store``
that is not a warehouse is one line (exit 1) and changes nothing (issue 13).

Before: ``--seed -1`` / ``--seeds -1`` ended in a NumPy traceback, ``--rate 0`` silently meant each
workload's default rate, ``--seeds 0,0`` replayed the same trace twice (a zero-width interval) and
``--routers a,a`` silently dropped the repeat, ``--store /etc/passwd`` crashed with a traceback after
all the replays.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eval.harness import check_routers, check_seeds, run_evaluation
from flows.cli import app
from training.workloads.catalog import WorkloadOptions

runner = CliRunner()
TABLE2 = ["--workload", "table2", "--requests", "20"]


def _clean_exit(result) -> None:
    """No traceback: the command ended through ``typer.Exit`` / a usage error, or returned."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--router", "round_robin", *TABLE2, "--seed", "-1"], "--seed"),
        (["compare", "--routers", "round_robin", *TABLE2, "--seeds", "-1"], "seeds must be >= 0"),
        (["compare", "--routers", "round_robin", *TABLE2, "--seeds", "0,0"], "seeds must be distinct"),
        (["compare", "--routers", "round_robin,random,round_robin", *TABLE2], "routers must be distinct"),
        (["replay", "--router", "round_robin", *TABLE2, "--rate", "0"], "--rate must be a finite number > 0"),
        (["replay", "--router", "round_robin", *TABLE2, "--rate", "-3"], "--rate must be"),
        (["replay", "--router", "round_robin", *TABLE2, "--rate", "nan"], "--rate must be"),
        (["replay", "--router", "round_robin", *TABLE2, "--rate", "inf"], "--rate must be"),
        (["compare", "--routers", "round_robin", *TABLE2, "--requests", "0"], "--requests"),
        (["compare", "--routers", "round_robin", *TABLE2, "--instances", "0"], "--instances"),
        (["compare", "--routers", "round_robin", *TABLE2, "--workers", "0"], "--workers"),
        (["compare", "--routers", "round_robin", *TABLE2, "--chunked-prefill", "0"], "--chunked-prefill"),
        (["compare", "--routers", "round_robin", *TABLE2, "--hold-headroom", "nan"], "--hold-headroom"),
        (["compare", "--routers", "round_robin", *TABLE2, "--order", "sideways"], "order must be one of"),
        (["replay", "--router", "round_robin", "--workload", "prefix", "--order", "random"], "table2 only"),
        (["replay", "--router", "round_robin", *TABLE2, "--format", "azure"], "--trace only"),
        (["run", "--eval-seeds", "0,-1"], "--eval-seeds"),
        (["train-router", "--eval-seeds", "1,1"], "--eval-seeds: seeds must be distinct"),
        (["train-router", "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["train-router", "--profile", "tpu-v9"], "unknown profile 'tpu-v9'"),
        (["train-router", "--rate", "nan"], "rate"),
        (["bench", "env", "--hold-headroom", "nan"], "--hold-headroom"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message):
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    _clean_exit(result)
    assert message in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("command", ["compare", "replay"])
def test_a_store_that_is_not_a_warehouse_is_one_line_and_changes_nothing(tmp_path: Path, command: str):
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0\n")
    which = ["--routers", "round_robin"] if command == "compare" else ["--router", "round_robin"]
    result = runner.invoke(app, [command, *which, *TABLE2, "--seeds" if command == "compare" else "--seed",
                                 "0", "--store", str(text), "--json"])  # fmt: skip
    assert result.exit_code == 1, result.output
    _clean_exit(result)
    assert result.stdout == ""  # refused before the replays: no report printed
    assert result.stderr.strip().splitlines() == [
        f"error: {text} is not a DuckDB database (no DuckDB header): pass a warehouse file, or a path "
        "that does not exist yet to create one"
    ]
    assert text.read_text() == "root:x:0:0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .lock, no .loading copy


def test_ingest_into_a_text_file_is_one_line(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,12,6\n")
    for extra in ([], ["--flow"]):  # --flow: refused before Prefect starts, not as a failed flow run
        result = runner.invoke(app, ["ingest", str(trace), "--warehouse", str(text), *extra])
        assert result.exit_code == 1, result.output
        _clean_exit(result)
        assert len(result.output.strip().splitlines()) == 1
        assert "not a DuckDB database" in result.output
    assert text.read_text() == "hello\n"


def test_rate_zero_no_longer_means_the_default(tiny_cluster, paper_latency):
    """The library refuses what the CLI refuses: a workload option cannot stand for 'default'."""
    for bad in ({"rate": 0.0}, {"rate": float("nan")}, {"rate": float("inf")}, {"num_requests": 0},
                {"num_instances": 0}, {"order": "sideways"}):  # fmt: skip
        with pytest.raises(ValueError, match=r"must be|order must be one of"):
            WorkloadOptions(**bad)  # type: ignore[arg-type]


def test_the_harness_refuses_bad_seeds_and_routers_before_any_replay(
    tiny_workload, tiny_cluster, paper_latency
):
    for seeds, match in (((0, 0), "distinct"), ((-1,), ">= 0"), ((), "no seeds"), ((0.5,), "whole")):
        with pytest.raises(ValueError, match=match):
            run_evaluation(["round_robin"], tiny_workload, tiny_cluster, paper_latency, seeds=seeds)
    with pytest.raises(ValueError, match="routers must be distinct; repeated: random"):
        run_evaluation(["random", "round_robin", "random"], tiny_workload, tiny_cluster, paper_latency)
    assert check_seeds([3, 1]) == (3, 1)
    assert check_routers(["a", "b"]) == ["a", "b"]


# -- fuzzing the numeric options: a replay, or a usage error; never a traceback --------------------
_numbers = st.one_of(
    st.integers(min_value=-5, max_value=40).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(["", "1e309", "-0", "0x10", "1,2", "abc"]),
)


@settings(
    max_examples=25, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(
    option=st.sampled_from(["--rate", "--requests", "--instances", "--seeds", "--hold-headroom", "--workers",
                            "--chunked-prefill"]),
    value=_numbers,
)  # fmt: skip
def test_fuzzed_numeric_options_replay_or_fail_cleanly(option: str, value: str):
    args = [
        "compare",
        "--routers",
        "round_robin,least_request",
        "--workload",
        "table2",
        "--requests",
        "12",
        "--seeds",
        "0",
        "--json",
        option,
        value,
    ]  # fmt: skip  (a later option wins in click)
    result = runner.invoke(app, args)
    _clean_exit(result)
    assert result.exit_code in (0, 2), result.output
