"""The one event loop of a trace replay: ``ReplayState`` (forkable), driven by ``simulate`` and ``replay``.

Who calls this: the eval harness, the RL env, benchmarks and tests (``simulate`` / ``replay``); the
lookahead teacher of the learned router (``ReplayState.fork``: play candidate actions forward from a
copy of a replay in progress). One replay places a list of requests through a router onto
``config.num_instances`` instances and returns a ``SimResult``. ``simulate`` calls
``router.reset(num_instances, seed)`` first; the replay asks the predictor once (``predict_lengths``).
Time comes from events only; the simulator itself draws no random numbers (routers get ``seed``), so
the same inputs and seed give bit-identical arrays. Event order at equal times: see ``event_order``.

The loop's state is an object, not a generator frame, so that it can be copied mid-way
(``ReplayState.fork``); ``simulate`` and ``replay`` are thin drivers over it and give the results they
gave as a generator loop (tests/test_replay_digest.py).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from training.simulator.cluster import Cluster
from training.simulator.config import ClusterConfig, RouterQueueOrder
from training.simulator.event_order import ARRIVAL, ITERATION_END, ROUTER_TICK, SCHEDULE
from training.simulator.interface import (
    DELAY,
    ClusterView,
    Hold,
    LengthPredictor,
    RequestView,
    Router,
    predict_lengths,
)
from training.simulator.latency import IterationObserver, LatencyModel
from training.simulator.request import Request, RequestStatus
from training.simulator.result import SimResult
from training.simulator.state import ReqState, fork_state

MAX_IDLE_TICKS = 100_000
"""Consecutive decision ticks a router may hold requests while nothing else can happen (an idle
cluster, no arrivals left) before the replay stops with ``RoutingError`` instead of looping forever."""

PRED_QUANTUM = 1024.0
"""Predicted output lengths are rounded to 1/PRED_QUANTUM token (see ``simulate``)."""

Route = Callable[[RequestView, ClusterView], int]
"""A routing decision: ``Router.route`` or any function of the two views (an instance index, DELAY or
a ``Hold``)."""

_PLACED, _DELAYED, _HELD = 0, 1, 2  # outcomes of one answer
_INF = float("inf")


class RoutingError(RuntimeError):
    """The router returned an index that is not an accepting instance."""


def _cacheable(req: Request, prefix_tokens: int, enabled: bool) -> tuple[int, ...]:
    """The request's full prefix blocks that may be cached: at most prompt // prefix_tokens ids, cut
    at the first repeated id (hash chains never repeat within a prompt; a repeat would double-count)."""
    ids = req.prefix_hash_ids
    if not enabled or not ids:
        return ()
    out: list[int] = []
    seen: set[int] = set()
    for pid in ids[: req.prompt_tokens // prefix_tokens]:
        if pid in seen:
            break
        seen.add(pid)
        out.append(pid)
    return tuple(out)


def simulate(
    requests: Sequence[Request],
    router: Router,
    config: ClusterConfig,
    latency_model: LatencyModel,
    predictor: LengthPredictor,
    seed: int = 0,
    fast_forward: bool = True,
    iteration_observer: IterationObserver | None = None,
) -> SimResult:
    """Replay ``requests`` (any order; arrival_s decides) and return per-request timings.

    Args:
        requests: the trace; results are in this order. request_id must be unique.
        router: decides at arrival and, after ``DELAY``, at every decision tick (after a ``Hold``,
            at the ticks where some instance has the room it asked for: ``interface.Hold``). A router
            with a true ``needs_request_stats`` attribute (the learned one) gets
            ``config.request_stats`` on.
        config: cluster shape, instance engine settings, router tick.
        latency_model: iteration time from batch composition.
        predictor: predicted output lengths (read by routers and LWL/BINPACK queue policies).
        seed: passed to ``router.reset``; the only randomness of a replay.
        fast_forward: schedule decode-only stretches (same composition until a finish, a possible
            KV shortage, or a request routed to the instance) in one event instead of one event per
            iteration. Results are bit-identical to ``fast_forward=False`` (step by step).
        iteration_observer: called once per engine iteration with its batch composition and
            duration (``latency.IterationObserver``); needs ``fast_forward=False``.

    Raises:
        RoutingError: the router picked an instance not in ``cluster.accepting``.
        ValueError: duplicate request ids, or a request that can never fit in one instance's KV cache.
    """
    router.reset(config.num_instances, seed)
    if getattr(router, "needs_request_stats", False) and not config.request_stats:
        config = replace(config, request_stats=True)  # routers that declare it see per-request stats
    state = ReplayState(
        requests,
        config,
        latency_model,
        predictor,
        fast_forward,
        router_name=getattr(router, "name", "router"),
        iteration_observer=iteration_observer,
    )
    return state.run(router.route)


def replay(
    requests: Sequence[Request],
    config: ClusterConfig,
    latency_model: LatencyModel,
    predictor: LengthPredictor,
    fast_forward: bool = True,
    router_name: str = "router",
    iteration_observer: IterationObserver | None = None,
) -> Generator[tuple[RequestView, ClusterView], int, SimResult]:
    """The replay with the routing decisions handed to the caller (the RL env drives it).

    A generator over a ``ReplayState``: each ``next``/``send`` returns the next decision point
    ``(RequestView, ClusterView)``; answer it with ``send(instance_index_or_DELAY_or_Hold)``. When the
    trace is done it raises ``StopIteration`` whose ``value`` is the ``SimResult``. A driver that needs
    to fork the replay uses ``ReplayState`` directly (a generator cannot be copied).
    """
    state = ReplayState(
        requests, config, latency_model, predictor, fast_forward, router_name, iteration_observer
    )
    while (decision := state.next_decision()) is not None:
        state.decide((yield decision))
    return state.result


class ReplayState:
    """A replay in progress: the event heap, the clock, the router's held queue, the per-request
    states and the cluster. Advances from one routing decision to the next.

    Drive it with ``next_decision()`` (the pending ``(RequestView, ClusterView)``, or None when the
    replay is over) and ``decide(choice)``, or to the end with ``run(route)``; then read ``result``.
    ``fork()`` returns an independent copy that replays bit-identically to this one from the fork
    point when given the same choices (tests/training/simulator/test_engine_fork.py), and may be given
    a different future (``fork(future=..., lengths=...)``).

    Held requests (``DELAY``) are offered again at every decision tick, ``config.decision_interval_s``
    apart on a grid anchored at the arrival that started the holding. A request answered with
    ``Hold(room_blocks)`` (``interface.Hold``, equal to ``DELAY``) is offered at a tick only when some
    instance has that room (accepting, and empty or ``kv_total_blocks - committed >= room_blocks``);
    otherwise the router's answer is known (DELAY, no state change) and it is not asked. When every
    held request answered a ``Hold`` and no instance has the smallest room asked, the replay sleeps:
    no tick is scheduled until an instance event (a finish, a KV release, an admission) gives some
    instance that room, or an arrival is answered DELAY, then the next tick of the grid runs. The
    skipped offers and ticks are ones where nothing would have happened, so the results are those
    of offering everything at every tick (tests/training/simulator/test_engine_hold.py). Asleep, an
    instance event costs one O(1) comparison and a tick costs nothing. With ``max_router_wait_s``
    set the replay never sleeps (the fallback may place a held request at any tick), and a skipped
    offer still gets the fallback, as a DELAY does.

    Not thread-safe; one driver at a time. Mutates nothing it is given (requests are immutable).
    """

    def __init__(
        self,
        requests: Sequence[Request],
        config: ClusterConfig,
        latency_model: LatencyModel,
        predictor: LengthPredictor,
        fast_forward: bool = True,
        router_name: str = "router",
        iteration_observer: IterationObserver | None = None,
    ) -> None:
        self._wall0 = time.perf_counter()
        requests = list(requests)
        n = len(requests)
        icfg = config.instance
        index = {r.request_id: i for i, r in enumerate(requests)}
        if len(index) != n:
            raise ValueError("request_id values must be unique within one replay")
        if iteration_observer is not None and fast_forward:
            raise ValueError("an iteration_observer needs fast_forward=False (a stretch is one event)")
        self.config = config
        self.router_name = router_name
        self._predictor = predictor
        self._bs = icfg.block_size
        self._cap = icfg.total_kv_blocks
        self.requests = requests
        """The replayed requests by index: the input, then the ``future`` of forks (results keep
        this order, minus the requests a fork's ``future`` replaced)."""
        self._index = index
        self._keep: list[bool] | None = None  # None: every request is in the result
        self._output = [r.output_tokens for r in requests]
        for i, req in enumerate(requests):
            self._check_fits(req, self._output[i])
        preds, probs, edges = self._predict(requests)
        self._edges = edges
        self._preds = preds
        self._probs = probs
        self._cacheable = [_cacheable(r, icfg.prefix_block_tokens, icfg.prefix_caching) for r in requests]
        self._states: list[ReqState | None] = [None] * n  # made at arrival

        self._cluster = Cluster(config, latency_model, fast_forward, iteration_observer)
        self._instances = self._cluster.instances
        self._interval = config.decision_interval_s
        self._max_wait = config.max_router_wait_s
        self._shortest_first = config.router_queue_order is RouterQueueOrder.SHORTEST
        self._aging = config.router_queue_aging_tokens_per_s

        # Arrivals are known up front: a sorted list read by a cursor, merged with the heap of the
        # other events by the same tuple order (so the heap stays small and a fork copies only it).
        self._arrivals: list[tuple[float, int, int, int]] = sorted(
            [(req.arrival_s, ARRIVAL, i, 0) for i, req in enumerate(requests)]
        )
        self._next_arrival = 0
        self._heap: list[tuple[float, int, int, int]] = []
        self._held: list[ReqState] = []  # at the router, in arrival order
        self.now_s = 0.0
        """Simulated time of the last event (of the pending decision while one is pending)."""
        self.decisions = 0
        """Routing decisions answered so far (router calls; offers skipped under ``Hold`` not counted)."""
        self._tick_anchor = 0.0
        self._tick_count = 0
        self._tick_pending = False  # a ROUTER_TICK is in the heap
        self._idle_ticks = 0
        self._asleep = False  # every held request answered a Hold: no tick in the heap until a wake
        self._need: dict[int, float] = {}  # held request -> room_blocks of its latest Hold answer
        self._min_need = 0.0  # asleep: the smallest room any held request waits for
        # the tick being offered: (time, held requests in offer order, next position, still held)
        self._tick_t = 0.0
        self._tick_order: list[ReqState] | None = None
        self._tick_j = 0
        self._tick_still: list[ReqState] = []
        self._tick_all_hold = True
        self._tick_room: float | None = None  # the largest room of an instance now (None: unknown)
        self._pending: tuple[int, ReqState, RequestView, ClusterView] | None = None
        self._result: SimResult | None = None

    # ------------------------------------------------------------------ setup helpers
    def _check_fits(self, req: Request, output: int) -> None:
        # The last output token is sampled but never fed back, so its KV is never stored: a request
        # holds at most prompt + output - 1 tokens of KV (its last decode, or a recompute of prompt +
        # output - 1 tokens).
        need = -(-(req.prompt_tokens + output - 1) // self._bs)
        if need > self._cap:
            raise ValueError(
                f"request {req.request_id} needs {need} KV blocks (prompt + output - 1 tokens) but an "
                f"instance holds {self._cap}: it could never finish"
            )

    def _predict(
        self, requests: list[Request]
    ) -> tuple[list[float], list[tuple[float, ...] | None], tuple[float, ...] | None]:
        n = len(requests)
        prediction = predict_lengths(self._predictor, requests)
        preds = np.asarray(prediction.expected_tokens, dtype=np.float64)
        if preds.shape != (n,):
            raise ValueError(f"predictor returned shape {preds.shape}, expected ({n},)")
        if not np.all(np.isfinite(preds)):
            name = getattr(self._predictor, "name", self._predictor)
            raise ValueError(f"predictor {name!r} returned non-finite lengths")
        # Multiples of 1/1024 token: every load sum routers see is then exact in float64, independent
        # of the order of updates (and identical with and without fast-forward).
        preds = np.round(np.maximum(preds, 0.0) * PRED_QUANTUM) / PRED_QUANTUM
        probs: list[tuple[float, ...] | None] = (
            [tuple(row) for row in prediction.bucket_probs.tolist()]
            if prediction.bucket_probs is not None
            else [None] * n
        )
        return preds.tolist(), probs, prediction.bucket_edges

    # ------------------------------------------------------------------ driving
    @property
    def done(self) -> bool:
        """Every request has finished (``result`` is ready)."""
        return self._result is not None

    @property
    def result(self) -> SimResult:
        """The replay's result; only once ``done``."""
        if self._result is None:
            raise RuntimeError("the replay is not finished: drive it to the end first (run / decide)")
        return self._result

    def next_decision(self) -> tuple[RequestView, ClusterView] | None:
        """The pending decision point, advancing the replay to it if needed; None when it is over."""
        if self._pending is None and self._result is None:
            self._advance(None)
        if self._pending is None:
            return None
        return self._pending[2], self._pending[3]

    def decide(self, choice: int) -> None:
        """Answer the pending decision with an instance index, ``DELAY`` or a ``Hold``.

        Raises ``RoutingError`` for an index not in the view's ``accepting`` (the state is then
        unusable, as after any exception inside the loop)."""
        if self._pending is None and self._result is None:
            self._advance(None)
        pending = self._pending
        if pending is None:
            raise RuntimeError("no decision is pending: the replay is over")
        self._pending = None
        self._resolve(pending[0], pending[1], pending[2], pending[3], choice)

    def run(self, route: Route) -> SimResult:
        """Answer every decision with ``route`` (from the pending one, if any) to the end."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._resolve(pending[0], pending[1], pending[2], pending[3], route(pending[2], pending[3]))
        if self._result is None:
            self._advance(route)
        return self.result

    def unfinished(self) -> list[tuple[str, int]]:
        """``(request_id, tokens generated so far)`` of every request that has arrived and not
        finished, in input order: what a router knows of them (it sent them and streams their tokens)
        and what a rollout must give sampled lengths for (``fork(lengths=...)``). O(requests)."""
        out = []
        for inst in self._instances:
            inst.refresh_requests()  # write back the decoding requests' generated counts
        for s in self._states:
            if s is not None and not s.status.is_finished:
                out.append((self.requests[s.idx].request_id, s.generated))
        return out

    def progress(self, request_ids: Sequence[str]) -> list[tuple[float, int, int, int]]:
        """Where each of ``request_ids`` is now: ``(finish_s, status, instance, generated)``, with
        ``finish_s`` NaN while unfinished, ``status`` a ``RequestStatus`` value (-1: not arrived yet),
        ``instance`` -1 at the router. No output lengths: what a router streaming the tokens knows.
        Who calls this: the lookahead teacher, scoring a rollout stopped at its horizon. Reads only
        (the generated counts are written back as ``unfinished()`` does); O(instances + ids)."""
        for inst in self._instances:
            inst.refresh_requests()
        out: list[tuple[float, int, int, int]] = []
        states, index = self._states, self._index
        for rid in request_ids:
            s = states[index[rid]]
            if s is None:
                out.append((float("nan"), -1, -1, 0))
            else:
                out.append((s.finish_s, int(s.status), s.instance, s.generated))
        return out

    # ------------------------------------------------------------------ fork
    def fork(
        self, future: Sequence[Request] | None = None, lengths: Mapping[str, int] | None = None
    ) -> ReplayState:
        """An independent copy of this replay: the same pending decision, the same state.

        Driven with the same choices, the copy gives the same ``SimResult`` as the original, bit for
        bit; either may then go on with other choices without affecting the other. Cost: the
        instances' ``fork`` (O(requests on them)) plus O(held requests + pending events); the requests
        not yet arrived and the finished ones are shared, not copied (they are immutable or not yet
        made). Who calls this: lookahead rollouts (the learned router's teacher), ``bench fork``.

        A rollout must not read the truth of the future: these replace it in the copy only.

        Args:
            future: replaces every request that has not arrived yet (its ARRIVAL is still pending) with
                these (arrival_s at or after ``now_s``, request ids not among the kept ones); they are
                predicted by the replay's predictor and appear at the end of the copy's result, the
                replaced ones not at all. ``[]``: no more arrivals. None: keep the true future.
            lengths: ``request_id -> output tokens`` replacing the true output length of requests
                that have not finished (arrived or not): each at least the tokens it has generated
                plus one (``unfinished()`` gives them) and fitting an instance's KV cache. A decode
                stretch holding a request whose length changes is cut at the iteration boundary in
                progress, so the new length takes effect from there (the instance's series then has
                a sample at that boundary).

        Raises:
            ValueError: a future request arriving before ``now_s`` or with a duplicate id, an unknown
                or finished request in ``lengths``, or a length that is too short or does not fit.
            RuntimeError: the replay is over.
        """
        if self._result is not None:
            raise RuntimeError("cannot fork a finished replay")
        memo: dict[int, ReqState] = {}
        new = ReplayState.__new__(ReplayState)
        new.__dict__.update(self.__dict__)
        new._wall0 = time.perf_counter()
        new._cluster = self._cluster.fork(memo)
        new._instances = new._cluster.instances
        new._heap = list(self._heap)
        new._need = dict(self._need)
        new._held = [fork_state(r, memo) for r in self._held]
        if self._tick_order is not None:  # mid-tick: the tick's order is the held list itself
            new._tick_order = (
                new._held
                if self._tick_order is self._held
                else [fork_state(r, memo) for r in self._tick_order]
            )
            new._tick_still = [fork_state(r, memo) for r in self._tick_still]
        if self._pending is not None:
            kind, r, rv, cv = self._pending
            new._pending = (kind, fork_state(r, memo), rv, cv)
        states = list(self._states)
        for copy in memo.values():
            states[copy.idx] = copy
        new._states = states
        if lengths:
            new._replace_lengths(lengths)
        if future is not None:
            new._replace_future(list(future))
        return new

    def _replace_lengths(self, lengths: Mapping[str, int]) -> None:
        output = list(self._output)
        cut: set[int] = set()
        for inst in self._instances:
            inst.refresh_requests()  # write back the decoding requests' generated counts
        for rid, value in lengths.items():
            i = self._index.get(rid)
            if i is None:
                raise ValueError(f"fork(lengths=...): request {rid!r} is not in this replay")
            out = int(value)
            req = self.requests[i]
            r = self._states[i]
            floor = 1 if r is None else r.generated + 1
            if r is not None and r.status.is_finished:
                raise ValueError(f"fork(lengths=...): request {rid!r} has finished; its length is known")
            if out < floor:
                raise ValueError(
                    f"fork(lengths=...): request {rid!r} has generated {floor - 1} tokens; its new "
                    f"length must be at least {floor}, got {out}"
                )
            self._check_fits(req, out)
            if out == output[i]:
                continue  # unchanged: no stretch to cut
            output[i] = out
            if r is not None:
                if r.instance >= 0:  # decoding requests' counts are kept per batch (Instance)
                    self._instances[r.instance].set_output_tokens(r, out)
                    cut.add(r.instance)
                else:
                    r.output = out
        self._output = output
        heap = self._heap
        for k in sorted(cut):  # a stretch's length came from the old lengths: end it at the boundary
            inst = self._instances[k]
            new_end = inst.cut_stretch(self.now_s)
            if new_end is not None:
                heapq.heappush(heap, (new_end, ITERATION_END, k, inst.version))

    def _replace_future(self, future: list[Request]) -> None:
        now = self.now_s
        n0 = len(self.requests)
        keep = list(self._keep) if self._keep is not None else [True] * n0
        index = dict(self._index)
        arrivals = []
        for entry in self._arrivals[self._next_arrival :]:
            keep[entry[2]] = False
            del index[self.requests[entry[2]].request_id]
        for j, req in enumerate(future):
            if req.arrival_s < now:
                raise ValueError(
                    f"fork(future=...): request {req.request_id!r} arrives at {req.arrival_s}s, before "
                    f"the fork point {now}s"
                )
            if req.request_id in index:
                raise ValueError(f"fork(future=...): request id {req.request_id!r} is already in the replay")
            index[req.request_id] = n0 + j
            self._check_fits(req, req.output_tokens)
            arrivals.append((req.arrival_s, ARRIVAL, n0 + j, 0))
        preds, probs, edges = self._predict(future) if future else ([], [], self._edges)
        if future and edges != self._edges:
            raise ValueError("fork(future=...): the predictor's bucket edges changed")
        icfg = self.config.instance
        arrivals.sort()
        self._arrivals = arrivals
        self._next_arrival = 0
        self._index = index
        self._keep = keep + [True] * len(future)
        self.requests = self.requests + future
        self._output = self._output + [r.output_tokens for r in future]
        self._preds = self._preds + preds
        self._probs = self._probs + probs
        self._cacheable = self._cacheable + [
            _cacheable(r, icfg.prefix_block_tokens, icfg.prefix_caching) for r in future
        ]
        self._states = self._states + [None] * len(future)

    # ------------------------------------------------------------------ the loop
    def _advance(self, route: Route | None) -> None:
        """Process events until a decision is pending (``route`` None) or the replay is over,
        answering decisions with ``route`` when it is given."""
        heap = self._heap
        arrivals = self._arrivals
        n_arrivals = len(arrivals)
        instances = self._instances
        states = self._states
        while True:
            order = self._tick_order
            if order is not None:  # offering the held requests of the tick at self._tick_t
                j = self._tick_j
                if j < len(order):
                    r = order[j]
                    self._tick_j = j + 1
                    need = self._need.get(r.idx)
                    if need is not None:  # answered a Hold: ask again only if some instance has the room
                        room = self._tick_room
                        if room is None:
                            room = self._tick_room = self._max_room(self._tick_t)
                        if need > room:  # the router would answer DELAY: what the loop does then
                            if not self._fallback(r, self._tick_t):
                                self._tick_still.append(r)
                            continue
                    rv, cv = self._decision(r, self._tick_t, len(order) - j - 1 + len(self._tick_still))
                    if route is None:
                        self._pending = (ROUTER_TICK, r, rv, cv)
                        return
                    self._resolve(ROUTER_TICK, r, rv, cv, route(rv, cv))
                else:
                    self._end_tick()
                continue
            a = self._next_arrival
            if a < n_arrivals and (not heap or arrivals[a] < heap[0]):
                self._next_arrival = a + 1
                t, kind, key, version = arrivals[a]
            elif heap:
                t, kind, key, version = heapq.heappop(heap)
            else:
                if self._asleep:  # nothing can give room any more: tick on, as without Hold
                    self._wake(self.now_s, SCHEDULE)
                    continue
                break
            if kind == ITERATION_END:
                inst = instances[key]
                if version != inst.version or not inst.busy:
                    continue  # stale (a cut stretch's old end): it must not move the clock
                self.now_s = t
                inst.end_iteration(t)
                if self._asleep and self._room(key) >= self._min_need:
                    self._wake(t, ITERATION_END)
                if inst.schedule_pending:
                    continue
                inst.schedule_pending = True
                sched = (t, SCHEDULE, key, 0)
                a = self._next_arrival
                if (heap and heap[0] < sched) or (a < n_arrivals and arrivals[a] < sched):
                    heapq.heappush(heap, sched)
                    continue
                kind = SCHEDULE  # it is the next event anyway: run it now instead of a push and a pop
            if kind == SCHEDULE:
                self.now_s = t
                inst = instances[key]
                inst.schedule_pending = False
                if inst.busy:
                    continue
                end = inst.step(t)
                if end is not None:
                    heapq.heappush(heap, (end, ITERATION_END, key, inst.version))
                if self._asleep and self._room(key) >= self._min_need:
                    self._wake(t, SCHEDULE)
            elif kind == ARRIVAL:
                self.now_s = t
                r = ReqState(
                    key,
                    self.requests[key].prompt_tokens,
                    self._output[key],
                    self._preds[key],
                    self._cacheable[key],
                )
                states[key] = r
                rv, cv = self._decision(r, t, len(self._held))
                if route is None:
                    self._pending = (ARRIVAL, r, rv, cv)
                    return
                self._resolve(ARRIVAL, r, rv, cv, route(rv, cv))
            else:  # ROUTER_TICK
                self.now_s = t
                held = self._held
                if self._shortest_first and len(held) > 1:  # aged shortest-predicted first, arrival on ties
                    aging = self._aging
                    reqs = self.requests
                    held.sort(
                        key=lambda h: (
                            h.pred - aging * (t - reqs[h.idx].arrival_s),
                            reqs[h.idx].arrival_s,
                            h.idx,
                        )
                    )
                self._tick_t = t
                self._tick_order = held
                self._tick_j = 0
                self._tick_still = []
                self._tick_all_hold = True
                self._tick_room = None
        self._finish()

    def _decision(self, r: ReqState, t: float, queue_len: int) -> tuple[RequestView, ClusterView]:
        req = self.requests[r.idx]
        rv = RequestView(
            request_id=req.request_id,
            arrival_s=req.arrival_s,
            now_s=t,
            prompt_tokens=req.prompt_tokens,
            task=req.task,
            predicted_output_tokens=r.pred,
            prefix_hash_ids=req.prefix_hash_ids,
            predicted_bucket_probs=self._probs[r.idx],
            predicted_bucket_edges=self._edges,
        )
        return rv, self._cluster.view(t, r, queue_len)

    def _resolve(self, kind: int, r: ReqState, rv: RequestView, cv: ClusterView, choice: int) -> None:
        """Apply the answer to a decision offered at an arrival or a tick."""
        self.decisions += 1
        t = cv.now_s
        if choice == DELAY:  # a Hold is a DELAY
            if isinstance(choice, Hold):
                outcome = _HELD
                self._need[r.idx] = choice.room_blocks
            else:
                outcome = _DELAYED
                self._need.pop(r.idx, None)
            if self._max_wait is not None and self._fallback(r, t):
                outcome = _PLACED
        else:
            views = cv.instances
            if type(choice) is int and 0 <= choice < len(views) and views[choice].accepting:
                pass  # the common case, without building the accepting tuple
            elif choice not in (accepting := cv.accepting):
                raise RoutingError(
                    f"router {self.router_name!r} returned {choice!r} for request "
                    f"{rv.request_id} at t={t:.6f}s; accepting instances are {accepting} "
                    f"(or DELAY={DELAY})"
                )
            self._place(r, int(choice), t)
            outcome = _PLACED
        if outcome == _PLACED:
            if self._need:
                self._need.pop(r.idx, None)
            return
        if kind != ARRIVAL:
            self._tick_still.append(r)
            if outcome == _DELAYED:
                self._tick_all_hold = False
            return
        r.status = RequestStatus.QUEUED_AT_ROUTER
        self._held.append(r)
        if self._asleep:
            if outcome == _HELD and self._need[r.idx] > self._max_room(t):
                self._min_need = min(self._min_need, self._need[r.idx])
            else:
                self._wake(t, ARRIVAL)
        elif not self._tick_pending:
            self._tick_anchor = t
            if outcome == _HELD and self._max_wait is None and self._need[r.idx] > self._max_room(t):
                self._tick_count = 0  # the grid's tick 0 is this arrival; sleep until a wake
                self._asleep = True
                self._min_need = self._need[r.idx]
                self._idle_ticks = 0
            else:
                self._tick_pending = True
                self._tick_count = 1
                heapq.heappush(self._heap, (t + self._interval, ROUTER_TICK, 0, 0))

    def _end_tick(self) -> None:
        order = self._tick_order
        assert order is not None
        still = self._tick_still
        t = self._tick_t
        self._tick_order = None
        if self._heap or self._next_arrival < len(self._arrivals) or len(still) < len(order):
            self._idle_ticks = 0
        else:
            self._idle_ticks += 1  # nothing else can ever happen, and the router routed nobody
            if self._idle_ticks >= MAX_IDLE_TICKS:
                raise RoutingError(
                    f"router {self.router_name!r} kept {len(still)} request(s) waiting "
                    f"for {MAX_IDLE_TICKS} decision ticks while every instance was idle and no other "
                    f"event was pending (t={t:.3f}s); set ClusterConfig.max_router_wait_s to cap waits"
                )
        self._held = still
        self._tick_still = []
        if not still:
            self._tick_pending = False
            return
        if self._tick_all_hold and self._max_wait is None:
            need = self._need
            min_need = min(need[r.idx] for r in still)
            if min_need > self._max_room(t):
                self._tick_pending = False
                self._asleep = True
                self._min_need = min_need
                return
        self._tick_count += 1
        heapq.heappush(self._heap, (self._tick_anchor + self._tick_count * self._interval, ROUTER_TICK, 0, 0))

    # ------------------------------------------------------------------ Hold: room and wake-up
    def _room(self, k: int) -> float:
        """Instance ``k``'s room as its view would show it now (``interface.Hold``): -inf when not
        accepting, inf when empty, else ``kv_total_blocks - committed``. O(1)."""
        inst = self._instances[k]
        if not inst.accepting:
            return -_INF
        if not inst.num_running and not inst.num_waiting:
            return _INF
        return inst.total_blocks - inst.kv_used_blocks + (inst.load()[0] // -self._bs)

    def _max_room(self, t: float) -> float:
        """The largest room over the instances at ``t`` (decode stretches synced to ``t``, as a view)."""
        best = -_INF
        for inst in self._instances:
            inst.sync(t)
            room = self._room(inst.index)
            if room > best:
                best = room
        return best

    def _wake(self, t: float, kind: int) -> None:
        """End a sleep: push the first grid tick that comes after the event ``(t, kind)`` in heap order
        (a tick at ``t`` itself only after an ITERATION_END, which it follows at equal times)."""
        anchor, interval, last = self._tick_anchor, self._interval, self._tick_count
        after = (t, kind)
        j = max(last + 1, int((t - anchor) / interval) - 1)
        while j > last + 1 and (anchor + (j - 1) * interval, ROUTER_TICK) > after:
            j -= 1
        while not (anchor + j * interval, ROUTER_TICK) > after:
            j += 1
        self._asleep = False
        self._tick_pending = True
        self._tick_count = j
        heapq.heappush(self._heap, (anchor + j * interval, ROUTER_TICK, 0, 0))

    # ------------------------------------------------------------------ placement and result
    def _fallback(self, r: ReqState, t: float) -> bool:
        """After a DELAY: place ``r`` on ``Cluster.fallback_instance`` if it has waited
        ``max_router_wait_s`` (and some instance accepts). Returns whether it was placed."""
        max_wait = self._max_wait
        if max_wait is None or t - self.requests[r.idx].arrival_s < max_wait:
            return False
        fb = self._cluster.fallback_instance()
        if fb is None:
            return False
        self._place(r, fb, t)
        self._need.pop(r.idx, None)
        return True

    def _place(self, r: ReqState, target: int, t: float) -> None:
        self._tick_room = None  # an instance's room changes
        r.routed_s = t
        cluster = self._cluster
        cluster.placements += 1
        inst = self._instances[target]
        if inst.busy:
            new_end = inst.cut_stretch(t)
            if new_end is not None:
                heapq.heappush(self._heap, (new_end, ITERATION_END, target, inst.version))
        elif not inst.schedule_pending:
            inst.schedule_pending = True
            heapq.heappush(self._heap, (t, SCHEDULE, target, 0))
        inst.enqueue(r)

    def _finish(self) -> None:
        keep = self._keep
        idx = range(len(self.requests)) if keep is None else [i for i, k in enumerate(keep) if k]
        states = [self._states[i] for i in idx]
        unfinished = [i for i, s in zip(idx, states, strict=True) if s is None or not s.status.is_finished]
        if unfinished:  # pragma: no cover - a simulator bug, never a user error
            raise RuntimeError(
                f"replay ended with {len(unfinished)} unfinished requests, e.g. {unfinished[:5]}"
            )
        requests = [self.requests[i] for i in idx]
        output = [self._output[i] for i in idx]
        done: list[ReqState] = states  # type: ignore[assignment]
        self._result = _result(
            requests, output, done, self._cluster, self.now_s, time.perf_counter() - self._wall0
        )


def _result(
    requests: Sequence[Request],
    output_tokens: list[int],
    states: list[ReqState],
    cluster: Cluster,
    now: float,
    wall_s: float,
) -> SimResult:
    n = len(requests)

    def col(attr: str, dtype: Any = np.float64) -> np.ndarray:
        return np.fromiter((getattr(s, attr) for s in states), dtype=dtype, count=n)

    arrival = np.fromiter((r.arrival_s for r in requests), dtype=np.float64, count=n)
    routed = col("routed_s")
    first = col("first_token_s")
    finish = col("finish_s")
    first_sched = col("first_sched_s")
    output = np.asarray(output_tokens, dtype=np.int64).reshape(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        tbt = np.where(output > 1, (finish - first) / np.maximum(output - 1, 1), 0.0)
    series = [
        {
            "time_s": np.asarray(inst.s_time, dtype=np.float64),
            "batch_size": np.asarray(inst.s_batch, dtype=np.int64),
            "queue_len": np.asarray(inst.s_queue, dtype=np.int64),
            "kv_used_blocks": np.asarray(inst.s_kv, dtype=np.int64),
        }
        for inst in cluster.instances
    ]
    return SimResult(
        arrival_s=arrival,
        routed_s=routed,
        first_token_s=first,
        finish_s=finish,
        ttft_s=first - arrival,
        e2e_s=finish - arrival,
        tbt_s=tbt,
        router_wait_s=routed - arrival,
        queue_wait_s=first_sched - routed,
        preemptions=col("preemptions", np.int64),
        instance=col("instance", np.int64),
        prompt_tokens=np.fromiter((r.prompt_tokens for r in requests), dtype=np.int64, count=n),
        output_tokens=output,
        generated_tokens=col("generated", np.int64),
        tasks=[r.task for r in requests],
        request_ids=[r.request_id for r in requests],
        instance_series=series,
        kv_total_blocks=cluster.instances[0].total_blocks,
        num_iterations=sum(inst.num_iterations for inst in cluster.instances),
        sim_time_s=now,
        wall_s=wall_s,
    )
