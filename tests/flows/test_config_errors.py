"""A bad nightly config fails whole, at once, in one line, before any work (issue 13).

Each value below used to be checked only mid-run: a traceback after 11-85 s, in 3 of 5 cases after
the load was published and a ``failed`` row written. Now ``NightlyConfig`` validates every value the
run uses, the way the run uses it (``flows.nightly.config``), and ``loadwise run --config`` prints one
line and exits 2 before Prefect starts, ingest runs or ``$LOADWISE_HOME`` is touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.config_files import ConfigError, error_line, read_config_file
from flows.nightly.config import NightlyConfig

runner = CliRunner()

# (file name, contents, what the one-line error must name)
BAD_CONFIGS = [
    ("router_key.toml", "[router]\ntotal_timestep = 5\n", "router.total_timestep: Extra inputs"),
    ("router_value.toml", "[router]\nbatch_size = 0\n", "router.batch_size"),
    ("router_seed.toml", "[router]\nseed = -2\n", "router.seed"),
    ("profile.toml", 'profile = "tpu-v9"\n', "unknown profile 'tpu-v9'"),
    ("where_column.toml", "where = \"fromat = 'azure'\"\n", 'Referenced column "fromat" not found'),
    ("where_statement.toml", 'where = "TRUE; DROP TABLE raw.files"\n', "not one SQL expression"),
    ("where_union.toml", 'where = "TRUE) UNION SELECT * FROM raw.files WHERE (TRUE"\n', "where:"),
    ("where_comment.toml", "where = \"format = 'azure' -- and more\"\n", "where:"),
    ("where_file.toml", "where = \"(SELECT count(*) FROM read_text('/etc/passwd')) > 0\"\n", "disabled"),
    ("where_type.toml", 'where = "format"\n', "not a condition (BOOLEAN)"),
    ("seed.toml", "seed = -1\n", "seed: Input should be greater than or equal to 0"),
    ("eval_seed.toml", "eval_seeds = [0, -1]\n", "eval_seeds.1"),
    ("eval_dup.toml", "eval_seeds = [0, 0]\n", "eval_seeds: seeds must be distinct; repeated: [0]"),
    ("router_dup.toml", "router_seeds = [3, 3]\n", "router_seeds: seeds must be distinct"),
    ("min_seeds.toml", "eval_seeds = [7]\n", "fewer than gate.min_seeds"),
    ("runner.toml", 'task_runner = "dsak"\n', "task_runner: task runner must be"),
    ("runner_proto.toml", 'task_runner = "http://scheduler:8786"\n', "unknown protocol 'http'"),
    ("runner_port.toml", 'task_runner = "tcp://scheduler:port"\n', "the port must be a number"),
    ("rate.toml", "rate_rps = inf\n", "rate_rps"),
    ("data_dir.toml", 'data_dir = "/no/such/dir"\n', "data_dir: '/no/such/dir' is not a folder"),
    ("predictor.toml", "[predictor]\nbucket = 'time'\n", "predictor.bucket"),
    ("estimator.toml", "[estimator]\nprofile = 'tpu'\n", "estimator: unknown profile"),
    ("unknown.yaml", "retrian: changed\n", "retrian"),
    ("broken.yaml", "seed: 1\nwhere: [\n", "broken.yaml:3:1: malformed YAML"),
    ("tabs.yaml", "seed: 1\n\tforce: true\n", "tabs.yaml:2:1: malformed YAML"),
    ("dup.yaml", "seed: 1\nseed: 2\n", "dup.yaml:2:1: key 'seed' is given twice"),
    ("broken.json", '{"seed": 1,,}', "broken.json:1:12: malformed JSON"),
    ("dup.json", '{"seed": 1, "seed": 2}', "key 'seed' is given twice"),
    ("broken.toml", "seed = \n", "broken.toml: malformed TOML: Invalid value (at line 1, column 8)"),
    ("list.yaml", "- seed\n", "the top level must be a table"),
    ("latin1.toml", b"seed = 1 # caf\xe9\n", "not UTF-8"),
]


def _write(folder: Path, name: str, contents: str | bytes) -> Path:
    path = folder / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents)
    return path


@pytest.mark.parametrize(("name", "contents", "needle"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_value_fails_when_the_config_is_read(tmp_path: Path, name: str, contents: str, needle: str):
    path = _write(tmp_path, name, contents)
    with pytest.raises((ValidationError, ConfigError)) as info:
        NightlyConfig.from_file(path)
    line = error_line(info.value, path)
    assert "\n" not in line
    assert line.startswith(str(path))
    assert needle in line


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
    path = _write(tmp_path, name, contents)
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
    path = _write(tmp_path, "c.toml", 'profile = "tpu-v9"\n')
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
    from flows.runners import check_task_runner

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
    path = _write(tmp_path, f"deep{suffix}", "[" * 100_000)  # a RecursionError before
    with pytest.raises(ConfigError, match="malformed") as info:
        read_config_file(path)
    assert "\n" not in str(info.value)


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
