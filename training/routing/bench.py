"""Replay-speed benchmark: how many requests per wall-clock second the simulator replays.

Who calls this: ``loadwise bench replay`` (the CLI, wired in ``flows``) and BENCHMARKS.md. The trace
is fixed and seeded (``training.workloads.synthetic.conversation_trace``): 4 instances, 4000 requests,
Poisson arrivals at 20 req/s, conversation-like lengths (lognormal prompts, median ~1000 tokens,
capped at 4096; lognormal outputs, median ~130, capped at 1024), the registry's ``round_robin``
router, the paper's V100 linear latency model with the V100's KV capacity. Or any trace file the
warehouse reads (``trace``, e.g. the Vidur trace ``../shared/data/benchmarks/azure_conv_n4000_r20_s0_
cap4096.csv``), any profile, instance count and registered router. Both fast-forward and
step-by-step replays are timed in the same run (same trace), and their per-request results are
compared (they are bit-identical by design). It lives with the routers, not in the simulator
package, because it needs a router (the simulator imports nothing of the routers).
"""

from __future__ import annotations

import os
import time

import numpy as np

from training.length.baselines import OraclePredictor
from training.routing.registry import RouterContext, get_router
from training.simulator.config import ClusterConfig
from training.simulator.engine import simulate
from training.simulator.profiles import PAPER_PROFILE, default_instance_config, load_latency_model
from training.workloads.synthetic import conversation_trace


def run_replay_benchmark(
    seed: int = 0,
    num_requests: int = 4000,
    num_instances: int = 4,
    rate_per_s: float = 20.0,
    step_by_step: bool = True,
    repeats: int = 1,
    profile: str = PAPER_PROFILE,
    trace: str | None = None,
    router: str = "round_robin",
) -> dict:
    """Replay the fixed trace; return speed figures (best of ``repeats``) for both modes.

    Keys: ``sim_requests_per_s`` (fast-forward), ``step_sim_requests_per_s`` (step-by-step, same
    trace), ``speedup``, wall seconds, iterations, simulated seconds, and ``max_rel_diff_e2e`` between
    the modes (step-by-step keys are absent when ``step_by_step`` is False); ``*_per_cpu_s``: the
    same per second of this process's CPU time (steadier than wall time on a shared machine), and
    ``load_average_1min``. ``profile`` picks the
    latency profile (default: the paper's V100 linear model, which needs no data files; note that at
    20 req/s it overloads 4 V100s, so queues grow for the whole replay). ``trace``: replay this file
    (read through a scratch warehouse, ``training.workloads.sources.trace_requests``; not timed)
    instead of the synthetic trace, whose ``num_requests`` and ``rate_per_s`` then do not apply.
    ``router``: a registered router name. Raises ValueError (unknown profile or router, a trace with
    no replayable rows) and FileNotFoundError (a missing file).
    """
    if trace is not None:
        from training.workloads.sources import trace_requests

        requests, _ = trace_requests([trace])
        if not requests:
            raise ValueError(f"{trace}: no replayable requests")
        num_requests = len(requests)
        rate_per_s = num_requests / max(max(r.arrival_s for r in requests), 1e-9)
    else:
        requests = conversation_trace(num_requests, rate_per_s, seed)
    config = ClusterConfig(num_instances=num_instances, instance=default_instance_config(profile))
    latency = load_latency_model(profile)
    ctx = RouterContext(
        num_instances=num_instances,
        latency_model=latency,
        block_size=config.instance.block_size,
        max_batch_size=config.instance.max_batch_size,
    )
    get_router(router, ctx)  # an unknown name fails here, before any timing

    cpu_best: dict[bool, float] = {}

    def timed(fast: bool):
        best = None
        res = None
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            c0 = time.process_time()
            res = simulate(
                requests,
                get_router(router, ctx),
                config,
                latency,
                OraclePredictor(),
                seed=seed,
                fast_forward=fast,
            )
            dt = time.perf_counter() - t0
            cpu_best[fast] = min(cpu_best.get(fast, float("inf")), time.process_time() - c0)
            best = dt if best is None else min(best, dt)
        return res, best

    fast, fast_wall = timed(True)
    out: dict = {
        "trace": trace or "synthetic conversation_trace",
        "router": router,
        "num_requests": num_requests,
        "num_instances": num_instances,
        "rate_per_s": rate_per_s,
        "latency_model": profile,
        "kv_blocks_per_instance": config.instance.kv_blocks,
        "sim_requests_per_s": num_requests / fast_wall,
        "sim_requests_per_cpu_s": num_requests / cpu_best[True],
        "wall_s": fast_wall,
        "num_iterations": fast.num_iterations,
        "sim_time_s": fast.sim_time_s,
        "preemptions": int(fast.preemptions.sum()),
        "mean_e2e_s": float(fast.e2e_s.mean()),
        "p50_ttft_s": float(np.median(fast.ttft_s)),
    }
    if step_by_step:
        step, step_wall = timed(False)
        out["step_sim_requests_per_s"] = num_requests / step_wall
        out["step_sim_requests_per_cpu_s"] = num_requests / cpu_best[False]
        out["step_wall_s"] = step_wall
        out["speedup"] = step_wall / fast_wall
        out["max_rel_diff_e2e"] = float(
            np.max(np.abs(step.e2e_s - fast.e2e_s) / np.maximum(step.e2e_s, 1e-12))
        )
        out["same_preemptions"] = bool(np.array_equal(step.preemptions, fast.preemptions))
        out["identical_results"] = all(
            np.array_equal(getattr(step, name), getattr(fast, name))
            for name in ("first_token_s", "finish_s", "routed_s", "queue_wait_s", "preemptions", "instance")
        )
    out["load_average_1min"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run_replay_benchmark(), indent=2))
