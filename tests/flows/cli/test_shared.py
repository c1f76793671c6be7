"""The option checks every command shares (flows/cli/shared.py: seeds, finite numbers, ranges): a bad
option is a usage error (exit 2) before any work, through each command that takes it (issue 13).

Before: ``--seed -1`` / ``--seeds -1`` ended in a NumPy traceback, ``--rate 0`` silently meant each
workload's default rate, ``--seeds 0,0`` replayed the same trace twice (a zero-width interval) and
``--routers a,a`` silently dropped the repeat."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.cli.results import clean_exit

runner = CliRunner()


TABLE2 = ["--workload", "table2", "--requests", "20"]


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
        (["compare", "--routers", "round_robin", *TABLE2, "--order", "sideways"], "'sideways' is not one of"),
        (["replay", "--router", "round_robin", "--workload", "prefix", "--order", "random"], "table2 only"),
        (["replay", "--router", "round_robin", *TABLE2, "--format", "azure"], "--trace only"),
        (["run", "--eval-seeds", "0,-1"], "--eval-seeds"),
        (["train-router", "--eval-seeds", "1,1"], "--eval-seeds: seeds must be distinct"),
        (["train-router", "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["train-router", "--profile", "tpu-v9"], "'tpu-v9' is not one of"),
        (["train-router", "--rate", "nan"], "rate"),
        (["bench", "env", "--hold-headroom", "nan"], "--hold-headroom"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message):
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    clean_exit(result)
    assert message in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "home").exists()


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
    clean_exit(result)
    assert result.exit_code in (0, 2), result.output
