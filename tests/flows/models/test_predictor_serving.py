"""The registered length predictor as a consumer calls it: the signature's optional ``prompt_text`` may
be left out, and a ``predict`` runs on the model's own torch threads (``model_config``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.registry import CHAMPION, ModelRegistry
from tests.consumer import consume


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, Path]:
    """A tiny predictor (random 2-layer encoder) registered once in a store of its own."""
    from flows.models import train_and_register_predictor
    from tests.training.length.samples import castillo_rows, tiny_config, write_warehouse

    tmp = tmp_path_factory.mktemp("predictor")
    wh = write_warehouse(tmp / "w.duckdb", castillo_rows())
    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    published = train_and_register_predictor(tiny_config().model_dump(), wh, registry, routing=None)
    assert published.decision.promoted
    return registry, tmp


def test_a_request_without_the_optional_prompt_text_is_answered(predictor: tuple[ModelRegistry, Path]):
    """Before: the signature marked ``prompt_text`` optional, MLflow let a frame without it through,
    and the model failed (REST 400, ``input frame lacks columns ['prompt_text']``). Now those rows
    are answered as rows without text (the tabular model)."""
    from training.length.train import TrainedLengthPredictor

    registry, tmp = predictor
    without = pd.DataFrame({"prompt_tokens": [13, 400], "task": ["Apps", "ShareGPT"]})
    got, _ = consume("models:/length-predictor@champion", registry.tracking_uri, without)
    folder = registry.download_artifact("length-predictor", CHAMPION, "predictor", tmp / "dl")
    local = TrainedLengthPredictor.load(folder).predict_frame(without.assign(prompt_text=[None, None]))
    assert got["expected_output_tokens"].tolist() == pytest.approx(local["expected_output_tokens"].tolist())


def test_predict_runs_on_the_models_torch_threads_and_restores_the_process(
    predictor: tuple[ModelRegistry, Path],
):
    """``model_config["torch_threads"]`` (1, recorded in the MLmodel; a consumer may override it at
    load time) is torch's thread count during ``predict``; the process's own setting comes back."""
    import mlflow
    import torch
    from mlflow.models import Model

    registry, tmp = predictor
    folder = registry.download_artifact("length-predictor", CHAMPION, "predictor", tmp / "dl2")
    local = Path(folder).parents[1]  # the model's root: .../artifacts/predictor -> MLmodel
    flavor = Model.load(str(local)).flavors["python_function"]
    assert flavor["config"] == {"torch_threads": 1}
    registry.client  # noqa: B018 - sets the tracking URI
    frame = pd.DataFrame({"prompt_text": ["write a poem"], "prompt_tokens": [5], "task": ["Apps"]})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for threads in (1, 2):
            model = mlflow.pyfunc.load_model(
                "models:/length-predictor@champion", model_config={"torch_threads": threads}
            )
            impl = model.unwrap_python_model()
            seen: list[int] = []
            core = impl._core
            real = core.predict_frame

            def spy(f: pd.DataFrame, real=real, seen=seen, **kw: object) -> pd.DataFrame:
                seen.append(torch.get_num_threads())
                return real(f, **kw)

            core.predict_frame = spy
            model.predict(frame)
            assert seen == [threads]
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
