"""Predictor contract, tiny end-to-end train -> save -> load, the report, the adapter, serving."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.length.serving import INPUT_COLUMNS, hint_text
from warehouse.settings import PROJECT_ROOT

from .samples import tiny_config


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_text": ["Please write a long essay about cats.", None, "", "answer briefly: 2+2?"],
            "prompt_tokens": np.array([9, 120, 30, 7], dtype=np.int64),
            "task": ["Apps", "ShareGPT", "never seen task", "DollyDataset/open_qa"],
        }
    )


def test_hint_text():
    assert hint_text("DollyDataset/open_qa") == "This is a open qa task"
    assert hint_text("Apps") == "This is a Apps task"
    assert hint_text("") == ""


def test_contract(tiny_trained):
    out = tiny_trained.predict_frame(_frame())
    k = tiny_trained.k
    assert k == 4
    assert list(out.columns) == ["expected_output_tokens", "bucket", *[f"p_bucket_{i}" for i in range(k)]]
    assert out["expected_output_tokens"].dtype == np.float64
    assert out["bucket"].dtype == np.int64
    p = out[[f"p_bucket_{i}" for i in range(k)]].to_numpy()
    assert p.dtype == np.float64
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (p >= 0).all()
    assert (out["expected_output_tokens"] > 0).all()
    assert (out["bucket"].to_numpy() == p.argmax(axis=1)).all()
    assert len(tiny_trained.predict_frame(_frame().iloc[:0])) == 0


def test_textless_rows_use_tabular_model(tiny_trained):
    frame = _frame()
    full = tiny_trained.predict_frame(frame)
    tab = tiny_trained.core.predict_frame(frame, force_tabular=True)
    # rows 1 and 2 have no text: identical to the tabular answer
    pd.testing.assert_frame_equal(full.iloc[[1, 2]], tab.iloc[[1, 2]])


def test_missing_column_is_named(tiny_trained):
    with pytest.raises(ValueError, match="prompt_tokens"):
        tiny_trained.predict_frame(pd.DataFrame({"prompt_text": ["x"], "task": ["Apps"]}))


def test_save_load_same_predictions(tiny_trained, tmp_path: Path):
    from training.length.train import TrainedLengthPredictor

    tiny_trained.save(tmp_path / "p")
    meta = (tmp_path / "p" / "metadata.json").read_text()
    assert '"edges": [' in meta
    assert "edge_convention" in meta
    loaded = TrainedLengthPredictor.load(tmp_path / "p")
    pd.testing.assert_frame_equal(tiny_trained.predict_frame(_frame()), loaded.predict_frame(_frame()))
    assert loaded.config == tiny_trained.config
    assert loaded.report == tiny_trained.report
    assert loaded.data_fingerprint == tiny_trained.data_fingerprint
    pd.testing.assert_frame_equal(loaded.input_example(), tiny_trained.input_example())


def test_input_example_and_requirements(tiny_trained):
    ex = tiny_trained.input_example()
    assert list(ex.columns) == list(INPUT_COLUMNS)
    assert ex["prompt_text"].isna().sum() == 1
    assert ex["prompt_tokens"].dtype == np.int64
    reqs = tiny_trained.pip_requirements()
    assert any(r.startswith("torch==") for r in reqs)
    assert any(r.startswith("mlflow-skinny==") for r in reqs)  # MLflow's client: no server or UI
    assert all("==" in r and "+" not in r for r in reqs)
    assert len(tiny_trained.data_fingerprint) == 64


def test_training_is_deterministic(tiny_warehouse, tiny_trained):
    from training.length.train import train_length_predictor

    again = train_length_predictor(tiny_warehouse, tiny_config())
    pd.testing.assert_frame_equal(again.predict_frame(_frame()), tiny_trained.predict_frame(_frame()))
    assert again.data_fingerprint == tiny_trained.data_fingerprint


def test_ignores_dolly_and_other_models(tiny_warehouse):
    from training.length.data import load_rows

    rows = load_rows(tiny_warehouse, tiny_config(serving_model="Llama-3.1-8B-Instruct"))
    assert set(rows["model"]) == {"meta-llama--Llama-3.1-8B-Instruct"}
    with pytest.raises(ValueError, match="no rows"):
        load_rows(tiny_warehouse, tiny_config(serving_model="nonexistent-model"))


def test_report(tiny_trained):
    rep = tiny_trained.report
    o = rep.overall
    assert o.n_pairs == 4 * rep.n_test_prompts
    for v in (o.accuracy, o.accuracy_tabular, o.task_majority, o.global_majority, o.ceiling):
        assert 0.0 <= v <= 1.0
    assert o.ceiling >= o.task_majority - 1e-12  # per-prompt majority is never worse on its own pairs
    assert sum(s.n_pairs for s in rep.per_task.values()) == o.n_pairs
    m = rep.metrics()
    assert {"acc", "baseline_task_majority", "baseline_global_majority", "ceiling", "mae_tokens"} <= set(m)
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    md = rep.to_markdown()
    assert "| **overall** |" in md
    assert "ceiling" in md


def test_table1_regenerates(tiny_warehouse):
    from training.length.report import build_table1

    table = build_table1(
        tiny_warehouse, tiny_config(), schemes=("time", "equal"), hints=("prefix", "none"), bench_n=0
    )
    assert len(table.runs) == 4
    md = table.to_markdown()
    assert "time" in md
    assert "equal" in md
    assert "task majority" in md
    assert md == table.to_markdown()  # pure rendering


def test_quantile_buckets_per_task(tiny_warehouse):
    from training.length.train import train_length_predictor

    trained = train_length_predictor(tiny_warehouse, tiny_config(buckets="quantile", n_buckets=3))
    assert trained.report.edges is None
    assert trained.report.edges_by_task
    assert "*" in trained.report.edges_by_task
    out = trained.predict_frame(_frame())
    assert np.allclose(out[["p_bucket_0", "p_bucket_1", "p_bucket_2"]].sum(axis=1), 1.0)


def test_adapter_satisfies_protocol(tiny_trained):
    from training.length.predictor import LearnedLengthPredictor
    from training.simulator.interface import LengthPredictor
    from training.simulator.request import Request

    pred = LearnedLengthPredictor.from_trained(tiny_trained, batch_size=2)
    assert isinstance(pred, LengthPredictor)
    assert pred.is_oracle is False
    reqs = [
        Request("a", 0.0, 12, 5, task="Apps", prompt_text="Please write a long essay"),
        Request("b", 0.1, 40, 5, task="ShareGPT", prompt_text=None),
        Request("c", 0.2, 40, 5, task="", prompt_text="hi"),
    ]
    out = pred.predict_output_tokens(reqs)
    assert out.shape == (3,)
    assert out.dtype == np.float64
    assert (out > 0).all()
    expected = tiny_trained.predict_frame(
        pd.DataFrame({"prompt_text": ["Please write a long essay", None, "hi"], "prompt_tokens": [12, 40, 40],
                      "task": ["Apps", "ShareGPT", ""]})
    )["expected_output_tokens"].to_numpy()  # fmt: skip
    assert np.allclose(out, expected)


def test_benchmark_latency_shape(tiny_trained):
    from training.length.bench import benchmark_latency

    frame = pd.concat([_frame()] * 3, ignore_index=True)
    res = benchmark_latency(tiny_trained, n=len(frame), frame=frame)
    assert res["batch1_ms_per_request"] > 0
    assert res["batch64_ms_per_request"] > 0
    assert res["n"] == len(frame)


def test_serving_module_imports_nothing_from_loadwise():
    src = PROJECT_ROOT / "training" / "length" / "serving.py"
    tree = ast.parse(src.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in serving.py"
            roots.add((node.module or "").split(".")[0])
    stdlib = {"__future__", "json", "math", "sys", "collections", "pathlib", "typing", "importlib"}
    third_party = {"joblib", "cloudpickle", "mlflow", "numpy", "pandas", "torch", "transformers", "sklearn"}
    allowed = stdlib | third_party
    assert roots <= allowed, roots - allowed


_CONSUMER = """
import importlib.abc, sys
class _NoLoadwise(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"training", "warehouse", "features", "flows", "eval"}:
            raise ImportError(f"loadwise module {name} is not installed here")
        return None
