"""Nightly config files that must fail when read, each with what its one-line error must name; used
by the config tests (tests/flows/nightly/test_config.py) and ``loadwise run``'s
(tests/flows/cli/test_nightly.py)."""

from __future__ import annotations

from pathlib import Path

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


def write_config(folder: Path, name: str, contents: str | bytes) -> Path:
    path = folder / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents)
    return path
