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
``RouterContext.options["lookahead"]`` (so ``--routers all`` and the contract suite leave it out);
its router's ``simulate`` runs this driver.

Who calls this: evaluation scripts measuring the teacher's headroom (docs/rl_router.md "Lookahead
teacher"); later, the distillation's data generation. Cost: candidates x samples full rollouts per
decision (1-2 s per decision on the paper's main setting with 4 instances and 4 samples, against
28 ms for a whole greedy replay of 300 requests: docs/rl_router.md "Lookahead teacher").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from training.routing.registry import RouterContext, get_router
from training.simulator.config import ClusterConfig
from training.simulator.engine import ReplayState
from training.simulator.interface import (
    DELAY,
    ClusterView,
    LengthPrediction,
    LengthPredictor,
    RequestView,
    Router,
    predict_lengths,
)
from training.simulator.latency import LatencyModel
from training.simulator.request import Request
from training.simulator.result import SimResult

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
        admission: also try ``DELAY`` at each decision (use a ``+hold`` base).
        log_uniform: draw a length log-uniformly within its bucket (the first bucket stays uniform)
            instead of uniformly: closer to the skewed lengths inside the registered predictor's wide
            time buckets (uniform overestimates each bucket's mean by about 20 %).
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

    def __post_init__(self) -> None:
        if self.samples < 1 or self.max_arrivals < 0:
            raise ValueError(f"samples must be >= 1 and max_arrivals >= 0, got {self}")
        if not (self.horizon_s >= 0 and math.isfinite(self.horizon_s)):
            raise ValueError(f"horizon_s must be finite and >= 0, got {self.horizon_s}")
        if not 0 <= self.tail_quantile <= 1 or self.tail_weight < 0:
            raise ValueError(f"tail_quantile must be in [0, 1] and tail_weight >= 0, got {self}")


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


class _WithSampled:
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


@dataclass
class LookaheadTeacher:
    """Picks each decision by rollouts; see the module docstring. One per replay (it keeps what it
    has seen). ``decide`` is called by the driver with the state at its pending decision; it forks
    the state and never drives the original."""

    params: LookaheadParams
    ctx: RouterContext
    predictor: _WithSampled
    seen: dict[str, Known] = field(default_factory=dict)
    decisions: int = 0
    rollouts: int = 0
    wall_s: float = 0.0

    def observe(self, k: Known) -> None:
        self.seen.setdefault(k.request_id, k)

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

    def decide(self, state: ReplayState, rv: RequestView, cv: ClusterView) -> int:
        """The teacher's answer to the pending decision of ``state`` (which this call does not drive)."""
        t0 = time.perf_counter()
        p = self.params
        k = self.decisions
        self.decisions += 1
        candidates = list(cv.accepting) + ([DELAY] if p.admission else [])
        if len(candidates) <= 1:
            choice = candidates[0] if candidates else self._base(p.seed + k).route(rv, cv)
            self.wall_s += time.perf_counter() - t0
            return int(choice)
        icfg = state.config.instance
        cap_tokens = icfg.total_kv_blocks * icfg.block_size

        def max_out(prompt: int) -> int:
            return max(1, cap_tokens - prompt + 1)

        unfinished = state.unfinished()
        scores = np.zeros(len(candidates))
        for j in range(p.samples):
            rng = np.random.default_rng([p.seed, k, j])
            lengths = {
                rid: _sample_length(
                    self.seen[rid], g, rng, max_out(self.seen[rid].prompt_tokens), p.log_uniform
                )
                for rid, g in unfinished
            }
            future = self._future(state.now_s, rng, max_out)
            in_play = {rid for rid, _ in unfinished} | {r.request_id for r in future}
            for c, action in enumerate(candidates):
                fork = state.fork(future=future, lengths=lengths)
                fork.decide(action)
                res = fork.run(self._base(p.seed + 7919 * k + j).route)
                self.rollouts += 1
                scores[c] += _score(res, in_play, p)
        choice = candidates[int(np.argmin(scores))]  # ties: the first candidate (lowest index)
        self.wall_s += time.perf_counter() - t0
        return int(choice)


def _score(res: SimResult, in_play: set[str], p: LookaheadParams) -> float:
    """Mean E2E (s) of the requests in play plus ``tail_weight`` x their ``tail_quantile`` E2E."""
    mask = np.fromiter((rid in in_play for rid in res.request_ids), dtype=bool, count=len(res.request_ids))
    e2e = np.asarray(res.e2e_s)[mask]
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
    wrapped = _WithSampled(predictor)
    by_id = {r.request_id: r for r in requests}
    teacher = LookaheadTeacher(params, ctx, wrapped)
    state = ReplayState(requests, config, latency_model, wrapped, fast_forward, router_name="lookahead")
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
    return LookaheadRun(state.result, choices, times, teacher.decisions, teacher.rollouts, teacher.wall_s)


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
    ) -> LookaheadRun:
        return simulate_with_lookahead(requests, config, latency_model, predictor, self.ctx, self.params)


def make_router(ctx: RouterContext) -> LookaheadRouter:
    """Factory of the lazy registry entry ``lookahead``."""
    return LookaheadRouter(ctx)
