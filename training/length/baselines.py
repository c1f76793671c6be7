"""Reference length predictors (the ``LengthPredictor`` protocol of ``training.simulator.interface``)
that need no model: ``oracle`` (true lengths: an upper bound, labelled as such) and ``task_mean``
(mean output length per task, fitted on training requests); and ``FixedPredictor``, answers computed
beforehand (what the evaluation harness hands every replay of one held-out trace, so a learned
predictor is asked once per trace, not once per router and seed, and a replay job stays small).

Who calls this: the evaluation harness (``task_mean`` is the default predictor of every replay, the
oracle one for ``oracle`` routers), the RL episodes (``training.workloads.episodes``), the benchmarks
and tests, once per replay. Pure numpy: every test can use them without torch. The trained predictor
(transformer classifier, tabular) is ``training.length.predictor.LearnedLengthPredictor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.simulator.interface import LengthPrediction, LengthPredictor, predict_lengths
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


class FixedPredictor:
    """The answers of another predictor for known requests, by ``request_id`` (``fix``).

    ``predict_lengths`` returns the stored rows of the requests it is asked about, in their order;
    a request it was not fixed for raises ``KeyError`` (a replay of another trace: a harness bug).
    Keeps the source predictor's ``name`` and ``is_oracle``. Picklable and small: numpy arrays only.
    """

    def __init__(self, name: str, is_oracle: bool, ids: Sequence[str], prediction: LengthPrediction) -> None:
        self.name = name
        self.is_oracle = is_oracle
        self._row = {rid: i for i, rid in enumerate(ids)}
        if len(self._row) != len(prediction.expected_tokens):
            raise ValueError("one prediction per distinct request id")
        self._prediction = prediction

    @classmethod
    def fix(cls, predictor: LengthPredictor, requests: Sequence[Request]) -> FixedPredictor:
        """Ask ``predictor`` once about ``requests`` (distinct ids) and keep its answers."""
        prediction = predict_lengths(predictor, requests)
        return cls(predictor.name, bool(predictor.is_oracle), [r.request_id for r in requests], prediction)

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        try:
            rows = np.fromiter(
                (self._row[r.request_id] for r in requests), dtype=np.int64, count=len(requests)
            )
        except KeyError as exc:
            raise KeyError(f"predictor {self.name!r} was not fixed for request {exc.args[0]!r}") from None
        p = self._prediction
        probs = None if p.bucket_probs is None else p.bucket_probs[rows]
        return LengthPrediction(p.expected_tokens[rows], probs, p.bucket_edges)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens
