"""Iteration logs from the simulator: the batch compositions the engine actually forms, with their times.

Who calls this: the impact estimator's fit (``training.impact.fit``), once per replay, and its tests.
Pure Python + numpy/pandas over ``training.simulator``; no simulator change is needed: the replay runs
with a ``RecordingLatencyModel`` that forwards every call to the "truth" model and logs it.

One row per engine iteration: ``prefill_tokens``, ``prefill_attention_tokens2`` (tokens^2),
``decode_seqs``, ``decode_context_tokens`` (the ``LatencyModel.iteration_time`` arguments) and
``iteration_time_s`` (seconds, what the truth model returned). Replays run step by step
(``fast_forward=False``) so that every iteration is one call.

Decode-only iterations reach the model as ``decode_coeffs(decode_seqs) -> (a, b)``, without the
context sum C (the simulator computes ``a + b * C`` itself). The recorder reads C from the calling
frame's ``dec_ctx`` local (``training/simulator/instance.py``, ``Instance.step``): a measurement hook,
not a contract, so it fails loudly (``RecordingError``) if that local ever disappears; the test suite
replays through it on every run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.routing.base import ClusterView, RequestView
from training.routing.predictors import OraclePredictor
from training.simulator.config import ClusterConfig
from training.simulator.engine import simulate
from training.simulator.latency import LatencyModel
from training.simulator.request import Request

FEATURES: tuple[str, ...] = (
    "prefill_tokens",
    "prefill_attention_tokens2",
    "decode_seqs",
    "decode_context_tokens",
)
"""Input columns of an iteration log (and of the served estimator), in ``iteration_time`` order."""
TARGET = "iteration_time_s"

_DECODE_CONTEXT_LOCAL = "dec_ctx"


class RecordingError(RuntimeError):
    """The simulator did not expose what the recorder needs (see the module docstring)."""


class RecordingLatencyModel:
    """A ``LatencyModel`` that forwards to ``inner`` and logs every iteration it is asked to time.

    Used only by the estimator's data collection; per call it appends one tuple (no other work).
    """

    def __init__(self, inner: LatencyModel) -> None:
        self.inner = inner
        self.name = f"recording:{inner.name}"
        self.rows: list[tuple[int, float, int, int, float]] = []

    def iteration_time(
        self,
        prefill_tokens: int,
        prefill_attention_tokens2: float,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> float:
        t = self.inner.iteration_time(
            prefill_tokens, prefill_attention_tokens2, decode_seqs, decode_context_tokens
        )
        self.rows.append(
            (
                int(prefill_tokens),
                float(prefill_attention_tokens2),
                int(decode_seqs),
                int(decode_context_tokens),
                t,
            )
        )
        return t

    def decode_coeffs(self, decode_seqs: int) -> tuple[float, float]:
        a, b = self.inner.decode_coeffs(decode_seqs)
        caller = sys._getframe(1).f_locals
        if _DECODE_CONTEXT_LOCAL not in caller:
            raise RecordingError(
                f"decode_coeffs was called from {sys._getframe(1).f_code.co_qualname} without a "
                f"{_DECODE_CONTEXT_LOCAL!r} local: the iteration recorder cannot see the decode context"
            )
        ctx = int(caller[_DECODE_CONTEXT_LOCAL])
        self.rows.append((0, 0.0, int(decode_seqs), ctx, a + b * ctx))
        return a, b

    def frame(self) -> pd.DataFrame:
        """The log so far as a frame (``FEATURES`` + ``TARGET``), one row per iteration, in call order."""
        arr = np.asarray(self.rows, dtype=np.float64).reshape(-1, len(FEATURES) + 1)
        return pd.DataFrame(arr, columns=[*FEATURES, TARGET])


class _RoundRobin:
    """Round robin over accepting instances: data collection needs a plain, load-independent router."""

    name = "round_robin_recording"

    def __init__(self) -> None:
        self._next = 0
        self._m = 1

    def reset(self, num_instances: int, seed: int) -> None:
        self._m = num_instances
        self._next = 0

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        accepting = set(cluster.accepting)
        for _ in range(self._m):
            i = self._next
            self._next = (self._next + 1) % self._m
            if i in accepting:
                return i
        return -1


def record_replay(
    requests: Sequence[Request], truth: LatencyModel, config: ClusterConfig, seed: int = 0
) -> pd.DataFrame:
    """Replay ``requests`` step by step with round-robin routing; return the iteration log.

    ``truth`` times the iterations (a profile model); ``seed`` goes to ``simulate`` (round robin does
    not use it). Predicted lengths are the true ones (``OraclePredictor``).
    """
    rec = RecordingLatencyModel(truth)
    simulate(requests, _RoundRobin(), config, rec, OraclePredictor(), seed=seed, fast_forward=False)
    return rec.frame()
