"""Benchmarks of the replay engine itself: the cost of forking a replay mid-way (``bench fork``) and
of held requests under admission control (``bench env --hold-headroom``: router calls with ``Hold``
against ticking).

Who calls this: ``loadwise bench fork`` and ``loadwise bench env`` (the CLI, ``flows.cli.bench``),
``make bench`` and BENCHMARKS.md ("Fork", "RL environment"). It lives with the routers, like the
replay benchmark, because it needs a router (the simulator imports nothing of the routers). Pure apart
from the wall clock; the trace file is read through a scratch warehouse, not timed.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from training.length.baselines import OraclePredictor
from training.routing.admission import HoldForHeadroom
from training.routing.registry import RouterContext, get_router
from training.simulator.config import ClusterConfig
from training.simulator.engine import ReplayState, simulate
from training.simulator.interface import DELAY, ClusterView, Hold, RequestView, Router
from training.simulator.profiles import PAPER_PROFILE, default_instance_config, load_latency_model
from training.simulator.request import Request
from training.simulator.result import SimResult

VIDUR_TRACE = "benchmarks/azure_conv_n4000_r20_s0_cap4096.csv"
"""The Vidur trace (4,000 Azure conversation requests at 20 req/s), under the shared data folder."""

FORK_PROFILE = "a100-llama2-7b"
"""Profile of the fork benchmark: on A100s the batches run ~70 requests deep (issue 16)."""


def _vidur_requests(trace: str | None) -> list[Request]:
    from training.workloads.sources import trace_requests

    if trace is None:
        from warehouse.settings import shared_data_dir

        trace = os.path.join(shared_data_dir(), VIDUR_TRACE)
    if not os.path.exists(trace):
        raise FileNotFoundError(f"{trace}: trace file not found (pass --trace FILE)")
    requests, _ = trace_requests([trace])
    if not requests:
        raise ValueError(f"{trace}: no replayable requests")
    return requests


def run_fork_benchmark(
    trace: str | None = None,
    profile: str = FORK_PROFILE,
    instances: Sequence[int] = (4, 8),
    fork_points: Sequence[float] = (0.25, 0.5, 0.75),
    forks: int = 200,
    baseline_copies: int = 5,
) -> dict[str, Any]:
    """Time ``ReplayState.fork`` at several points of a round-robin replay of ``trace`` (default: the
    Vidur trace) on ``profile``, for each cluster size in ``instances`` (arrival times scaled by
    ``4 / instances``, so that every cluster runs its instances as deep as 4 instances run the trace).

    At each fork point (a fraction of the routing decisions) it reports the state's depth (requests
    running per instance, requests in the system), the fork's cost (best of 3 batches of ``forks``
    forks) in microseconds per fork and per instance, and the same-run baselines: ``copy.deepcopy``
    of the same state (the obvious clone; best of ``baseline_copies``) with the ratio, and the mean
    wall time of one routing decision of the replay (the fork costs this many decisions). A fork
    copied at each point is then driven to the end with the same router state and must give the
    original's result bit for bit (``identical``).
    """
    trace_requests = _vidur_requests(trace)
    latency = load_latency_model(profile)
    rows = []
    for m in instances:
        # Arrivals compressed by m / 4: each instance carries the load it carries in the 4-instance
        # replay (batches ~70 deep on A100s), so the cost per instance is compared at equal depth.
        scale = 4.0 / m
        requests = [replace(r, arrival_s=r.arrival_s * scale) for r in trace_requests]
        config = ClusterConfig(num_instances=m, instance=default_instance_config(profile))
        ctx = RouterContext(num_instances=m, latency_model=latency, block_size=config.instance.block_size)
        router = get_router("round_robin", ctx)
        router.reset(m, 0)
        t0 = time.perf_counter()
        whole = ReplayState(requests, config, latency, OraclePredictor()).run(router.route)
        replay_wall = time.perf_counter() - t0
        router.reset(m, 0)
        state = ReplayState(requests, config, latency, OraclePredictor())
        decided = 0
        total = len(requests)  # round robin places every request at its arrival: one decision each
        for frac in fork_points:
            target = int(frac * total)
            while decided < target and (decision := state.next_decision()) is not None:
                state.decide(router.route(*decision))
                decided += 1
            decision = state.next_decision()
            assert decision is not None
            cv: ClusterView = decision[1]
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(forks):
                    state.fork()
                best = min(best, (time.perf_counter() - t0) / forks)
            deep = float("inf")
            for _ in range(baseline_copies):
                t0 = time.perf_counter()
                copy.deepcopy(state)
                deep = min(deep, time.perf_counter() - t0)
            twin = state.fork()
            twin_router = copy.deepcopy(router)
            same = _same(twin.run(twin_router.route), whole)
            rows.append(
                {
                    "instances": m,
                    "decision": decided,
                    "sim_time_s": round(cv.now_s, 3),
                    "running_per_instance": float(np.mean([v.num_running for v in cv.instances])),
                    "requests_in_system": int(sum(v.num_requests for v in cv.instances)),
                    "fork_us": best * 1e6,
                    "fork_us_per_instance": best * 1e6 / m,
                    "deepcopy_us": deep * 1e6,
                    "deepcopy_over_fork": deep / best,
                    "decision_us": replay_wall / max(whole.num_requests, 1) * 1e6,
                    "fork_over_decision": best / (replay_wall / max(whole.num_requests, 1)),
                    "identical": same,
                }
            )
    return {
        "profile": profile,
        "requests": len(trace_requests),
        "forks_per_batch": forks,
        "points": rows,
        "load_average": list(os.getloadavg()),
    }


def _same(a: SimResult, b: SimResult) -> bool:
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("routed_s", "first_token_s", "finish_s", "preemptions", "instance", "generated_tokens")
    ) and (a.num_iterations, a.sim_time_s) == (b.num_iterations, b.sim_time_s)


class CountingRouter:
    """Counts a router's calls (``calls``); with ``tick``, answers a ``Hold`` as a plain DELAY, so the
    replay offers every held request at every tick as it did before ``Hold``. Used by the hold
    benchmark below and by the tests that compare the two (tests/training/simulator/test_engine_hold.py,
    tests/training/routing/test_admission.py)."""

    def __init__(self, inner: Router, tick: bool) -> None:
        self.inner, self.tick, self.calls, self.name = inner, tick, 0, inner.name
        self.needs_request_stats = getattr(inner, "needs_request_stats", False)

    def reset(self, num_instances: int, seed: int) -> None:
        self.inner.reset(num_instances, seed)

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        self.calls += 1
        choice = self.inner.route(request, cluster)
        return DELAY if self.tick and isinstance(choice, Hold) else choice


def run_hold_benchmark(
    num_requests: int = 2000, hold_kv_headroom: float = 0.1, rate_per_s: float = 20.0, seed: int = 0
) -> dict[str, Any]:
    """Router calls and wall time of an overloaded replay under admission control, with ``Hold``
    (held requests offered only when an instance has room) next to the same replay ticking (every
    held request offered at every decision tick: ``Hold`` answered as DELAY), and whether their
    results are identical. The trace and cluster are the env benchmark's (``training.rl.bench``:
    4 V100s of the paper profile, a seeded conversation trace at 20 req/s) with ``round_robin+hold``."""
    from training.workloads.synthetic import conversation_trace

    trace = conversation_trace(num_requests, rate_per_s, seed)
    config = ClusterConfig(num_instances=4, instance=default_instance_config(PAPER_PROFILE))
    latency = load_latency_model(PAPER_PROFILE)
    out: dict[str, Any] = {}
    results = []
    for mode in ("hold", "ticking"):
        inner = HoldForHeadroom(
            get_router("round_robin", RouterContext(num_instances=4)),
            config.instance.block_size,
            hold_kv_headroom,
        )
        router = CountingRouter(inner, tick=mode == "ticking")
        t0 = time.perf_counter()
        results.append(simulate(trace, router, config, latency, OraclePredictor(), seed=seed))
        out[f"{mode}_wall_s"] = time.perf_counter() - t0
        out[f"{mode}_router_calls"] = router.calls
    out["calls_ratio"] = out["ticking_router_calls"] / out["hold_router_calls"]
    out["wall_ratio"] = out["ticking_wall_s"] / out["hold_wall_s"]
    out["hold_identical_to_ticking"] = _same(*results)
    out["held_requests"] = int(np.count_nonzero(results[0].router_wait_s > 0))
    return out
