"""Adapter: a trained or loaded length predictor as the simulator's ``LengthPredictor``, and the
batched, deduplicated inference every consumer of the model goes through (``predict_inputs``).

Who calls this: the replay (``training.simulator.interface.LengthPredictor`` protocol) once per
replay, to annotate every request with a predicted output length in tokens and bucket probabilities
before routing (a predictor folder given as ``--predictor PATH``); ``training.length.stored`` to
predict warehouse rows in batches before writing them (``loadwise predict``, the nightly
``predict-lengths`` step). Requests without prompt text are answered by the tabular model (prompt
length + task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.length.serving import LengthPredictorCore
from training.length.threads import one_thread
from training.simulator.interface import LengthPrediction

if TYPE_CHECKING:
    from training.length.train import TrainedLengthPredictor
    from training.simulator.request import Request

BATCH_SIZE = 64
"""Distinct inputs per model call (the batch the predictor's latency target is set at)."""


def requests_frame(requests: Sequence[Request]) -> pd.DataFrame:
    """The predictor's input frame (``prompt_text, prompt_tokens, task``) for simulator requests."""
    return pd.DataFrame(
        {
            "prompt_text": pd.Series([r.prompt_text for r in requests], dtype=object),
            "prompt_tokens": np.fromiter(
                (r.prompt_tokens for r in requests), dtype=np.int64, count=len(requests)
            ),
            "task": pd.Series([r.task for r in requests], dtype=object),
        }
    )


def single_edges(core: LengthPredictorCore) -> tuple[float, ...] | None:
    """The predictor's bucket edges when every task shares them (``time`` / ``equal`` / ``log2``);
    ``None`` for per-task ``quantile`` edges."""
    edges = core.metadata.get("edges")
    return None if edges is None else tuple(float(e) for e in edges)


@dataclass(frozen=True)
class BatchPrediction:
    """``predict_inputs``'s answer, one row per input row: expected tokens (n,), bucket probabilities
    (n, k), which model answered (``text`` / ``tabular``), the number of distinct inputs the model
    was called on, and the bucket edges (``None``: per task)."""

    expected_tokens: np.ndarray
    bucket_probs: np.ndarray
    answered_by: list[str]
    distinct_inputs: int
    bucket_edges: tuple[float, ...] | None


def predict_inputs(
    core: LengthPredictorCore, frame: pd.DataFrame, *, batch_size: int = BATCH_SIZE
) -> BatchPrediction:
    """The model's answer for every row of an input frame (``prompt_text, prompt_tokens, task``),
    each distinct input computed once, ``batch_size`` distinct inputs per model call.

    A CASTILLO prompt is ten warehouse rows (one per sampled generation) with one input, and a
    sampled workload replays a prompt many times: deduplicating first makes the model's cost a
    function of the distinct prompts only. Expected lengths are floored at 1 token. The model runs
    with one thread per numeric library (``training.length.threads.one_thread``): the encoder's
    features are then the ones training computed and MLflow serving computes (its
    ``torch_threads`` default is 1), and a busy machine does not stall a two-thread kernel.
    """
    from warehouse.predictions import input_hash

    n = len(frame)
    texts = frame["prompt_text"].tolist()
    tokens = pd.to_numeric(frame["prompt_tokens"], errors="coerce").fillna(0).astype(np.int64).tolist()
    tasks = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in frame["task"]]
    keys = [
        input_hash(x if isinstance(x, str) else None, p, t)
        for x, p, t in zip(texts, tokens, tasks, strict=True)
    ]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    rows = list(first.values())
    unique = pd.DataFrame(
        {
            "prompt_text": pd.Series([texts[i] for i in rows], dtype=object),
            "prompt_tokens": np.asarray([tokens[i] for i in rows], dtype=np.int64),
            "task": pd.Series([tasks[i] for i in rows], dtype=object),
        }
    )
    k = core.k
    expected = np.zeros(len(unique), dtype=np.float64)
    probs = np.zeros((len(unique), k), dtype=np.float64)
    with one_thread(torch_too=True):  # as training and MLflow serving compute it (training.length.threads)
        for start in range(0, len(unique), batch_size):
            out = core.predict_frame(unique.iloc[start : start + batch_size])
            stop = start + len(out)
            expected[start:stop] = out["expected_output_tokens"].to_numpy()
            probs[start:stop] = out[[f"p_bucket_{j}" for j in range(k)]].to_numpy()
    position = {key: j for j, key in enumerate(first)}
    index = np.fromiter((position[key] for key in keys), dtype=np.int64, count=n)
    has_text = core.has_text_model
    answered = ["text" if has_text and isinstance(x, str) and x.strip() else "tabular" for x in texts]
    return BatchPrediction(
        np.maximum(expected[index], 1.0), probs[index], answered, len(unique), single_edges(core)
    )


class LearnedLengthPredictor:
    """A loaded predictor folder in this process: ``predict_lengths`` gives the expected output
    length (tokens, > 0) and, when every task shares the bucket edges, the bucket probabilities.

    Answers are memoised per input (prompt text, prompt tokens, task) for the life of the object, so
    an RL training that replays the same prompts episode after episode calls the model once per
    distinct prompt. ``batch_size`` distinct inputs go to the model per call.
    """

    is_oracle = False

    def __init__(
        self, core: LengthPredictorCore, *, name: str = "learned_length", batch_size: int = BATCH_SIZE
    ) -> None:
        self.core = core
        self.name = name
        self.batch_size = batch_size
        self.edges = single_edges(core)
        self._memo: dict[str, tuple[float, np.ndarray]] = {}

    @classmethod
    def from_trained(cls, trained: TrainedLengthPredictor, **kw: object) -> LearnedLengthPredictor:
        return cls(trained.core, **kw)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: Path, **kw: object) -> LearnedLengthPredictor:
        return cls(LengthPredictorCore.load(Path(folder)), **kw)  # type: ignore[arg-type]

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        from warehouse.predictions import input_hash

        keys = [input_hash(r.prompt_text, r.prompt_tokens, r.task) for r in requests]
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._memo:
                first.setdefault(key, i)
        if first:
            missing = list(first.values())
            batch = predict_inputs(
                self.core, requests_frame([requests[i] for i in missing]), batch_size=self.batch_size
            )
            for j, i in enumerate(missing):
                self._memo[keys[i]] = (float(batch.expected_tokens[j]), batch.bucket_probs[j])
        expected = np.fromiter((self._memo[key][0] for key in keys), dtype=np.float64, count=len(keys))
        if self.edges is None:
            return LengthPrediction(expected)
        probs = np.stack([self._memo[key][1] for key in keys]) if keys else np.zeros((0, self.core.k))
        return LengthPrediction(expected, probs, self.edges)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens
