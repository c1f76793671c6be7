"""``simulate``: the one event loop of a trace replay.

Who calls this: the eval harness, the RL env, benchmarks and tests. One call replays a list of
requests through a router onto ``config.num_instances`` instances and returns a ``SimResult``. It
calls ``router.reset(num_instances, seed)`` first and asks the predictor once (``predict_lengths``). Time
comes from events only; the simulator itself draws no random numbers (routers get ``seed``), so the
same inputs and seed give bit-identical arrays. Event order at equal times: see ``event_order``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Generator, Sequence
from dataclasses import replace

import numpy as np

from training.simulator.cluster import Cluster
from training.simulator.config import ClusterConfig, RouterQueueOrder
from training.simulator.event_order import ARRIVAL, ITERATION_END, ROUTER_TICK, SCHEDULE
from training.simulator.interface import (
    DELAY,
    ClusterView,
    LengthPredictor,
    RequestView,
    Router,
    predict_lengths,
)
from training.simulator.latency import IterationObserver, LatencyModel
from training.simulator.request import Request, RequestStatus
from training.simulator.result import SimResult
from training.simulator.state import ReqState

MAX_IDLE_TICKS = 100_000
"""Consecutive decision ticks a router may hold requests while nothing else can happen (an idle
cluster, no arrivals left) before the replay stops with ``RoutingError`` instead of looping forever."""

PRED_QUANTUM = 1024.0
"""Predicted output lengths are rounded to 1/PRED_QUANTUM token (see ``simulate``)."""


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
        router: decides at arrival and, after ``DELAY``, at every decision tick. A router with a true
            ``needs_request_stats`` attribute (the learned one) gets ``config.request_stats`` on.
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
    decisions = replay(
        requests,
        config,
        latency_model,
        predictor,
        fast_forward,
        router_name=getattr(router, "name", "router"),
        iteration_observer=iteration_observer,
    )
    route = router.route
    try:
        request_view, cluster_view = next(decisions)
        while True:
            request_view, cluster_view = decisions.send(route(request_view, cluster_view))
    except StopIteration as done:
        return done.value


def replay(
    requests: Sequence[Request],
    config: ClusterConfig,
    latency_model: LatencyModel,
    predictor: LengthPredictor,
    fast_forward: bool = True,
    router_name: str = "router",
    iteration_observer: IterationObserver | None = None,
) -> Generator[tuple[RequestView, ClusterView], int, SimResult]:
    """The replay with the routing decisions handed to the caller (what ``simulate`` drives).

    A generator: each ``next``/``send`` returns the next decision point ``(RequestView,
    ClusterView)``; answer it with ``send(instance_index_or_DELAY)``. When the trace is done it raises
    ``StopIteration`` whose ``value`` is the ``SimResult``. Meant for step-wise drivers (the RL env);
    ``simulate(requests, router, ...)`` is this loop with ``router.route`` answering.
    """
    wall0 = time.perf_counter()
    n = len(requests)
    icfg = config.instance
    ids = [r.request_id for r in requests]
    if len(set(ids)) != n:
        raise ValueError("request_id values must be unique within one replay")
    prediction = predict_lengths(predictor, requests)
    preds = np.asarray(prediction.expected_tokens, dtype=np.float64)
    if preds.shape != (n,):
        raise ValueError(f"predictor returned shape {preds.shape}, expected ({n},)")
    if not np.all(np.isfinite(preds)):
        raise ValueError(f"predictor {getattr(predictor, 'name', predictor)!r} returned non-finite lengths")
    # Multiples of 1/1024 token: every load sum routers see is then exact in float64, independent of
    # the order of updates (and identical with and without fast-forward).
    preds = np.round(np.maximum(preds, 0.0) * PRED_QUANTUM) / PRED_QUANTUM
    edges = prediction.bucket_edges
    probs: list[tuple[float, ...]] | list[None] = (
        [tuple(row) for row in prediction.bucket_probs.tolist()]
        if prediction.bucket_probs is not None
        else [None] * n
    )
    cap = icfg.total_kv_blocks
    states: list[ReqState] = []
    for i, req in enumerate(requests):
        # The last output token is sampled but never fed back, so its KV is never stored: a request
        # holds at most prompt + output - 1 tokens of KV (its last decode, or a recompute of prompt +
        # output - 1 tokens).
        need = -(-(req.prompt_tokens + req.output_tokens - 1) // icfg.block_size)
        if need > cap:
            raise ValueError(
                f"request {req.request_id} needs {need} KV blocks (prompt + output - 1 tokens) but an "
                f"instance holds {cap}: it could never finish"
            )
        cacheable = _cacheable(req, icfg.prefix_block_tokens, icfg.prefix_caching)
        states.append(ReqState(i, req.prompt_tokens, req.output_tokens, float(preds[i]), cacheable))

    if iteration_observer is not None and fast_forward:
        raise ValueError("an iteration_observer needs fast_forward=False (a stretch is one event)")
    cluster = Cluster(config, latency_model, fast_forward, iteration_observer)
    instances = cluster.instances
    interval = config.decision_interval_s
    max_wait = config.max_router_wait_s
    shortest_first = config.router_queue_order is RouterQueueOrder.SHORTEST
    aging = config.router_queue_aging_tokens_per_s
    arrivals = [req.arrival_s for req in requests]

    heap: list[tuple[float, int, int, int]] = [
        (req.arrival_s, ARRIVAL, i, 0) for i, req in enumerate(requests)
    ]
    heapq.heapify(heap)
    held: list[ReqState] = []  # at the router, in arrival order
    tick_anchor = 0.0
    tick_count = 0
    tick_pending = False
    idle_ticks = 0
    now = 0.0

    def place(r: ReqState, target: int, t: float) -> None:
        r.routed_s = t
        cluster.placements += 1
        inst = instances[target]
        if inst.busy:
            new_end = inst.cut_stretch(t)
            if new_end is not None:
                heapq.heappush(heap, (new_end, ITERATION_END, target, inst.version))
        elif not inst.schedule_pending:
            inst.schedule_pending = True
            heapq.heappush(heap, (t, SCHEDULE, target, 0))
        inst.enqueue(r)

    def offer(r: ReqState, t: float, queue_len: int) -> Generator[tuple[RequestView, ClusterView], int, bool]:
        req = requests[r.idx]
        rv = RequestView(
            request_id=req.request_id,
            arrival_s=req.arrival_s,
            now_s=t,
            prompt_tokens=req.prompt_tokens,
            task=req.task,
            predicted_output_tokens=r.pred,
            prefix_hash_ids=req.prefix_hash_ids,
            predicted_bucket_probs=probs[r.idx],
            predicted_bucket_edges=edges,
        )
        cv = cluster.view(t, r, queue_len)
        choice = yield rv, cv
        if choice == DELAY:
            if max_wait is not None and t - req.arrival_s >= max_wait:
                fb = cluster.fallback_instance()
                if fb is not None:
                    place(r, fb, t)
                    return True
            return False
        accepting = cv.accepting
        if choice not in accepting:
            raise RoutingError(
                f"router {router_name!r} returned {choice!r} for request "
                f"{req.request_id} at t={t:.6f}s; accepting instances are {accepting} (or DELAY={DELAY})"
            )
        place(r, int(choice), t)
        return True

    while heap:
        t, kind, key, version = heapq.heappop(heap)
        if kind == ITERATION_END:
            inst = instances[key]
            if version != inst.version or not inst.busy:
                continue  # stale (a cut stretch's old end): it must not move the clock
        now = t
        if kind == ITERATION_END:
            inst.end_iteration(t)
            if not inst.schedule_pending:
                inst.schedule_pending = True
                heapq.heappush(heap, (t, SCHEDULE, key, 0))
        elif kind == SCHEDULE:
            inst = instances[key]
            inst.schedule_pending = False
            if inst.busy:
                continue
            end = inst.step(t)
            if end is not None:
                heapq.heappush(heap, (end, ITERATION_END, key, inst.version))
        elif kind == ARRIVAL:
            r = states[key]
            routed = yield from offer(r, t, len(held))
            if not routed:
                r.status = RequestStatus.QUEUED_AT_ROUTER
                held.append(r)
                if not tick_pending:
                    tick_pending = True
                    tick_anchor, tick_count = t, 1
                    heapq.heappush(heap, (t + interval, ROUTER_TICK, 0, 0))
        else:  # ROUTER_TICK
            still: list[ReqState] = []
            if shortest_first and len(held) > 1:  # aged shortest-predicted first, arrival on ties
                held.sort(key=lambda h: (h.pred - aging * (t - arrivals[h.idx]), arrivals[h.idx], h.idx))
            for j, r in enumerate(held):
                routed = yield from offer(r, t, len(held) - j - 1 + len(still))
                if not routed:
                    still.append(r)
            if heap or len(still) < len(held):
                idle_ticks = 0
            else:
                idle_ticks += 1  # nothing else can ever happen, and the router routed nobody
                if idle_ticks >= MAX_IDLE_TICKS:
                    raise RoutingError(
                        f"router {router_name!r} kept {len(still)} request(s) waiting "
                        f"for {MAX_IDLE_TICKS} decision ticks while every instance was idle and no other "
                        f"event was pending (t={t:.3f}s); set ClusterConfig.max_router_wait_s to cap waits"
                    )
            held = still
            if held:
                tick_count += 1
                heapq.heappush(heap, (tick_anchor + tick_count * interval, ROUTER_TICK, 0, 0))
            else:
                tick_pending = False

    unfinished = [s.idx for s in states if not s.status.is_finished]
    if unfinished:  # pragma: no cover - a simulator bug, never a user error
        raise RuntimeError(f"replay ended with {len(unfinished)} unfinished requests, e.g. {unfinished[:5]}")
    return _result(requests, states, cluster, now, time.perf_counter() - wall0)


def _result(
    requests: Sequence[Request], states: list[ReqState], cluster: Cluster, now: float, wall_s: float
) -> SimResult:
    n = len(requests)

    def col(attr: str, dtype=np.float64) -> np.ndarray:
        return np.fromiter((getattr(s, attr) for s in states), dtype=dtype, count=n)

    arrival = np.fromiter((r.arrival_s for r in requests), dtype=np.float64, count=n)
    routed = col("routed_s")
    first = col("first_token_s")
    finish = col("finish_s")
    first_sched = col("first_sched_s")
    output = np.fromiter((r.output_tokens for r in requests), dtype=np.int64, count=n)
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
