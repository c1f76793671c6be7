"""A toy MLflow model for the registry tests: ``y = scale * x``, its serving module self-contained.

``package`` builds the ``ModelPackage`` the registry publishes; used by the registry, PostgreSQL and
promotion-race tests (a real model costs seconds to train; this one, nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flows.registry import ModelPackage

SERVING = '''"""A self-contained toy model: y = scale * x (imports only third-party packages)."""
import json
from pathlib import Path

import mlflow.pyfunc
import pandas as pd


class ScaleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.scale = json.loads(Path(context.artifacts["params"]).read_text())["scale"]

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"y": model_input["x"].astype("float64") * self.scale})
'''


def package(tmp_path: Path, scale: float, metric: float, name: str = "toy-model") -> ModelPackage:
    module = tmp_path / "scale_serving.py"
    module.write_text(SERVING)
    params = tmp_path / f"params-{scale}.json"
    params.write_text(json.dumps({"scale": scale}))
    x = pd.DataFrame({"x": [1.0, 2.0]})
    return ModelPackage(
        name=name,
        serving_module=module,
        model_class="ScaleModel",
        artifacts={"params": params},
        input_example=x,
        output_example=pd.DataFrame({"y": x["x"] * scale}),
        pip_requirements=["mlflow==3.17.2", "pandas==3.1.1"],
        config={"scale": scale, "nested": {"k": 1}},
        metrics={"accuracy": metric},
        data_fingerprint="sha256:abc",
        reports={"report.md": "# toy"},
        description="toy",
    )
