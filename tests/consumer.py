"""Run an MLflow model consumer in a separate interpreter that cannot import this project.

The interpreter starts isolated (``-I -S``: no user site, no ``site`` processing, so the project's
editable-install finder never loads) and gets only the virtualenv's site-packages on ``sys.path``.
It asserts that none of the project's packages is importable, loads ``model_uri`` from the given
tracking store with ``mlflow.pyfunc.load_model`` and prints ``predict``'s output as JSON records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import pandas as pd

PROJECT_PACKAGES = ("flows", "features", "training", "eval", "warehouse")

_SCRIPT = """
import importlib.util, json, sys, time
sys.path.append({site!r})
leaked = [p for p in {packages!r} if importlib.util.find_spec(p) is not None]
assert not leaked, f"project packages importable in the consumer: {{leaked}}"
import mlflow, pandas as pd
mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})
t0 = time.perf_counter()
model = mlflow.pyfunc.load_model({model_uri!r})
load_s = time.perf_counter() - t0
frame = pd.DataFrame(json.loads(sys.stdin.read()))
out = model.predict(frame)
out = out if isinstance(out, pd.DataFrame) else pd.DataFrame({{"prediction": list(out)}})
print(json.dumps({{"load_s": load_s, "records": out.to_dict(orient="records")}}))
"""


def consume(
    model_uri: str, tracking_uri: str, frame: pd.DataFrame, timeout: float = 300
) -> tuple[pd.DataFrame, float]:
    """``(predictions, load seconds)`` from a fresh interpreter without the project on its path."""
    script = _SCRIPT.format(
        site=sysconfig.get_paths()["purelib"],
        packages=PROJECT_PACKAGES,
        uri=tracking_uri,
        model_uri=model_uri,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true")
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        input=frame.to_json(orient="records"),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )
    if out.returncode:
        raise AssertionError(f"consumer failed ({out.returncode}):\n{out.stderr[-4000:]}")
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    return pd.DataFrame(payload["records"]), float(payload["load_s"])