sys.meta_path.insert(0, _NoLoadwise())
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_json(sys.argv[2], orient="split")
frame["prompt_tokens"] = frame["prompt_tokens"].astype("int64")
model.predict(frame).to_json(sys.argv[3], orient="split", double_precision=15)
assert not any(m.split(".")[0] == "training" for m in sys.modules)
"""


@pytest.mark.slow  # ~60 s: MLflow import, model logging, loading in a process without loadwise
def test_pyfunc_round_trip_without_loadwise(tiny_trained, tmp_path: Path):
    """Log by instance, load through MLflow in a process that cannot import loadwise, predict."""
    import subprocess
    import sys

    import mlflow

    from training.length.serving import LengthPredictorModel, pickle_by_value

    folder = tmp_path / "predictor"
    tiny_trained.save(folder)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # an explicit artifact root: the default would be ./mlruns in the working directory
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(
            "length-roundtrip", artifact_location=(tmp_path / "art").as_uri()
        )
    )
    pickle_by_value()
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="length_predictor",
            python_model=LengthPredictorModel(),
            artifacts={"predictor": str(folder)},
            input_example=tiny_trained.input_example(),
            pip_requirements=tiny_trained.pip_requirements(),
        )
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    expected = tiny_trained.predict_frame(_frame())
    in_json, out_json = tmp_path / "in.json", tmp_path / "out.json"
    _frame().to_json(in_json, orient="split")
    subprocess.run(
        [sys.executable, "-c", _CONSUMER, local, str(in_json), str(out_json)],
        check=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    got = pd.read_json(out_json, orient="split")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=1e-9)
    # and in this process, through MLflow's loader
    out = mlflow.pyfunc.load_model(info.model_uri).predict(_frame())
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)
