"""Hand-built evaluation reports for the promotion gate's tests: a router's per-seed mean E2E in,
an ``EvalReport`` out (no replay). Used by ``tests/eval/test_gate.py`` and the promotion-race tests."""

from __future__ import annotations

from collections.abc import Sequence

from eval.report import EvalReport, GroupMetrics, MetricSummary, RouterResult, Stat

SEEDS = (0, 1, 2)
BASE = (10.0, 12.0, 11.0)
"""Per-seed mean E2E (s) of the round-robin baseline; other routers are set relative to it."""


def summary(mean: Sequence[float], p99: Sequence[float]) -> MetricSummary:
    return MetricSummary(mean=Stat.of(mean), p50=Stat.of(mean), p90=Stat.of(p99), p99=Stat.of(p99))


def hand_router(
    name: str, mean: Sequence[float], p99: Sequence[float] | None = None, oracle: bool = False
) -> RouterResult:
    p99 = p99 if p99 is not None else [3 * m for m in mean]
    zero = summary([0.0] * len(mean), [0.0] * len(mean))
    overall = GroupMetrics(
        n_requests=100.0,
        e2e_s=summary(mean, p99),
        ttft_s=zero,
        tbt_s=zero,
        router_wait_s=zero,
        queue_wait_s=zero,
        preemptions_per_request=Stat.of([0.0] * len(mean)),
        preemptions_total=Stat.of([0.0] * len(mean)),
    )
    return RouterResult(
        name=name,
        oracle=oracle,
        predictor="oracle" if oracle else "task_mean",
        description=name,
        overall=overall,
        by_task={},
        by_class={},
        vs_baseline_pct=None,
    )


def hand_report(*routers: RouterResult) -> EvalReport:
    return EvalReport(
        workload="synthetic",
        workload_description="hand-built",
        synthetic=True,
        latency_model="test",
        cluster={"num_instances": 2},
        seeds=SEEDS[: len(routers[0].overall.e2e_s.mean.per_seed)],
        predictor="task_mean",
        baseline="round_robin",
        class_thresholds={"heavy_prefill_s": 0.5, "heavy_decode_s": 5.0},
        routers={r.name: r for r in routers},
    )


def minus(values: Sequence[float], deltas: Sequence[float]) -> list[float]:
    return [v - d for v, d in zip(values, deltas, strict=True)]
