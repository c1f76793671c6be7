"""The simulator and routing layers import no I/O or ML framework (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "pandas", "duckdb", "prefect", "mlflow", "transformers", "pydantic")


def test_simulator_and_routing_import_no_heavy_frameworks():
    code = (
        "import json, sys\n"
        "import training.simulator, training.routing, training.routing.base, training.routing.predictors\n"
        "import training.simulator.benchmark, training.simulator.profiles\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
