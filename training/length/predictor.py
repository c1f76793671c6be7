"""Adapter: a trained or loaded length predictor as the simulator's ``LengthPredictor``.

Who calls this: the replay (``training.simulator.interface.LengthPredictor`` protocol), once per
replay, to annotate every request with a predicted output length in tokens before routing. Requests
without prompt text are answered by the tabular model (prompt length + task).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.length.serving import LengthPredictorCore

if TYPE_CHECKING:
    from training.length.train import TrainedLengthPredictor
    from training.simulator.request import Request


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


class LearnedLengthPredictor:
    """``predict_output_tokens`` = the predictor's expected output length (tokens, > 0).

    ``batch_size`` rows go to the encoder per call (64: the batch the latency target is set at).
    """

    is_oracle = False

    def __init__(
        self, core: LengthPredictorCore, *, name: str = "learned_length", batch_size: int = 64
    ) -> None:
        self.core = core
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_trained(cls, trained: TrainedLengthPredictor, **kw: object) -> LearnedLengthPredictor:
        return cls(trained.core, **kw)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: Path, **kw: object) -> LearnedLengthPredictor:
        return cls(LengthPredictorCore.load(Path(folder)), **kw)  # type: ignore[arg-type]

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        frame = requests_frame(requests)
        out = np.zeros(len(frame), dtype=np.float64)
        for start in range(0, len(frame), self.batch_size):
            part = frame.iloc[start : start + self.batch_size]
            out[start : start + len(part)] = self.core.predict_frame(part)[
                "expected_output_tokens"
            ].to_numpy()
        return np.maximum(out, 1.0)
