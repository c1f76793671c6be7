"""Output-length predictors injected into routers and the simulator (the ``LengthPredictor`` contract).

Who calls this: the replay, once per replay, to annotate every request with a predicted output
length (tokens) before the first routing decision. Length-aware routers and instance queue policies
(least-work-left, bin-packing) read these predictions, never the true lengths.

The learned predictors (transformer classifier, tabular) live elsewhere in ``training`` and satisfy
the same protocol; the ones here are the reference kinds every test can use without torch:
``oracle`` (true lengths: an upper bound, labelled as such), ``constant``, and ``task_mean`` (mean
output length per task, fitted on training requests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # a type only: importing the simulator package here would be circular
    from training.simulator.request import Request


@runtime_checkable
class LengthPredictor(Protocol):
    """Maps requests to predicted output lengths in tokens (float, > 0)."""

    name: str
    is_oracle: bool

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray: ...


class OraclePredictor:
    """Returns the true output lengths. ORACLE: for upper bounds and oracle baselines only."""

    name = "oracle"
    is_oracle = True

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return np.fromiter((r.output_tokens for r in requests), dtype=np.float64, count=len(requests))


class ConstantPredictor:
    """Predicts the same length for every request (a length-blind router's implicit assumption)."""

    is_oracle = False

    def __init__(self, tokens: float = 256.0) -> None:
        if tokens <= 0:
            raise ValueError(f"constant prediction must be > 0 tokens, got {tokens}")
        self.tokens = float(tokens)
        self.name = f"constant({self.tokens:g})"

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return np.full(len(requests), self.tokens, dtype=np.float64)


class TaskMeanPredictor:
    """Mean true output length per task over training requests; unseen tasks get the global mean."""

    name = "task_mean"
    is_oracle = False

    def __init__(self, means: dict[str, float], default: float) -> None:
        self.means = dict(means)
        self.default = float(default)

    @classmethod
    def fit(cls, requests: Sequence[Request]) -> TaskMeanPredictor:
        if not requests:
            raise ValueError("cannot fit task_mean predictor on zero requests")
        by_task: dict[str, list[int]] = {}
        for r in requests:
            by_task.setdefault(r.task, []).append(r.output_tokens)
        means = {t: float(np.mean(v)) for t, v in by_task.items()}
        default = float(np.mean([r.output_tokens for r in requests]))
        return cls(means, default)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return np.fromiter(
            (self.means.get(r.task, self.default) for r in requests), dtype=np.float64, count=len(requests)
        )
