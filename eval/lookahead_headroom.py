"""Headroom of the lookahead teacher on a named setting: the teacher against heuristics, per seed.

``python -m eval.lookahead_headroom --requests 800 --seeds 0,1,2 --samples 4 --horizon 1``
replays the first ``--requests`` requests of each held-out seed of ``--workload`` (default ``main``) on
``--instances`` x ``--profile`` at ``--rate`` (``--chunked-prefill N``: prefill in N-token chunks) with
the registered length predictor (``--predictor-version``; ``--predictor task-mean``: task means)
through ``simulate_with_lookahead``, and the ``--baselines`` routers through ``simulate`` on the same
trace and ``RouterContext`` (what ``loadwise compare`` replays). One JSON line per seed on stdout:
each router's mean / p99 E2E (s) with the anatomy of its tail, the teacher's decisions, rollouts,
decisions/s and forks/s, and ``paired``: its paired comparisons with the base's own answer
(``paired_summary``).
``--conservative --z Z --min-margin M``: the conservative teacher; ``--max-wait S`` and
``--protect-tokens N``: the tail's guards under ``--admission``. ``--oracle all|lengths|future``:
the DIAGNOSTIC teacher of ``eval.lookahead_oracle`` (true lengths and/or true arrivals in its
rollouts; reported under ``lookahead_ORACLE_<which>_diagnostic``, never a router).

Who calls this: a person measuring the teacher (docs/rl_router.md "Lookahead teacher"); slow (the
teacher costs tens of milliseconds per decision), so run it ``nice``d, one process per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eval.spec import Replays
    from training.routing.lookahead import PairedStats
    from training.routing.registry import RouterContext
    from training.simulator.interface import LengthPredictor
    from training.simulator.request import Request
    from training.simulator.result import SimResult


def main(argv: list[str] | None = None) -> int:
    """Parse the options, replay, print one JSON line per seed. Returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="main")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--profile", default="v100-llama2-7b-paper")
    ap.add_argument("--chunked-prefill", type=int, default=None, help="prefill chunk, tokens (None: off)")
    ap.add_argument(
        "--predictor",
        choices=("registered", "task-mean"),
        default="registered",
        help="the routers' length predictor: the registered one (--predictor-version) or task means",
    )
    ap.add_argument("--predictor-version", default="1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--horizon", type=float, default=2.0, help="rollout horizon, seconds")
    ap.add_argument("--drain", action="store_true", help="drain each rollout (the old, slow teacher)")
    ap.add_argument("--tail-weight", type=float, default=0.5)
    ap.add_argument("--base", default="workload_impact_greedy")
    ap.add_argument("--admission", action="store_true", help="also try DELAY (use a +hold --base)")
    ap.add_argument("--baselines", default="round_robin,workload_impact_greedy")
    ap.add_argument(
        "--conservative", action="store_true", help="keep the base's answer unless significantly beaten"
    )
    ap.add_argument("--z", type=float, default=2.0, help="standard errors a conservative deviation needs")
    ap.add_argument("--min-margin", type=float, default=0.0, help="score seconds a deviation must gain")
    ap.add_argument(
        "--protect-tokens",
        type=float,
        default=None,
        help="admission: never delay a request predicted at least this long (tokens)",
    )
    ap.add_argument(
        "--max-wait", type=float, default=None, help="admission: never delay a request that waited this long"
    )
    ap.add_argument(
        "--oracle",
        choices=("all", "lengths", "future"),
        default=None,
        help="DIAGNOSTIC: the teacher reads the trace's true lengths and/or future (eval.lookahead_oracle)",
    )
    ap.add_argument(
        "--bench-at",
        type=int,
        default=None,
        help="instead: time teacher decisions at this decision of the first seed (greedy before it)",
    )
    args = ap.parse_args(argv)

    from eval.harness import split_threshold_tokens
    from eval.spec import EvalSpec, NamedWorkload, build
    from training.length.baselines import FixedPredictor
    from training.length.stored import PredictorChoice
    from training.routing.lookahead import LookaheadParams, simulate_with_lookahead
    from training.routing.registry import RouterContext, get_router
    from training.simulator import simulate
    from training.workloads.predictors import predictor_for

    spec = EvalSpec(
        workload=NamedWorkload(name=args.workload),
        requests=args.requests,
        rate=args.rate,
        instances=args.instances,
        profile=args.profile,
        chunked_prefill_tokens=args.chunked_prefill,
        predictor=(
            PredictorChoice(kind="registered", version=args.predictor_version)
            if args.predictor == "registered"
            else PredictorChoice(kind="task-mean")
        ),
    )
    built = build(spec)
    pred = predictor_for(spec.predictor, built.workload)
    inst = built.cluster.instance
    ctx = RouterContext(
        args.instances,
        built.latency_model,
        split_threshold_tokens(pred, built.workload.train),
        inst.block_size,
        inst.max_batch_size,
    )
    if args.bench_at is not None:
        trace = built.workload.sample(int(args.seeds.split(",")[0]))
        bench(trace, built, FixedPredictor.fix(pred, trace), ctx, args)
        return 0
    baselines = [b for b in args.baselines.split(",") if b]
    for seed in (int(s) for s in args.seeds.split(",")):
        trace = built.workload.sample(seed)
        fixed = FixedPredictor.fix(pred, trace)
        row: dict[str, object] = {"seed": seed, "requests": len(trace)}
        for name in baselines:
            t0 = time.perf_counter()
            res = simulate(trace, get_router(name, ctx), built.cluster, built.latency_model, fixed, seed=seed)
            row[name] = _summary(res) | {"wall_s": round(time.perf_counter() - t0, 3)}
        params = LookaheadParams(
            samples=args.samples,
            horizon_s=args.horizon,
            tail_weight=args.tail_weight,
            seed=seed,
            base=args.base,
            admission=args.admission,
            stop_at_horizon=not args.drain,
            conservative=args.conservative,
            z=args.z,
            min_margin_s=args.min_margin,
            max_wait_s=args.max_wait,
            protect_tokens=args.protect_tokens,
        )
        if args.oracle:
            from eval.lookahead_oracle import simulate_with_oracle_lookahead

            run = simulate_with_oracle_lookahead(
                trace,
                built.cluster,
                built.latency_model,
                fixed,
                ctx,
                params,
                true_lengths=args.oracle in ("all", "lengths"),
                true_future=args.oracle in ("all", "future"),
            )
        else:
            run = simulate_with_lookahead(trace, built.cluster, built.latency_model, fixed, ctx, params)
        key = f"lookahead_ORACLE_{args.oracle}_diagnostic" if run.oracle else "lookahead"
        row[key] = _summary(run.result) | {
            "decisions": run.decisions,
            "rollouts": run.rollouts,
            "teacher_wall_s": round(run.teacher_wall_s, 2),
            "decisions_per_s": round(run.decisions / run.teacher_wall_s, 2),
            "ms_per_decision": round(1000 * run.teacher_wall_s / run.decisions, 1),
            "forks_per_s": round(run.rollouts / max(run.fork_wall_s, 1e-9), 1),
            "delays": sum(1 for c in run.choices if c < 0),
        }
        row["paired"] = paired_summary(run.paired, params.samples)
        row["params"] = {k: getattr(params, k) for k in params.__dataclass_fields__}
        print(json.dumps(row), flush=True)
    return 0


