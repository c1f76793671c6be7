"""Iteration logs from the simulator: the batch compositions the engine actually forms, with their times.

Who calls this: the impact estimator's fit (``training.impact.fit``), once per replay, and its tests.
Pure Python + numpy/pandas over ``training.simulator``.

One row per engine iteration: ``prefill_tokens``, ``prefill_attention_tokens2`` (tokens^2),
``decode_seqs``, ``decode_context_tokens`` (the ``LatencyModel.iteration_time`` arguments) and
``iteration_time_s`` (seconds, what the truth model returned). Replays run step by step
(``fast_forward=False``) so that every iteration is one call.

The simulator reports every iteration through its ``iteration_observer`` hook
(``training.simulator.latency.IterationObserver``), decode-only ones included, with the same four
numbers the latency model is asked about and the duration it returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.length.baselines import OraclePredictor
from training.routing.registry import RouterContext, get_router
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


class IterationLog:
    """Collects the simulator's iteration reports (an ``IterationObserver``): one tuple per call."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, int, int, float]] = []

    def __call__(
        self, prefill_tokens: int, attention2: float, decode_seqs: int, context_tokens: int, seconds: float
    ) -> None:
        self.rows.append(
            (int(prefill_tokens), float(attention2), int(decode_seqs), int(context_tokens), seconds)
        )

    def frame(self) -> pd.DataFrame:
        """The log so far as a frame (``FEATURES`` + ``TARGET``), one row per iteration, in call order."""
        arr = np.asarray(self.rows, dtype=np.float64).reshape(-1, len(FEATURES) + 1)
        return pd.DataFrame(arr, columns=[*FEATURES, TARGET])


def record_replay(
    requests: Sequence[Request], truth: LatencyModel, config: ClusterConfig, seed: int = 0
) -> pd.DataFrame:
    """Replay ``requests`` step by step with round-robin routing; return the iteration log.

    ``truth`` times the iterations (a profile model); ``seed`` goes to ``simulate`` (round robin does
    not use it). Predicted lengths are the true ones (``OraclePredictor``).
    """
    log = IterationLog()
    router = get_router("round_robin", RouterContext(num_instances=config.num_instances))
    simulate(
        requests,
        router,
        config,
        truth,
        OraclePredictor(),
        seed=seed,
        fast_forward=False,
        iteration_observer=log,
    )
    return log.frame()
