"""The served impact estimator: same times as the LatencyModel, plain contract, loads without loadwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from training.impact.fit import FittedEstimator
from training.impact.serving import INPUT_COLUMNS, OUTPUT_COLUMN, ImpactEstimatorModel

FIXTURE = Path(__file__).parent / "data" / "estimator_synthetic_v1.json"


def _model() -> ImpactEstimatorModel:
    model = ImpactEstimatorModel()
    model.load_context(SimpleNamespace(artifacts={"estimator": str(FIXTURE)}))
    return model


def test_predict_matches_the_latency_model():
    est = FittedEstimator.from_json(FIXTURE.read_text())
    frame = est.input_example()
    out = _model().predict(None, frame)
    assert list(out.columns) == [OUTPUT_COLUMN]
    assert out[OUTPUT_COLUMN].dtype == np.float64
    want = [
        est.latency_model.iteration_time(*row) for row in frame[list(INPUT_COLUMNS)].itertuples(index=False)
    ]
    np.testing.assert_allclose(out[OUTPUT_COLUMN].to_numpy(), want, rtol=1e-12)


def test_bad_input_fails_clearly():
    model = _model()
    with pytest.raises(ValueError, match="lacks columns"):
        model.predict(None, pd.DataFrame({"prefill_tokens": [1]}))
    bad = pd.DataFrame({c: [1] for c in INPUT_COLUMNS}).assign(decode_seqs=[-1])
    with pytest.raises(ValueError, match="decode_seqs"):
        model.predict(None, bad)


def test_serving_module_imports_nothing_of_loadwise_beyond_itself():
    code = (
        "import sys, training.impact.serving\n"
        "print(sorted(m for m in sys.modules if m.startswith(('training.', 'flows', 'eval', 'features', "
        "'warehouse')) and m not in ('training.impact', 'training.impact.serving')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_pyfunc_round_trip_loads_without_loadwise(tmp_path: Path):
    """Saved with the class pickled by value, the model loads where ``training`` cannot be imported."""
    save = (
        "import sys, cloudpickle, mlflow.pyfunc, training.impact.serving as s\n"
        "cloudpickle.register_pickle_by_value(s)\n"
        "mlflow.pyfunc.save_model(sys.argv[1], python_model=s.ImpactEstimatorModel(), "
        "artifacts={'estimator': sys.argv[2]})\n"
    )
    load = (
        "import sys\nsys.modules['training'] = None\n"
        "import mlflow.pyfunc, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "df = pd.DataFrame({'prefill_tokens': [0, 512], 'prefill_attention_tokens2': [0.0, 512.0**2], "
        "'decode_seqs': [8, 8], 'decode_context_tokens': [8000, 8000]})\n"
        "print(m.predict(df)['iteration_time_s'].tolist())\n"
    )
    path = str(tmp_path / "model")
    subprocess.run(
        [sys.executable, "-c", save, path, str(FIXTURE)], check=True, timeout=300, capture_output=True
    )
    out = subprocess.run(
        [sys.executable, "-c", load, path],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    got = [float(x) for x in out.stdout.strip().splitlines()[-1].strip("[]").split(",")]
    est = FittedEstimator.from_json(FIXTURE.read_text())
    want = [
        est.latency_model.iteration_time(0, 0.0, 8, 8000),
        est.latency_model.iteration_time(512, 512.0**2, 8, 8000),
    ]
    assert got == pytest.approx(want, rel=1e-12)
