"""Routing latency of a registered router as a separate serving process sees it (``loadwise bench router``).

Run as a script in an isolated interpreter (``python -I -S flows/router_latency_bench.py URI SITE MODEL``): it
imports nothing from this project (it asserts so), loads ``MODEL`` (e.g. ``models:/llm-router@champion``)
with ``mlflow.pyfunc.load_model`` and times one-request calls on the model's own input example:

- ``pyfunc``: ``model.predict(example)``, the standard path, with MLflow's schema enforcement of the
  signature on every call (a float64 tensor ``(-1, C)`` of snapshot rows since issue 15; versions
  registered before take C named columns);
- ``unwrapped``: ``model.unwrap_python_model().predict(None, example)``: the same policy code without
  the per-call schema check, the same-run baseline of the first (their ratio is printed).

Target: ``pyfunc`` <= 1 ms p99 per routing call (``meets_1ms_p99``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from typing import Any


def _percentiles(fn: Any, frame: Any, n: int) -> tuple[float, float]:
    import numpy as np

    for _ in range(min(50, n)):
        fn(frame)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main(argv: list[str]) -> int:
    uri, site, model_uri = argv[:3]
    n = int(argv[3]) if len(argv) > 3 else 2000
    sys.path.append(site)
    leaked = [
        p for p in ("flows", "training", "eval", "warehouse", "features") if importlib.util.find_spec(p)
    ]
    if leaked:
        raise SystemExit(f"project packages importable in the serving process: {leaked}")
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_s = time.perf_counter() - t0
    local = mlflow.artifacts.download_artifacts(model_uri)
    meta = Model.load(local)
    frame: Any = meta.load_input_example(local)
    tensor = meta.signature is not None and meta.signature.inputs.is_tensor_spec()
    raw = model.unwrap_python_model()
    pyfunc = _percentiles(model.predict, frame, n)
    unwrapped = _percentiles(lambda f: raw.predict(None, f), frame, n)
    print(json.dumps({
        "model": model_uri, "load_s": load_s, "columns": int(frame.shape[1]),
        "schema": "tensor" if tensor else "named columns",
        "policy": (meta.metadata or {}).get("policy", "rl"),
        "pyfunc_p50_ms": pyfunc[0], "pyfunc_p99_ms": pyfunc[1],
        "unwrapped_p50_ms": unwrapped[0], "unwrapped_p99_ms": unwrapped[1],
        "schema_overhead_p99": pyfunc[1] / unwrapped[1], "meets_1ms_p99": pyfunc[1] <= 1.0,
    }))  # fmt: skip
    return 0


def run_isolated(model_uri: str, tracking_uri: str, n: int = 2000) -> dict[str, object]:
    """Run this file in a fresh isolated interpreter; its JSON result."""
    import os
    import subprocess
    import sysconfig

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run(
        [sys.executable, "-I", "-S", __file__, tracking_uri, site, model_uri, str(n)],
        capture_output=True, text=True, env=env, cwd="/", timeout=600,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"serving benchmark failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
