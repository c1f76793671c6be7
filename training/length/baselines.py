"""Reference length predictors (the ``LengthPredictor`` protocol of ``training.simulator.interface``)
that need no model: ``oracle`` (true lengths: an upper bound, labelled as such) and ``task_mean``
(mean output length per task, fitted on training requests).

Who calls this: the evaluation harness (``task_mean`` is the default predictor of every replay, the
oracle one for ``oracle`` routers), the RL episodes (``training.workloads.episodes``), the benchmarks
and tests, once per replay. Pure numpy: every test can use them without torch. The trained predictor
(transformer classifier, tabular) is ``training.length.predictor.LearnedLengthPredictor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.simulator.request import Request


class OraclePredictor:
    """Returns the true output lengths. ORACLE: for upper bounds and oracle baselines only."""

    name = "oracle"
    is_oracle = True

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return np.fromiter((r.output_tokens for r in requests), dtype=np.float64, count=len(requests))


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
