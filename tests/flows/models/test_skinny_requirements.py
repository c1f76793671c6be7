"""The models declare MLflow's client (``mlflow-skinny``), and their serving code needs no more.

A skinny install lacks what only the full ``mlflow`` brings (the tracking server and UI, SQLAlchemy,
scikit-learn, matplotlib, ...; docs/operations.md measures both installs: 301 vs 855 MB for the
router). Installing one needs a package index, so the test stands it in: an isolated interpreter
(``tests/consumer.py``'s) in which importing any of those packages fails, as it would there. In it,
the router's and the estimator's serving modules import, and a model downloaded from the registry
loads from its folder and predicts. Absent means absent: its ``sys.path`` holds a folder of links to
the virtualenv's site-packages without those packages (MLflow probes with ``find_spec``)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import mlflow

from flows.models.estimator import ESTIMATOR_REQUIREMENTS
from flows.models.router import ROUTER_REQUIREMENTS
from flows.registry import ModelRegistry
from tests.consumer import PROJECT_PACKAGES
from tests.flows.toy_model import package

ROOT = Path(__file__).resolve().parents[3]
FULL_ONLY = (
    "aiohttp", "alembic", "docker", "flask", "flask_cors", "graphene", "gunicorn", "huey", "jinja2",
    "joblib", "mako", "matplotlib", "narwhals", "PIL", "pyarrow", "scipy", "sklearn", "skops",
    "sqlalchemy", "werkzeug",
)  # fmt: skip
"""Top-level modules of the distributions ``mlflow`` installs and ``mlflow-skinny`` does not (measured:
``pip install`` of each in a fresh venv, the difference of ``pip list``)."""

_SCRIPT = """
import importlib.util, json, runpy, sys
sys.path.append({site!r})
assert not [p for p in {packages!r} + {blocked!r} if importlib.util.find_spec(p) is not None]
for path in {modules!r}:
    runpy.run_path(path)
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model({folder!r})
print(json.dumps(model.predict(pd.DataFrame({{"x": [1.0, 4.0]}}))["y"].tolist()))
"""


def test_models_declare_mlflow_skinny_and_serve_without_the_rest(tmp_path: Path):
    for requirements in (ROUTER_REQUIREMENTS, ESTIMATOR_REQUIREMENTS):
        assert requirements[0] == f"mlflow-skinny=={mlflow.__version__}"
        assert not [r for r in requirements if r.startswith("mlflow==")]
    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    v = registry.publish(
        dataclasses.replace(package(tmp_path, 2.0, 0.5), pip_requirements=ROUTER_REQUIREMENTS)
    )
    registry.client  # noqa: B018 - sets the tracking URI
    folder = mlflow.artifacts.download_artifacts(v.model_uri, dst_path=str(tmp_path / "dl"))
    assert (Path(folder) / "requirements.txt").read_text().split() == ROUTER_REQUIREMENTS
    site = tmp_path / "site-packages"  # the virtualenv's, without what only full mlflow installs
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.split(".")[0] not in FULL_ONLY:
            (site / entry.name).symlink_to(entry)
    script = _SCRIPT.format(
        site=str(site),
        blocked=FULL_ONLY,
        packages=PROJECT_PACKAGES,
        modules=[str(ROOT / "training/rl/policy_serving.py"), str(ROOT / "training/impact/serving.py")],
        folder=folder,
    )
    env = {k: val for k, val in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2.0, 8.0]
