"""The lookahead teacher (issue 17, first step): rollout policy improvement over the simulator.

At each routing decision the teacher forks the replay (``ReplayState.fork``) once per candidate action
(each accepting instance; ``DELAY`` too with admission control) and per sample, gives every fork the
same *sampled* future (common random numbers across candidates), plays it to the end under a base
policy (``workload_impact_greedy``) and picks the action with the lowest expected score (mean E2E of
the requests in play plus ``tail_weight`` x their ``tail_quantile`` E2E).

What a rollout may know (never the trace's truth):

- future arrivals: Poisson at the arrival rate observed so far (requests seen by the router / time
  since the first one), over ``horizon_s`` (at most ``max_arrivals``); each one copies the prompt,
  task, prefix and prediction of a request already seen, drawn uniformly, and its output length is
  drawn from that request's predicted bucket distribution;
- unfinished requests' output lengths: drawn from the request's predicted bucket distribution,
  conditioned on being longer than the tokens generated so far (``ReplayState.unfinished()``, what
  a router streaming the tokens knows). Bucket ``i`` holds ``(edges[i-1], edges[i]]`` tokens and a
  length is drawn uniformly in it (log-uniformly above the first bucket with ``log_uniform``); the
  last, open bucket is taken as ``(e, 2e]``. A predictor with
  no buckets (task mean): remaining tokens ``1 + Exp(mean = predicted - generated, at least 1)``.

The teacher needs the replay state, not only the views a router gets, so it is not a plain router:
``simulate_with_lookahead`` is the driver (it owns the ``ReplayState``, hands the teacher the state
at each decision, and returns the ``SimResult``). What the teacher reads of a request is a
``Known`` record built by the driver from the router's view and the request's prompt fields only
(``known_request``); the true output lengths and arrivals of the trace never reach it
(tests/training/routing/test_lookahead.py). The registry entry ``lookahead`` needs
``RouterContext.options["lookahead"]`` (so ``--routers all`` and the contract suite leave it out;
``eval.harness`` gives it ``COMPARE_PARAMS`` when ``compare`` names it); its router's ``simulate``
runs this driver.

The cheap teacher (``stop_at_horizon``): each rollout stops at ``now + horizon_s`` and the requests in
play are scored by ``backlog_e2e`` (finished: E2E; unfinished: elapsed time plus a list-scheduling
estimate of the remaining time of their sampled remaining tokens on their instance).

The conservative teacher (``conservative``): the base router's own answer is the default; another
candidate replaces it only when its paired score difference to that answer (sample by sample, common
random numbers) is significant: below ``-z`` standard errors and ``-min_margin_s`` (``paired_choice``).
A teacher that never finds one replays exactly as its base. ``LookaheadRun.paired`` keeps each
decision's comparison. The oracle diagnostic (``eval.lookahead_oracle``: the same teacher given the
trace's truth) is refused by ``drive_teacher`` unless asked for by name.

Who calls this: evaluation scripts measuring the teacher's headroom (``eval.lookahead_headroom``,
docs/rl_router.md "Lookahead teacher"); the distillation's data generation (``training.rl.distill``).
Cost: candidates x samples rollouts per decision: at 535 requests in the system (paper main setting,
2000 requests, 4 samples) ~3.2 s per decision drained, ~0.24 s stopped at a 1 s horizon
(BENCHMARKS.md "Lookahead teacher decisions/s").
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from training.routing.registry import RouterContext, get_router
from training.simulator.config import ClusterConfig
from training.simulator.engine import ReplayState
from training.simulator.interface import (
    DELAY,
    ClusterView,
    Hold,
    LengthPrediction,
    LengthPredictor,
    RequestView,
    Router,
    predict_lengths,
)
from training.simulator.latency import LatencyModel
from training.simulator.request import Request, RequestStatus
from training.simulator.result import SimResult

STOP_ID = "~lookahead-stop"
"""Request id of the marker arrival that pauses a cheap rollout at its horizon (never scored)."""
_FINISHED = int(RequestStatus.FINISHED)
_PREEMPTED = int(RequestStatus.PREEMPTED)
_RUNNING = (int(RequestStatus.PREFILLING), int(RequestStatus.DECODING))

LOOKAHEAD_OPTION = "lookahead"
"""``RouterContext.options`` key holding a ``LookaheadParams`` (or a dict of its fields)."""


@dataclass(frozen=True)
class LookaheadParams:
    """The teacher's settings. Units: seconds, requests.

    Attributes:
        samples: sampled futures per decision (each shared by every candidate).
        horizon_s: sampled arrivals cover ``[now, now + horizon_s)``; each rollout then drains.
        max_arrivals: at most this many sampled arrivals per future.
        tail_weight: weight of the tail term in the score.
        tail_quantile: quantile of the in-play requests' E2E used as the tail term.
        seed: root seed of the samples (decision ``k``, sample ``j`` use ``[seed, k, j]``).
        base: registered router played in the rollouts (and answering when no choice is left).
        admission: also try ``DELAY`` at each decision (use a ``+hold`` base). When the base answers
            the decision with a ``Hold``, that ``Hold`` is the delay candidate, so the replay offers
            the held request again only when some instance has the base's room (the teacher then
            picks *when* to admit among the moments the base's rule would consider).
        log_uniform: draw a length log-uniformly within its bucket (the first bucket stays uniform)
            instead of uniformly: closer to the skewed lengths inside the registered predictor's wide
            time buckets (uniform overestimates each bucket's mean by about 20 %).
        stop_at_horizon: the cheap teacher: stop each rollout at ``now + horizon_s`` and score the
            requests in play by ``backlog_e2e`` (finished: their E2E; unfinished: elapsed time plus a
            list-scheduling estimate of their remaining time) instead of draining it to the end.
        conservative: keep the base's own answer unless another candidate is significantly better
            (``paired_choice``): its mean paired score difference to the base's answer, sample by
            sample (the same sampled future for both), must be below ``-z`` standard errors and below
            ``-min_margin_s``. False (the default): the lowest summed score wins, as before.
        z: standard errors of the paired mean a deviation needs (``conservative`` only; with one
            sample there is no standard error and only ``min_margin_s`` applies).
        min_margin_s: score seconds (mean E2E of the requests in play plus the tail term) a deviation
            must gain on average (``conservative`` only).
        max_wait_s: with ``admission``, a request that has already waited this long at the router
            (``RequestView.waited_s``) is not delayed again: ``DELAY`` leaves its candidates, so it is
            placed at this offer, even where the base would hold it. A starvation guard for the tail
            (holding the long requests back lowers the mean and raises the p99). It acts at offers
            only: with a ``+hold`` base a held request is offered again when the base's ``Hold``
            wakes, so the wait before that offer is not limited. ``None`` (the default): no limit.
        protect_tokens: with ``admission``, a request the router's predictor expects to be at least
            this long (``RequestView.predicted_output_tokens``: what a served router sees, never the
            truth) is never delayed: it is placed at its offer, even where the base would hold it, so
            the requests likely to make the p99 are not held back behind shorter ones. ``None`` (the
            default): none protected.
    """

    samples: int = 4
    horizon_s: float = 10.0
    max_arrivals: int = 400
    tail_weight: float = 0.5
    tail_quantile: float = 0.9
    seed: int = 0
    base: str = "workload_impact_greedy"
    admission: bool = False
    log_uniform: bool = False
    stop_at_horizon: bool = False
    conservative: bool = False
    z: float = 2.0
    min_margin_s: float = 0.0
    max_wait_s: float | None = None
    protect_tokens: float | None = None

    def __post_init__(self) -> None:
        if self.samples < 1 or self.max_arrivals < 0:
            raise ValueError(f"samples must be >= 1 and max_arrivals >= 0, got {self}")
        if not (self.z >= 0 and self.min_margin_s >= 0):
            raise ValueError(f"z and min_margin_s must be >= 0, got {self}")
        if not (self.horizon_s >= 0 and math.isfinite(self.horizon_s)):
            raise ValueError(f"horizon_s must be finite and >= 0, got {self.horizon_s}")
        if not 0 <= self.tail_quantile <= 1 or self.tail_weight < 0:
            raise ValueError(f"tail_quantile must be in [0, 1] and tail_weight >= 0, got {self}")
        for name in ("max_wait_s", "protect_tokens"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 (or None), got {value}")


COMPARE_PARAMS = LookaheadParams(samples=8, horizon_s=1.0, stop_at_horizon=True)
"""The settings ``loadwise compare --routers ...,lookahead`` uses (the cheap teacher; the seed is the
replay's): ``eval.harness`` puts them in ``RouterContext.options`` when none are given."""


@dataclass(frozen=True)
class Known:
    """What a router knows of a request it has seen: no true output length.

    ``expected`` / ``probs`` / ``edges``: the predictor's answer as the router's view carried it."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    task: str
    prefix_hash_ids: tuple[int, ...] | None
    prompt_text: str | None
    row_id: str | None
    expected: float
    probs: tuple[float, ...] | None
    edges: tuple[float, ...] | None


def known_request(req: Request, rv: RequestView) -> Known:
    """The teacher's record of ``req`` at its first decision: its prompt fields and the view's
    prediction, never ``req.output_tokens``. Who calls this: the driver, once per request."""
    return Known(
        request_id=rv.request_id,
        arrival_s=rv.arrival_s,
        prompt_tokens=rv.prompt_tokens,
        task=rv.task,
        prefix_hash_ids=rv.prefix_hash_ids,
        prompt_text=req.prompt_text,
        row_id=req.row_id,
        expected=float(rv.predicted_output_tokens),
        probs=rv.predicted_bucket_probs,
        edges=rv.predicted_bucket_edges,
    )


class SampledLengths:
    """The replay's predictor, answering for sampled future requests with the prediction of the seen
    request each copies (so a fork can be given them; ``FixedPredictor`` knows only the trace)."""

    def __init__(self, base: LengthPredictor) -> None:
        self.base = base
        self.name = getattr(base, "name", "predictor")
        self.is_oracle = bool(getattr(base, "is_oracle", False))
        self.sampled: dict[str, Known] = {}

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        real = [i for i, r in enumerate(requests) if r.request_id not in self.sampled]
        out = predict_lengths(self.base, [requests[i] for i in real])
        if len(real) == len(requests):
            return out
        expected = np.zeros(len(requests))
        expected[real] = out.expected_tokens
        rows: list[tuple[float, ...] | None] = [None] * len(requests)
        if out.bucket_probs is not None:
            for j, i in enumerate(real):
                rows[i] = tuple(out.bucket_probs[j])
        edges = out.bucket_edges
        for i, r in enumerate(requests):
            src = self.sampled.get(r.request_id)
            if src is not None:
                expected[i], rows[i] = src.expected, src.probs
                edges = edges or src.edges
        if any(row is None for row in rows) or edges is None:
            return LengthPrediction(expected)
        return LengthPrediction(expected, np.array(rows, dtype=np.float64), edges)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens


def _sample_length(
    k: Known, generated: int, rng: np.random.Generator, max_out: int, log_uniform: bool = False
) -> int:
    """An output length for ``k`` longer than ``generated`` tokens (see the module docstring)."""
    floor = generated + 1
    if k.probs is None or k.edges is None:
        out = floor + int(rng.exponential(max(1.0, k.expected - generated)))
        return max(floor, min(out, max_out))
    edges = list(k.edges)
    lows = [0.0, *edges]
    highs = [*edges, 2.0 * max(edges[-1], 1.0)]
    p = np.array([pr if hi >= floor else 0.0 for pr, hi in zip(k.probs, highs, strict=True)])
    if p.sum() <= 0:  # every bucket is below what it has generated: it ends soon
        return max(floor, min(floor + int(rng.exponential(16.0)), max_out))
    b = int(rng.choice(len(p), p=p / p.sum()))
    lo = max(math.floor(lows[b]) + 1, floor)
    hi = max(math.floor(highs[b]), lo)
    if log_uniform and b > 0:
        out = int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
    else:
        out = int(rng.integers(lo, hi + 1))
    return max(floor, min(out, max_out))


def _sample_lengths(
    ks: Sequence[Known],
    generated: np.ndarray,
    rng: np.random.Generator,
    max_out: np.ndarray,
    log_uniform: bool = False,
) -> np.ndarray:
    """``_sample_length`` for many requests at once (the cheap teacher's draws; same distribution,
    another use of the random stream): one length per ``ks[i]``, longer than ``generated[i]`` and at
    most ``max_out[i]``. Who calls this: ``LookaheadTeacher`` with ``stop_at_horizon``. O(n x buckets)."""
    n = len(ks)
    floor = np.asarray(generated, dtype=np.int64) + 1
    out = np.empty(n, dtype=np.int64)
    u_bucket, u_within = rng.random(n), rng.random(n)
    has = np.array([k.probs is not None and k.edges is not None for k in ks], dtype=bool)
    if (~has).any():  # no buckets: 1 + Exp(mean = predicted - generated) more tokens
        expected = np.array([k.expected for k in ks])[~has]
        mean = np.maximum(1.0, expected - (floor[~has] - 1))
        out[~has] = floor[~has] + (-np.log1p(-u_within[~has]) * mean).astype(np.int64)
    if has.any():
        rows = np.flatnonzero(has)
        edges = np.asarray(ks[int(rows[0])].edges, dtype=np.float64)
        lows = np.concatenate(([0.0], edges))
        highs = np.concatenate((edges, [2.0 * max(edges[-1], 1.0)]))
        probs = np.array([ks[int(i)].probs for i in rows], dtype=np.float64)
        f = floor[rows]
        probs = np.where(highs[None, :] >= f[:, None], probs, 0.0)
        total = probs.sum(axis=1)
        ok = total > 0
        cum = np.cumsum(probs, axis=1) / np.where(ok, total, 1.0)[:, None]
        b = np.minimum((u_bucket[rows, None] >= cum).sum(axis=1), len(highs) - 1)
        lo = np.maximum(np.floor(lows[b]).astype(np.int64) + 1, f)
        hi = np.maximum(np.floor(highs[b]).astype(np.int64), lo)
        u = u_within[rows]
        draw = lo + (u * (hi - lo + 1)).astype(np.int64)
        if log_uniform:
            logs = np.exp(np.log(lo) + u * (np.log(hi + 1) - np.log(lo))).astype(np.int64)
            draw = np.where(b > 0, logs, draw)
        # every bucket is below what it has generated: it ends soon
        soon = f + (-np.log1p(-u) * 16.0).astype(np.int64)
        out[rows] = np.where(ok, draw, soon)
    return np.maximum(floor, np.minimum(out, np.asarray(max_out, dtype=np.int64)))


@dataclass(frozen=True)
class PairedStats:
    """One decision's paired comparison of the candidates with the base's own answer.

    ``index``: the candidate the conservative rule picks (the base's unless a deviation is
    significant); ``best``: the candidate with the lowest mean paired difference other than the
    base's (-1 when there is none); ``mean_s`` / ``std_s``: the mean and the standard deviation over
    samples (ddof 1; 0 with one sample) of ``score[best] - score[base]``, in score seconds;
    ``significant``: ``mean_s < -min_margin_s`` and ``mean_s < -z x std_s / sqrt(samples)``."""

    index: int
    base: int
    best: int
    mean_s: float
    std_s: float
    significant: bool


def paired_choice(per_sample: np.ndarray, base: int, z: float, min_margin_s: float) -> PairedStats:
    """The conservative rule on one decision's ``(samples, candidates)`` scores (lower is better).

    Each candidate's difference to the base's answer (column ``base``) is taken sample by sample
    (common random numbers: both saw the same sampled future and lengths); the candidate with the
    lowest mean difference replaces the base's answer only when that mean is below ``-min_margin_s``
    and below ``-z`` standard errors of the mean (no standard error with one sample: the margin
    alone decides). Ties keep the base. Who calls this: ``LookaheadTeacher.decide``. O(samples x
    candidates)."""
    n, m = per_sample.shape
    if m < 2:
        return PairedStats(base, base, -1, 0.0, 0.0, False)
    diff = per_sample - per_sample[:, [base]]
    mean = diff.mean(axis=0)
    mean[base] = np.inf
    best = int(np.argmin(mean))
    std = float(diff[:, best].std(ddof=1)) if n > 1 else 0.0
    gain = -float(mean[best])
    significant = gain > min_margin_s and gain > z * std / math.sqrt(n)
    return PairedStats(best if significant else base, base, best, -gain, std, significant)


@dataclass
class LookaheadTeacher:
    """Picks each decision by rollouts; see the module docstring. One per replay (it keeps what it
    has seen). ``decide`` is called by the driver with the state at its pending decision; it forks
    the state and never drives the original."""

    params: LookaheadParams
    ctx: RouterContext
    predictor: SampledLengths
    seen: dict[str, Known] = field(default_factory=dict)
    decisions: int = 0
    rollouts: int = 0
    wall_s: float = 0.0
    fork_s: float = 0.0
    """Wall seconds spent in ``ReplayState.fork`` (forks/s = rollouts / fork_s)."""
    _own: Router | None = None
    paired: list[PairedStats] = field(default_factory=list)
    """Each decision's paired comparison with the base's answer (``paired_choice``), in order."""
    is_oracle: ClassVar[bool] = False
    """True only for the labelled diagnostic that reads the trace's truth (``eval.lookahead_oracle``);
    ``simulate_with_lookahead`` and the distillation refuse such a teacher."""

    def observe(self, k: Known) -> None:
        self.seen.setdefault(k.request_id, k)

    def _own_base(self) -> Router:
        """The base router that answers the replay's decisions (the conservative teacher's default
        answer): one router, reset once with ``params.seed`` and asked at every decision, as a plain
        replay of the base with that seed asks it (its tie-breaks and memory are that replay's)."""
        if self._own is None:
            self._own = self._base(self.params.seed)
        return self._own

    def _base(self, seed: int) -> Router:
        router = get_router(self.params.base, self.ctx)
        router.reset(self.ctx.num_instances, seed)
        return router

    def _future(self, now: float, rng: np.random.Generator, max_out: Callable[[int], int]) -> list[Request]:
        """Sampled arrivals over the horizon; registers each one's prediction with ``self.predictor``."""
        p = self.params
        seen = list(self.seen.values())
        if len(seen) < 2 or p.horizon_s <= 0 or p.max_arrivals == 0:
            return []
        first = seen[0].arrival_s  # seen in arrival order
        if now <= first:
            return []
        rate = len(seen) / (now - first)
        out: list[Request] = []
        t = now
        while len(out) < p.max_arrivals:
            t += float(rng.exponential(1.0 / rate))
            if t >= now + p.horizon_s:
                break
            src = seen[int(rng.integers(len(seen)))]
            length = _sample_length(src, 0, rng, max_out(src.prompt_tokens), p.log_uniform)
            rid = f"~lookahead{len(out)}"
            self.predictor.sampled[rid] = src
            out.append(
                Request(
                    rid,
                    t,
                    src.prompt_tokens,
                    length,
                    src.task,
                    src.prefix_hash_ids,
                    src.prompt_text,
                    src.row_id,
                )
            )
        return out

    def _future_fast(self, now: float, rng: np.random.Generator, cap_tokens: int) -> list[Request]:
        """``_future`` with vectorized draws (the cheap teacher): the same model of the arrivals."""
        p = self.params
        seen = list(self.seen.values())
        if len(seen) < 2 or p.horizon_s <= 0 or p.max_arrivals == 0 or now <= seen[0].arrival_s:
            return []
        rate = len(seen) / (now - seen[0].arrival_s)
        gaps = rng.exponential(1.0 / rate, p.max_arrivals)
        times = now + np.cumsum(gaps)
        m = int(np.searchsorted(times, now + p.horizon_s, side="left"))
        if m == 0:
            return []
        src = [seen[int(i)] for i in rng.integers(len(seen), size=m)]
        caps = np.array([max(1, cap_tokens - k.prompt_tokens + 1) for k in src])
        lengths = _sample_lengths(src, np.zeros(m, dtype=np.int64), rng, caps, p.log_uniform)
        out = []
        for j, (k, t, length) in enumerate(zip(src, times[:m].tolist(), lengths.tolist(), strict=True)):
            rid = f"~lookahead{j}"
            self.predictor.sampled[rid] = k
            out.append(
                Request(rid, t, k.prompt_tokens, length, k.task, k.prefix_hash_ids, k.prompt_text, k.row_id)
            )
        return out

    def decide(self, state: ReplayState, rv: RequestView, cv: ClusterView) -> int:
        """The teacher's answer to the pending decision of ``state`` (which this call does not drive).

        Every candidate's score is computed per sample (``_sample_scores``); the plain teacher picks
        the lowest sum (ties: the lowest index), the ``conservative`` one keeps the base's answer
        unless ``paired_choice`` finds a significantly better candidate. Either way the paired
        comparison with the base's answer is recorded in ``self.paired`` (when the base's answer is a
        candidate)."""
        t0 = time.perf_counter()
        p = self.params
        k = self.decisions
        self.decisions += 1
        candidates: list[int] = list(cv.accepting)
        own = self._own_base().route(rv, cv)  # the base policy's answer, its router kept over the replay
        may_wait = (p.max_wait_s is None or rv.waited_s < p.max_wait_s) and (  # the tail's guards
            p.protect_tokens is None or rv.predicted_output_tokens < p.protect_tokens
        )
        if p.admission and may_wait:  # DELAY, as the base's Hold when it answers one (replay skips offers)
            hold = own if p.conservative else self._base(p.seed + k).route(rv, cv)
            candidates.append(hold if isinstance(hold, Hold) else DELAY)
        if len(candidates) <= 1:
            if candidates:
                choice = candidates[0]
            else:
                choice = own if p.conservative else self._base(p.seed + k).route(rv, cv)
            self.wall_s += time.perf_counter() - t0
            return choice if isinstance(choice, Hold) else int(choice)
        per_sample = self._sample_scores(state, candidates, k)
        scores = np.zeros(len(candidates))
        for row in per_sample:  # summed sample by sample, as the scores always were
            scores += row
        choice = candidates[int(np.argmin(scores))]  # ties: the first candidate (lowest index)
        base_index = candidates.index(own) if own in candidates else None
        if base_index is not None:
            stats = paired_choice(per_sample, base_index, p.z, p.min_margin_s)
            self.paired.append(stats)
            if p.conservative:
                choice = candidates[stats.index]
        self.wall_s += time.perf_counter() - t0
        return choice

    def _sample_scores(self, state: ReplayState, candidates: list[int], k: int) -> np.ndarray:
        """``(samples, candidates)`` scores of decision ``k``: row ``j`` is sample ``j``'s world (its
        lengths and future, seeded ``[seed, k, j]``), the same for every candidate."""
        p = self.params
        icfg = state.config.instance
        cap_tokens = icfg.total_kv_blocks * icfg.block_size
        unfinished = state.unfinished()
        out = np.zeros((p.samples, len(candidates)))
        for j in range(p.samples):
            rng = np.random.default_rng([p.seed, k, j])
            lengths = self._draw_lengths(unfinished, rng, cap_tokens)
            future = self._draw_future(state.now_s, rng, cap_tokens)
            if p.stop_at_horizon:
                out[j] = self._horizon_scores(state, candidates, unfinished, lengths, future, k, j)
                continue
            in_play = {rid for rid, _ in unfinished} | {r.request_id for r in future}
            for c, action in enumerate(candidates):
                t_fork = time.perf_counter()
                fork = state.fork(future=future, lengths=lengths)
                self.fork_s += time.perf_counter() - t_fork
                fork.decide(action)
                res = fork.run(self._base(p.seed + 7919 * k + j).route)
                self.rollouts += 1
                out[j, c] = _score(res, in_play, p)
        return out

    def _draw_lengths(
        self, unfinished: list[tuple[str, int]], rng: np.random.Generator, cap_tokens: int
    ) -> dict[str, int]:
        """Sampled output lengths of the unfinished requests (longer than what each has streamed)."""
        p = self.params
        if p.stop_at_horizon:  # vectorized draws
            ks = [self.seen[rid] for rid, _ in unfinished]
            done = np.array([g for _, g in unfinished], dtype=np.int64)
            caps = np.array([max(1, cap_tokens - x.prompt_tokens + 1) for x in ks], dtype=np.int64)
            drawn = _sample_lengths(ks, done, rng, caps, p.log_uniform).tolist()
            return {rid: d for (rid, _), d in zip(unfinished, drawn, strict=True)}
        return {
            rid: _sample_length(
                self.seen[rid], g, rng, max(1, cap_tokens - self.seen[rid].prompt_tokens + 1), p.log_uniform
            )
            for rid, g in unfinished
        }

    def _draw_future(self, now: float, rng: np.random.Generator, cap_tokens: int) -> list[Request]:
        """Sampled arrivals over ``[now, now + horizon_s)`` (see ``_future``)."""
        if self.params.stop_at_horizon:
            return self._future_fast(now, rng, cap_tokens)
        return self._future(now, rng, lambda prompt: max(1, cap_tokens - prompt + 1))

    def _horizon_scores(
        self,
        state: ReplayState,
        candidates: list[int],
        unfinished: list[tuple[str, int]],
        lengths: dict[str, int],
        future: list[Request],
        k: int,
        j: int,
    ) -> np.ndarray:
        """One sample's score of each candidate, rollouts stopped at ``now + horizon_s`` (the cheap
        teacher): each fork plays the candidate, then the base router until the stop time, and the
        requests in play are scored by ``backlog_e2e``. A marker arrival at the stop time (never
        scored) makes every rollout pause there, even when no other decision comes."""
        p = self.params
        latency_model = self.ctx.latency_model
        if latency_model is None:
            raise ValueError("the cheap teacher (stop_at_horizon) needs RouterContext.latency_model")
        stop = state.now_s + p.horizon_s
        src = next(iter(self.seen.values()))
        self.predictor.sampled[STOP_ID] = src
        marker = Request(STOP_ID, stop, 1, 1, src.task)
        ids = [rid for rid, _ in unfinished] + [r.request_id for r in future]
        known = [self.seen[rid] for rid, _ in unfinished]
        arrival = [x.arrival_s for x in known] + [r.arrival_s for r in future]
        prompt = [x.prompt_tokens for x in known] + [r.prompt_tokens for r in future]
        out_tokens = [lengths[rid] for rid, _ in unfinished] + [r.output_tokens for r in future]
        scores = np.zeros(len(candidates))
        t_fork = time.perf_counter()
        sample = state.fork(future=[*future, marker], lengths=lengths)  # this sample's world, forked
        self.fork_s += time.perf_counter() - t_fork  # once per candidate below (a plain copy is cheap)
        for c, action in enumerate(candidates):
            t_fork = time.perf_counter()
            fork = sample.fork()
            self.fork_s += time.perf_counter() - t_fork
            fork.decide(action)
            route = self._base(p.seed + 7919 * k + j).route
            while (decision := fork.next_decision()) is not None:
                rv, cv = decision
                if rv.now_s >= stop:
                    break
                fork.decide(route(rv, cv))
            self.rollouts += 1
            e2e = backlog_e2e(
                fork.progress(ids),
                fork.now_s,
                arrival,
                prompt,
                out_tokens,
                state.config,
                latency_model,
            )
            scores[c] = _score_e2e(e2e, p)
        return scores


def backlog_e2e(
    progress: Sequence[tuple[float, int, int, int]],
    now_s: float,
    arrival_s: Sequence[float],
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    config: ClusterConfig,
    latency_model: LatencyModel,
) -> np.ndarray:
    """Estimated E2E (s) of each request of a rollout stopped at ``now_s`` (the cheap teacher's score).

    ``progress``: ``ReplayState.progress`` of the requests; ``output_tokens``: the rollout's *sampled*
    lengths (never the trace's). A finished request counts its E2E. An unfinished one counts its
    elapsed time plus an estimate of its remaining time, on the instance it is on, with no more
    arrivals (what a drained rollout of the same sampled future models): per instance, the running
    batch keeps its requests, the queue (preempted first, then arrival order) and then the requests
    held at the router (each on the instance whose first slot frees first) are list-scheduled onto
    ``c`` batch slots, ``c`` = what fits the KV cache at the requests' mean footprint (prompt plus
    half their output; at most ``max_batch_size``, at least the running batch). A request needs its
    remaining tokens in decode iterations (one more for a prefill); an iteration lasts the latency
    model's decode iteration with ``min(c, requests on the instance)`` requests, and every prefill
    started before a request ends adds its prefill time. Cost: O(requests x log c), no allocation per token.
    Who calls this: ``LookaheadTeacher`` (``stop_at_horizon``)."""
    icfg = config.instance
    cap_tokens = icfg.total_kv_blocks * icfg.block_size
    n = len(progress)
    e2e = np.empty(n)
    gen = [0] * n
    running: list[list[int]] = [[] for _ in range(config.num_instances)]
    queued: list[list[int]] = [[] for _ in range(config.num_instances)]
    held: list[int] = []
    for i, (finish, status, inst, generated) in enumerate(progress):
        if status == _FINISHED:
            e2e[i] = finish - arrival_s[i]
            continue
        gen[i] = generated
        e2e[i] = max(0.0, now_s - arrival_s[i])
        if inst < 0:
            held.append(i)
        elif status in _RUNNING:
            running[inst].append(i)
        else:
            queued[inst].append(i)
    open_ = [i for i in range(n) if progress[i][1] != _FINISHED]
    if not open_:
        return e2e
    base_s = latency_model.iteration_time(0, 0.0, 0, 0)

    def prefill_s(tokens: int) -> float:
        return max(0.0, latency_model.iteration_time(tokens, float(tokens) ** 2, 0, 0) - base_s)

    def footprint(idx: list[int]) -> float:
        return sum(prompt_tokens[i] + (gen[i] + output_tokens[i]) / 2 for i in idx) / len(idx)

    overall = footprint(open_)
    slots: list[list[int]] = []
    feet: list[float] = []
    starts: list[list[int]] = []
    prefills: list[list[float]] = []
    placed: list[list[tuple[int, int]]] = []  # (request, finish iteration)

    def tau(k: int, extra: int = 0) -> float:  # one decode iteration of instance k, in seconds
        b = max(1, min(len(slots[k]), len(placed[k]) + extra))
        return latency_model.iteration_time(0, 0.0, b, int(b * feet[k]))

    for k in range(config.num_instances):
        mine = running[k] + queued[k]
        foot = footprint(mine) if mine else overall
        feet.append(foot)
        c = max(1, min(icfg.max_batch_size, int(cap_tokens // max(foot, 1.0))), len(running[k]))
        heap = [max(1, output_tokens[i] - gen[i]) for i in running[k]]
        placed.append(list(zip(running[k], heap, strict=True)))
        heap += [0] * (c - len(heap))
        heapq.heapify(heap)
        slots.append(heap)
        starts.append([])
        prefills.append([])
        queued[k].sort(key=lambda i: (progress[i][1] != _PREEMPTED, arrival_s[i]))

    def put(k: int, i: int) -> None:
        start = heapq.heappop(slots[k])
        end = start + 1 + max(1, output_tokens[i] - gen[i])
        heapq.heappush(slots[k], end)
        starts[k].append(start)
        prefills[k].append(prefill_s(prompt_tokens[i] + gen[i]))
        placed[k].append((i, end))

    for k in range(config.num_instances):
        for i in queued[k]:
            put(k, i)
    for i in sorted(held, key=lambda i: arrival_s[i]):
        put(min(range(config.num_instances), key=lambda k: slots[k][0] * tau(k, 1)), i)
    for k in range(config.num_instances):
        cum = np.concatenate(([0.0], np.cumsum(prefills[k])))
        t_k = tau(k)
        for i, end in placed[k]:
            e2e[i] += end * t_k + cum[bisect.bisect_left(starts[k], end)]
    return e2e


def _score(res: SimResult, in_play: set[str], p: LookaheadParams) -> float:
    """Mean E2E (s) of the requests in play plus ``tail_weight`` x their ``tail_quantile`` E2E."""
    mask = np.fromiter((rid in in_play for rid in res.request_ids), dtype=bool, count=len(res.request_ids))
    return _score_e2e(np.asarray(res.e2e_s)[mask], p)


def _score_e2e(e2e: np.ndarray, p: LookaheadParams) -> float:
    """Mean of ``e2e`` (s) plus ``tail_weight`` x its ``tail_quantile``; 0 when empty."""
    if e2e.size == 0:
        return 0.0
    return float(e2e.mean() + p.tail_weight * np.quantile(e2e, p.tail_quantile))


@dataclass
class LookaheadRun:
    """``simulate_with_lookahead``'s result: the replay's ``SimResult``, the teacher's answers in
    decision order, and its cost (decisions, rollouts, wall seconds spent deciding)."""

    result: SimResult
    choices: list[int]
    decision_s: list[float]
    """Simulated time of each decision (s)."""
    decisions: int
    rollouts: int
    teacher_wall_s: float
    fork_wall_s: float = 0.0
    """Wall seconds of the teacher spent in ``ReplayState.fork`` (forks/s = rollouts / fork_wall_s)."""
    paired: list[PairedStats] = field(default_factory=list)
    """The teacher's paired comparisons with its base, one per decision with a choice (``decide``)."""
    oracle: bool = False
    """True for the diagnostic teacher that read the trace's truth (``eval.lookahead_oracle``)."""


def simulate_with_lookahead(
    requests: Sequence[Request],
    config: ClusterConfig,
    latency_model: LatencyModel,
    predictor: LengthPredictor,
    ctx: RouterContext,
    params: LookaheadParams | None = None,
    fast_forward: bool = True,
) -> LookaheadRun:
    """Replay ``requests`` with the lookahead teacher routing every request.

    The driver owns the ``ReplayState``: at each decision it records what the router knows of the
    request (``known_request``) and asks the teacher with the state in hand. The teacher's forks never
    touch the replay, so its result equals a plain replay of ``choices``
    (tests/training/routing/test_lookahead.py). Who calls this: headroom measurements and (later)
    distillation data generation; the ``lookahead`` registry entry's ``simulate``. Seeded by
    ``params.seed``: the same inputs give the same choices."""
    params = params or LookaheadParams()
    wrapped = SampledLengths(predictor)
    return drive_teacher(
        requests, config, latency_model, LookaheadTeacher(params, ctx, wrapped), fast_forward
    )


def drive_teacher(
    requests: Sequence[Request],
    config: ClusterConfig,
    latency_model: LatencyModel,
    teacher: LookaheadTeacher,
    fast_forward: bool = True,
    *,
    allow_oracle: bool = False,
) -> LookaheadRun:
    """The driver of ``simulate_with_lookahead``: replay ``requests`` with ``teacher`` answering every
    decision (its ``predictor`` is the replay's). A teacher that reads the truth (``is_oracle``) is
    refused unless ``allow_oracle`` (only the labelled diagnostic ``eval.lookahead_oracle`` passes
    it). Who calls this: ``simulate_with_lookahead``, the oracle diagnostic."""
    if teacher.is_oracle and not allow_oracle:
        raise ValueError(
            "an oracle lookahead teacher reads the trace's true lengths and future: diagnostic only "
            "(eval.lookahead_oracle), never a router, a label source or a registered model"
        )
    by_id = {r.request_id: r for r in requests}
    name = "lookahead-ORACLE" if teacher.is_oracle else "lookahead"
    state = ReplayState(requests, config, latency_model, teacher.predictor, fast_forward, router_name=name)
    choices: list[int] = []
    times: list[float] = []
    while (decision := state.next_decision()) is not None:
        rv, cv = decision
        if rv.request_id not in teacher.seen:
            teacher.observe(known_request(by_id[rv.request_id], rv))
        choice = teacher.decide(state, rv, cv)
        choices.append(choice)
        times.append(state.now_s)
        state.decide(choice)
    return LookaheadRun(
        state.result,
        choices,
        times,
        teacher.decisions,
        teacher.rollouts,
        teacher.wall_s,
        teacher.fork_s,
        list(teacher.paired),
        teacher.is_oracle,
    )


class LookaheadRouter:
    """The registry's ``lookahead`` entry: not a view-only router (``route`` refuses), but a carrier of
    the settings whose ``simulate`` runs ``simulate_with_lookahead`` with them."""

    name = "lookahead"

    def __init__(self, ctx: RouterContext) -> None:
        raw = ctx.options[LOOKAHEAD_OPTION]
        self.params = raw if isinstance(raw, LookaheadParams) else LookaheadParams(**dict(raw))  # type: ignore[call-overload]
        self.ctx = ctx

    def reset(self, num_instances: int, seed: int) -> None:
        self.seed = seed

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        raise RuntimeError(
            "router 'lookahead' needs the replay state: run it with "
            "training.routing.lookahead.simulate_with_lookahead (or LookaheadRouter.simulate)"
        )

    def simulate(
        self,
        requests: Sequence[Request],
        config: ClusterConfig,
        latency_model: LatencyModel,
        predictor: LengthPredictor,
        seed: int | None = None,
    ) -> LookaheadRun:
        """Replay ``requests`` with the teacher (``simulate_with_lookahead``); ``seed`` (the replay's,
        as ``eval.harness.replay_job`` passes it) replaces ``params.seed`` when given."""
        params = self.params if seed is None else replace(self.params, seed=seed)
        return simulate_with_lookahead(requests, config, latency_model, predictor, self.ctx, params)


def make_router(ctx: RouterContext) -> LookaheadRouter:
    """Factory of the lazy registry entry ``lookahead``."""
    return LookaheadRouter(ctx)
