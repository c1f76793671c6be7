"""The run environment (quiet, offline, local) is defined once, in ``warehouse.run_env``, and the test
suite sets it without importing ``flows``: tests of a lower layer do not depend on the ones above."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from warehouse.run_env import RUN_ENV
from warehouse.settings import PROJECT_ROOT

_PROBE = """
import json, os, sys
import tests.conftest
layers = ("features", "training", "eval", "flows")
print(json.dumps({
    "above": sorted(m for m in sys.modules if m.split(".")[0] in layers),
    "env": {k: os.environ.get(k) for k in json.loads(sys.argv[1])},
}))
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted(RUN_ENV))],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_the_test_configuration_sets_the_run_env_without_importing_flows() -> None:
    env = {k: v for k, v in os.environ.items() if k not in RUN_ENV}
    got = _probe(env)
    assert got["above"] == []  # tests/conftest.py used to import flows.env
    assert got["env"] == RUN_ENV


def test_a_callers_own_value_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k not in RUN_ENV}
    env["HF_HUB_OFFLINE"] = "0"
    got = _probe(env)
    assert got["env"] == {**RUN_ENV, "HF_HUB_OFFLINE": "0"}
