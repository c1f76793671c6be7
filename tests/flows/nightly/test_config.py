"""A bad nightly config fails whole, at once, in one line, before any work (issue 13).

Each value below used to be checked only mid-run: a traceback after 11-85 s, in 3 of 5 cases after
the load was published and a ``failed`` row written. Now ``NightlyConfig`` validates every value the
run uses, the way the run uses it (``flows.nightly.config``), and ``loadwise run --config`` prints one
line and exits 2 before Prefect starts, ingest runs or ``$LOADWISE_HOME`` is touched (the command's
tests: tests/flows/cli/test_nightly.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.config_files import ConfigError, error_line, read_config_file
from flows.nightly.config import NightlyConfig
from tests.flows.nightly.configs import BAD_CONFIGS, write_config

runner = CliRunner()


@pytest.mark.parametrize(("name", "contents", "needle"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_value_fails_when_the_config_is_read(tmp_path: Path, name: str, contents: str, needle: str):
    path = write_config(tmp_path, name, contents)
    with pytest.raises((ValidationError, ConfigError)) as info:
        NightlyConfig.from_file(path)
    line = error_line(info.value, path)
    assert "\n" not in line
    assert line.startswith(str(path))
    assert needle in line


def test_the_flow_refuses_such_a_warehouse_before_any_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``nightly_retrain`` itself (a served deployment never goes through the CLI) checks first."""
    from flows.nightly.flow import nightly_retrain
    from warehouse.errors import WarehouseError

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    text = tmp_path / "notes.txt"
    text.write_text("not a warehouse\n")
    with pytest.raises(WarehouseError, match="not a DuckDB database"):
        nightly_retrain.fn(NightlyConfig(warehouse=str(text)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_valid_forms_are_accepted():
    from flows.task_runners import check_task_runner

    for spec in ("threads", "dask", "tcp://scheduler:8786", "tls://10.0.0.1:8786", "tcp://scheduler"):
        assert check_task_runner(spec) == spec
    cfg = NightlyConfig(
        where="format = 'azure' AND prompt_tokens BETWEEN 1 AND 4096 OR source IN ('a', 'b')",
        profile="a100-llama3-8b",
        router_seeds=(0, 1),
        eval_seeds=(3, 1, 2),
        router={"total_timesteps": 10, "seed": 5, "reward": {"mixing_alpha": 0.3}},
        predictor={"buckets": "log2"},
        estimator={"num_replays": 3},
        task_runner="tcp://10.1.2.3:8786",
    )
    assert cfg.eval_seeds == (3, 1, 2)


# -- fuzzing: any value, any key, any bytes: a config either validates or fails with one line ------
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=4),
    st.dictionaries(
        st.sampled_from(["seed", "total_timesteps", "buckets", "x", "profile"]), st.integers(-2, 3)
    ),
)
_keys = st.sampled_from(
    ["seed", "where", "profile", "rate_rps", "num_instances", "eval_seeds", "router_seeds", "task_runner",
     "workers", "router", "predictor", "estimator", "gate", "drift", "retrain", "eval_requests", "bogus"]
)  # fmt: skip


def _one_line_or_valid(data: dict) -> None:
    try:
        NightlyConfig.model_validate(data)
    except ValidationError as exc:
        line = error_line(exc)
        assert line
        assert "\n" not in line


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=4))
def test_fuzzed_configs_validate_or_fail_in_one_line(data: dict):
    _one_line_or_valid(data)


@pytest.mark.slow
@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_fuzzed_configs_validate_or_fail_in_one_line_long(data: dict):
    _one_line_or_valid(data)


def _read_or_refuse(tmp: Path, suffix: str, blob: bytes) -> None:
    path = tmp / f"c{suffix}"
    path.write_bytes(blob)
    message = ""
    try:
        read_config_file(path)
    except ConfigError as exc:
        message = str(exc)
    if message:
        assert "\n" not in message
        assert message.startswith(str(path))


_blobs = st.one_of(
    st.binary(max_size=64),
    st.text(alphabet='ab=:[]{}",\n\t -#01', max_size=64).map(str.encode),
)


@settings(max_examples=90, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([".toml", ".yaml", ".json"]), _blobs)
def test_fuzzed_files_parse_or_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory, suffix: str, blob):
    _read_or_refuse(tmp_path_factory.mktemp("cfg"), suffix, blob)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_deeply_nested_document_is_a_one_line_error(tmp_path: Path, suffix: str):
    path = write_config(tmp_path, f"deep{suffix}", "[" * 100_000)  # a RecursionError before
    with pytest.raises(ConfigError, match="malformed") as info:
        read_config_file(path)
    assert "\n" not in str(info.value)