def bench(
    trace: list[Request], built: Replays, fixed: LengthPredictor, ctx: RouterContext, args: argparse.Namespace
) -> None:
    """Teacher decisions/s and forks/s at decision ``args.bench_at`` of ``trace`` (greedy answers
    before it), for the cheap teacher (``--samples``, ``--horizon``) and the drain teacher, ten
    decisions each (``agrees_with_greedy``: how many of them ``workload_impact_greedy`` answers
    alike), next to the plain ``workload_impact_greedy`` replay of the whole trace (best of 3):
    one JSON line each (BENCHMARKS.md "Lookahead teacher decisions/s")."""
    from training.routing.lookahead import LookaheadParams, LookaheadTeacher, SampledLengths, known_request
    from training.routing.registry import get_router
    from training.simulator import simulate
    from training.simulator.engine import ReplayState

    cluster, lm = built.cluster, built.latency_model
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        simulate(trace, get_router("workload_impact_greedy", ctx), cluster, lm, fixed, seed=0)
        walls.append(time.perf_counter() - t0)
    per_greedy = min(walls) / len(trace)
    print(
        json.dumps({"greedy_replay_s": round(min(walls), 4), "greedy_decisions_per_s": round(1 / per_greedy)})
    )
    by_id = {r.request_id: r for r in trace}
    cheap = LookaheadParams(samples=args.samples, horizon_s=args.horizon, stop_at_horizon=True)
    for label, params, n in (
        ("stop_at_horizon", cheap, 10),
        ("drain", LookaheadParams(samples=args.samples, horizon_s=args.horizon), 10),
    ):
        wrapped = SampledLengths(fixed)
        teacher = LookaheadTeacher(params, ctx, wrapped)
        state = ReplayState(trace, cluster, lm, wrapped)
        greedy = get_router("workload_impact_greedy", ctx)
        greedy.reset(ctx.num_instances, 0)
        k = agree = 0
        while (decision := state.next_decision()) is not None and k < args.bench_at + n:
            rv, cv = decision
            teacher.observe(known_request(by_id[rv.request_id], rv))
            choice = greedy.route(rv, cv)
            if k >= args.bench_at:
                answer = teacher.decide(state, rv, cv)
                agree += int(answer == choice)
                choice = answer
            state.decide(choice)
            k += 1
        per = teacher.wall_s / teacher.decisions
        row = {
            "teacher": label,
            "in_system": len(state.unfinished()),
            "decisions": teacher.decisions,
            "rollouts_per_decision": teacher.rollouts // teacher.decisions,
            "ms_per_decision": round(1000 * per, 1),
            "decisions_per_s": round(1 / per, 3),
            "forks_per_s": round(teacher.rollouts / teacher.fork_s),
            "x_greedy_decision": round(per / per_greedy),
            "agrees_with_greedy": agree,
        }
        print(json.dumps(row), flush=True)


def paired_summary(paired: Sequence[PairedStats], samples: int) -> dict[str, float]:
    """The teacher's paired comparisons with its base over a replay: decisions compared, the
    median |mean| and median std over samples of the best alternative's score difference (score
    seconds), the median |t| (= |mean| / (std / sqrt(samples))), how often the plain argmin leaves the
    base's answer (``plain_deviates``: best mean < 0), and how often a deviation is significant."""
    if not paired:
        return {"decisions": 0}
    mean = np.array([x.mean_s for x in paired])
    std = np.array([x.std_s for x in paired])
    t = np.abs(mean) / np.maximum(std / np.sqrt(samples), 1e-12)
    return {
        "decisions": len(paired),
        "median_abs_mean_s": round(float(np.median(np.abs(mean))), 5),
        "median_std_s": round(float(np.median(std)), 5),
        "median_abs_t": round(float(np.median(t)), 3) if samples > 1 else float("nan"),
        "plain_deviates": round(float(np.mean(mean < 0)), 4),
        "significant": round(float(np.mean([x.significant for x in paired])), 4),
    }


def _summary(res: SimResult) -> dict[str, object]:
    """Mean and p99 E2E (s), and the anatomy of the tail: over the requests at or above the p99,
    the mean seconds held at the router, queued at the instance and running (E2E less both), output
    tokens and preemptions (where a p99 comes from: admission, queueing or slow batches)."""
    e = np.asarray(res.e2e_s)
    p99 = float(np.quantile(e, 0.99))
    top = e >= p99
    router, queue = np.asarray(res.router_wait_s)[top], np.asarray(res.queue_wait_s)[top]
    return {
        "mean": round(float(e.mean()), 3),
        "p99": round(p99, 2),
        "tail": {
            "router_wait_s": round(float(router.mean()), 2),
            "queue_wait_s": round(float(queue.mean()), 2),
            "running_s": round(float((e[top] - router - queue).mean()), 2),
            "output_tokens": round(float(np.asarray(res.output_tokens)[top].mean()), 1),
            "preemptions": round(float(np.asarray(res.preemptions)[top].mean()), 2),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
