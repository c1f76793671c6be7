"""DIAGNOSTIC ONLY: the lookahead teacher given the trace's true lengths and true future arrivals.

Never a router, never a label source, never registered. It answers one question (issue 17): when
the lookahead teacher does not beat its base policy, is the rollout / score method what fails, or the
sampled information (the predictor's wide buckets, the Poisson model of the arrivals)? The oracle is
the same ``LookaheadTeacher`` (same candidates, same rollouts under the same base, same score, same
``conservative`` rule) whose two draws are replaced by the truth:

- ``_draw_lengths``: the true output length of every unfinished request;
- ``_draw_future``: the trace's true arrivals in ``[now, now + horizon_s)`` (with their true lengths
  and the predictor's answer for them, as the replay gives it).

Every sample then sees the same world (use ``samples=1``: more only repeat it), so the paired
comparison has no standard error and ``min_margin_s`` alone decides a conservative deviation.
``true_lengths`` / ``true_future`` False keep the real teacher's draw for that part (a half oracle:
which of the two pieces of information the headroom needs).

Guards (tests/training/routing/test_lookahead_oracle.py): this module lives in ``eval/``, which
nothing under ``training/`` imports; no registry entry and no ``LookaheadParams`` field selects it;
``OracleLookaheadTeacher.is_oracle`` is True, so ``training.routing.lookahead.drive_teacher`` (hence
``simulate_with_lookahead``, the ``lookahead`` router of ``compare``) and the distillation's
``label_episode`` refuse it; its replay is named ``lookahead-ORACLE`` and its ``LookaheadRun.oracle``
is True. Who calls this: ``eval.lookahead_headroom --oracle`` (docs/rl_router.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from training.routing.lookahead import (
    LookaheadParams,
    LookaheadRun,
    LookaheadTeacher,
    SampledLengths,
    drive_teacher,
)
from training.routing.registry import RouterContext
from training.simulator.config import ClusterConfig
from training.simulator.interface import LengthPredictor
from training.simulator.latency import LatencyModel
from training.simulator.request import Request


@dataclass
class OracleLookaheadTeacher(LookaheadTeacher):
    """The lookahead teacher reading the trace's truth (see the module docstring). ``truth``: the
    replayed trace, in arrival order."""

    truth: Sequence[Request] = ()
    true_lengths: bool = True
    """False: the unfinished requests' lengths are sampled as the real teacher samples them."""
    true_future: bool = True
    """False: the arrivals are sampled as the real teacher samples them."""
    _by_id: dict[str, Request] = field(default_factory=dict, init=False)
    _times: list[float] = field(default_factory=list, init=False)
    _arrived: set[str] = field(default_factory=set, init=False)
    is_oracle: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._by_id = {r.request_id: r for r in self.truth}
        self._times = [r.arrival_s for r in self.truth]

    def _draw_lengths(
        self, unfinished: list[tuple[str, int]], rng: np.random.Generator, cap_tokens: int
    ) -> dict[str, int]:
        """The true output lengths of the unfinished requests (``rng`` unused)."""
        self._arrived = {rid for rid, _ in unfinished}  # called before _draw_future, same sample
        if not self.true_lengths:
            return super()._draw_lengths(unfinished, rng, cap_tokens)
        return {rid: self._by_id[rid].output_tokens for rid, _ in unfinished}

    def _draw_future(self, now: float, rng: np.random.Generator, cap_tokens: int) -> list[Request]:
        """The trace's requests arriving in ``[now, now + horizon_s)`` that the replay has not yet let
        arrive (``rng`` unused)."""
        if not self.true_future:
            return super()._draw_future(now, rng, cap_tokens)
        if self.params.horizon_s <= 0:
            return []
        lo = bisect.bisect_left(self._times, now)
        hi = bisect.bisect_left(self._times, now + self.params.horizon_s)
        kept = self._arrived
        return [r for r in self.truth[lo:hi] if r.request_id not in self.seen and r.request_id not in kept]


def simulate_with_oracle_lookahead(
    requests: Sequence[Request],
    config: ClusterConfig,
    latency_model: LatencyModel,
    predictor: LengthPredictor,
    ctx: RouterContext,
    params: LookaheadParams,
    *,
    true_lengths: bool = True,
    true_future: bool = True,
) -> LookaheadRun:
    """DIAGNOSTIC: replay ``requests`` with ``OracleLookaheadTeacher`` (the truth of ``requests`` in
    its rollouts: the lengths, the future or both). The result is labelled (``oracle=True``, replay
    ``lookahead-ORACLE``); report it as an ORACLE row, never as a router."""
    ordered = sorted(requests, key=lambda r: r.arrival_s)
    teacher = OracleLookaheadTeacher(
        params,
        ctx,
        SampledLengths(predictor),
        truth=ordered,
        true_lengths=true_lengths,
        true_future=true_future,
    )
    return drive_teacher(requests, config, latency_model, teacher, allow_oracle=True)
