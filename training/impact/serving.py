"""The impact estimator as a self-contained MLflow pyfunc model: batch composition -> iteration time.

Who calls this: a serving-side router or reward that loads ``models:/impact-estimator@champion`` with
``mlflow.pyfunc.load_model`` and calls ``predict`` on a frame of batch compositions (once per routing
decision or per batch of them). The registry service (``flows``) logs it with the estimator JSON
(``FittedEstimator.to_json()``) as the artifact ``estimator``.

Self-contained on purpose: it imports only numpy, pandas, mlflow and json, so a consumer without
loadwise installed can load it. It re-implements ``LinearLatencyModel.iteration_time`` (Jain et al.,
arXiv 2408.13510: a base cost plus per-prefill-token and per-decode-token gradients, with the fitted
attention terms of the rich variant):

    iteration_time_s = base_s + grad1 * prefill_tokens + attention2 * prefill_attention_tokens2
                       + per_decode_seq_s * decode_seqs + grad2 * decode_context_tokens

Input columns (tokens; ``prefill_attention_tokens2`` in tokens^2): ``prefill_tokens``,
``prefill_attention_tokens2``, ``decode_seqs``, ``decode_context_tokens``. Output: one column
``iteration_time_s`` (float64 seconds), one row per input row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

INPUT_COLUMNS = ("prefill_tokens", "prefill_attention_tokens2", "decode_seqs", "decode_context_tokens")
OUTPUT_COLUMN = "iteration_time_s"
_COEFFICIENT_OF = {
    "prefill_tokens": "grad1_s_per_prefill_token",
    "prefill_attention_tokens2": "attention2_s_per_token2",
    "decode_seqs": "per_decode_seq_s",
    "decode_context_tokens": "grad2_s_per_decode_context_token",
}
FORMAT = "loadwise-impact-estimator"


def coefficients_from_json(text: str) -> dict[str, float]:
    """The ``LinearLatencyModel`` coefficients of an estimator JSON (``FittedEstimator.to_json()``)."""
    obj = json.loads(text)
    if obj.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document (format={obj.get('format')!r})")
    coef = obj["coefficients"]
    missing = [k for k in ("base_s", *_COEFFICIENT_OF.values()) if k not in coef]
    if missing:
        raise ValueError(f"estimator JSON lacks coefficients {missing}")
    return {k: float(v) for k, v in coef.items()}


def predict_iteration_time(coefficients: dict[str, float], frame: pd.DataFrame) -> pd.DataFrame:
    """``iteration_time_s`` for each row of ``frame`` (columns ``INPUT_COLUMNS``)."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"input frame lacks columns {missing}; expected {list(INPUT_COLUMNS)}")
    t = np.full(len(frame), coefficients["base_s"], dtype=np.float64)
    for column, key in _COEFFICIENT_OF.items():
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(np.float64)
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError(f"column {column} must be finite and >= 0")
        t += coefficients[key] * values
    return pd.DataFrame({OUTPUT_COLUMN: t}, index=frame.index)


class ImpactEstimatorModel(PythonModel):
    """Pyfunc wrapper: ``load_context`` reads ``context.artifacts["estimator"]`` (the estimator JSON)."""

    def __init__(self) -> None:
        self.coefficients: dict[str, float] | None = None

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["estimator"], encoding="utf-8") as fh:
            self.coefficients = coefficients_from_json(fh.read())

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.coefficients is None:
            self.load_context(context)
        assert self.coefficients is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_iteration_time(self.coefficients, frame)
