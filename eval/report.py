"""The one typed evaluation report (frozen pydantic) and the statistics behind it.

Who uses this: ``eval.harness.evaluate`` builds an ``EvalReport`` once per run; the CLI prints it,
the markdown writer renders it, sinks store it, and the promotion gate (later) compares two.

Statistics: every number is first computed per seed (one replay per seed), then summarised as the
mean over seeds with a 95 % confidence half-width from Student's t (``t_{0.975, n-1} * s / sqrt(n)``;
0 with one seed). Improvements vs round robin are *paired*: per seed,
``100 * (baseline - router) / baseline`` on the same trace, then averaged (positive = better).
Units: seconds for latencies, counts for preemptions.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict

LATENCY_METRICS = ("e2e_s", "ttft_s", "tbt_s", "router_wait_s", "queue_wait_s")
PERCENTILES = (50, 90, 99)

_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """Student's t 97.5 % quantile for ``df`` degrees of freedom (table to 30, then a 3-term expansion)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


EVALUATION_FIELDS = frozenset({"evaluation_id", "evaluated_at"})
"""The fields of an ``EvalReport`` that name the evaluation rather than its results: two runs of the
same spec and seeds differ in these only (``model_dump_json(exclude=set(EVALUATION_FIELDS))``)."""


def new_evaluation() -> tuple[str, datetime]:
    """A fresh ``(evaluation_id, evaluated_at)``: a random UUID and now (UTC). The harness gives
    them to the report of each evaluation it runs."""
    return str(uuid.uuid4()), datetime.now(UTC)


def ci95_halfwidth(values: Sequence[float]) -> float:
    """95 % t confidence half-width of the mean of ``values`` (0 for fewer than two values)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(x) < 2:
        return 0.0
    return float(t_quantile_975(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


_FROZEN = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class Stat(BaseModel):
    """One number over seeds: mean, 95 % CI half-width, and the per-seed values."""

    model_config = _FROZEN

    mean: float
    ci95: float
    per_seed: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = tuple(float(v) for v in values)
        finite = [v for v in vals if math.isfinite(v)]
        mean = float(np.mean(finite)) if finite else float("nan")
        return cls(mean=mean, ci95=ci95_halfwidth(finite), per_seed=vals)


class MetricSummary(BaseModel):
    """Mean and percentiles of one per-request latency metric (seconds), each over seeds."""

    model_config = _FROZEN

    mean: Stat
    p50: Stat
    p90: Stat
    p99: Stat


class GroupMetrics(BaseModel):
    """All metrics of one group of requests (everything, one task, or one workload class)."""

    model_config = _FROZEN

    n_requests: float
    """Requests in the group, averaged over seeds."""
    e2e_s: MetricSummary
    ttft_s: MetricSummary
    tbt_s: MetricSummary
    router_wait_s: MetricSummary
    queue_wait_s: MetricSummary
    preemptions_per_request: Stat
    preemptions_total: Stat


class RouterResult(BaseModel):
    """One router's results; ``oracle`` routers read true output lengths (not deployable)."""

    model_config = _FROZEN

    name: str
    oracle: bool
    predictor: str
    description: str
    overall: GroupMetrics
    by_task: dict[str, GroupMetrics]
    by_class: dict[str, GroupMetrics]
    vs_baseline_pct: dict[str, Stat] | None
    """Paired improvement vs the baseline router in % (positive = better), keyed ``e2e_mean`` etc."""


class EvalReport(BaseModel):
    """The result of one evaluation run: every router on the same held-out replays and seeds."""

    model_config = _FROZEN

    workload: str
    workload_description: str
    synthetic: bool
    latency_model: str
    cluster: dict[str, object]
    seeds: tuple[int, ...]
    predictor: str
    baseline: str
    class_thresholds: dict[str, float]
    routers: dict[str, RouterResult]
    evaluation_id: str = ""
    """The evaluation's id (a UUID, ``new_evaluation``), carried by ``marts.eval_results`` and, for a
    nightly run, ``ops.nightly_runs``. Empty in a report made before ids: ``stored_id`` then."""
    evaluated_at: datetime | None = None
    """When the evaluation finished [UTC] (``None``: a report made before ids)."""

    def stored_id(self) -> str:
        """The id its ``marts.eval_results`` rows carry: ``evaluation_id``, or for a report made
        before ids, the hash of its content (what those rows' ``run_id`` held then, so the rows an
        old report stored and a cached old ``report.json`` still join)."""
        if self.evaluation_id:
            return self.evaluation_id
        content = self.model_dump_json(exclude=set(EVALUATION_FIELDS))
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, dict[str, float | bool | None]]:
        """The flat per-router figures ``loadwise compare --json`` prints (seconds, counts, %)."""
        out: dict[str, dict[str, float | bool | None]] = {}
        for name, r in self.routers.items():
            o = r.overall
            vs = r.vs_baseline_pct
            out[name] = {
                "oracle": r.oracle,
                "e2e_mean": o.e2e_s.mean.mean,
                "e2e_mean_ci95": o.e2e_s.mean.ci95,
                "e2e_p50": o.e2e_s.p50.mean,
                "e2e_p90": o.e2e_s.p90.mean,
                "e2e_p99": o.e2e_s.p99.mean,
                "ttft_mean": o.ttft_s.mean.mean,
                "ttft_p99": o.ttft_s.p99.mean,
                "tbt_mean": o.tbt_s.mean.mean,
                "router_wait_mean": o.router_wait_s.mean.mean,
                "queue_wait_mean": o.queue_wait_s.mean.mean,
                "preemptions": o.preemptions_total.mean,
                "vs_round_robin_pct": vs["e2e_mean"].mean if vs else None,
                "vs_round_robin_pct_ci95": vs["e2e_mean"].ci95 if vs else None,
            }
        return out


def summarize_group(per_seed: Sequence[dict[str, np.ndarray]]) -> GroupMetrics:
    """``GroupMetrics`` from per-seed arrays (keys: the latency metrics and ``preemptions``)."""

    def metric(key: str) -> MetricSummary:
        means: list[float] = []
        pcts: dict[int, list[float]] = {p: [] for p in PERCENTILES}
        for arrays in per_seed:
            x = np.asarray(arrays[key], dtype=np.float64)
            x = x[np.isfinite(x)]
            means.append(float(x.mean()) if len(x) else float("nan"))
            for p in PERCENTILES:
                pcts[p].append(float(np.percentile(x, p)) if len(x) else float("nan"))
        return MetricSummary(mean=Stat.of(means), **{f"p{p}": Stat.of(v) for p, v in pcts.items()})

    pre = [np.asarray(a["preemptions"], dtype=np.float64) for a in per_seed]
    return GroupMetrics(
        n_requests=float(np.mean([len(p) for p in pre])),
        **{m: metric(m) for m in LATENCY_METRICS},
        preemptions_per_request=Stat.of([float(p.mean()) if len(p) else 0.0 for p in pre]),
        preemptions_total=Stat.of([float(p.sum()) for p in pre]),
    )


def improvement_pct(baseline: Sequence[float], router: Sequence[float]) -> Stat:
    """Paired per-seed ``100 * (baseline - router) / baseline`` (positive = router is better)."""
    vals = [
        100.0 * (b - r) / b if b > 0 and math.isfinite(b) and math.isfinite(r) else float("nan")
        for b, r in zip(baseline, router, strict=True)
    ]
    return Stat.of(vals)


def vs_baseline(base: GroupMetrics, other: GroupMetrics) -> dict[str, Stat]:
    pairs = {
        "e2e_mean": (base.e2e_s.mean, other.e2e_s.mean),
        "e2e_p99": (base.e2e_s.p99, other.e2e_s.p99),
        "ttft_mean": (base.ttft_s.mean, other.ttft_s.mean),
        "ttft_p99": (base.ttft_s.p99, other.ttft_s.p99),
        "tbt_mean": (base.tbt_s.mean, other.tbt_s.mean),
    }
    return {k: improvement_pct(b.per_seed, o.per_seed) for k, (b, o) in pairs.items()}


def _fmt(stat: Stat, digits: int = 2) -> str:
    if not math.isfinite(stat.mean):
        return "n/a"
    return f"{stat.mean:.{digits}f} ± {stat.ci95:.{digits}f}" if stat.ci95 else f"{stat.mean:.{digits}f}"


def _evaluation_line(report: EvalReport) -> list[str]:
    """The evaluation's id and time, as ``marts.eval_results`` holds them (none for an old report)."""
    if not (report.evaluation_id and report.evaluated_at):
        return []
    when = f"{report.evaluated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
    return [f"- evaluation `{report.evaluation_id}`, finished {when} UTC (`marts.eval_results`)"]


def to_markdown(report: EvalReport) -> str:
    """The report as markdown tables (overall, then E2E mean per task and per workload class)."""
    lines = [
        f"# Evaluation: {report.workload}",
        "",
        f"- workload: {report.workload_description}",
        f"- latency model: `{report.latency_model}`; cluster: "
        + ", ".join(f"{k}={v}" for k, v in report.cluster.items()),
        f"- seeds: {', '.join(map(str, report.seeds))}; "
        f"predictor for non-oracle routers: `{report.predictor}`",
        f"- mean ± 95 % CI over seeds (t-distribution); improvement vs `{report.baseline}` is paired per "
        "seed, positive = better. ORACLE routers read true output lengths.",
        "- classes: heavy prefill if the prompt's prefill alone takes >= "
        f"{report.class_thresholds['heavy_prefill_s']:g} s, heavy decode if the output's decode alone "
        f"takes >= {report.class_thresholds['heavy_decode_s']:g} s; short/long split for routers at "
        f"{report.class_thresholds.get('short_long_threshold_tokens', float('nan')):.0f} "
        "predicted output tokens.",
        *_evaluation_line(report),
        "",
        "| router | E2E mean (s) | E2E p50 | E2E p90 | E2E p99 | TTFT mean | TTFT p99 | TBT mean | "
        "router wait | queue wait | preemptions | E2E vs RR (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report.routers.items():
        o = r.overall
        vs = r.vs_baseline_pct["e2e_mean"] if r.vs_baseline_pct else None
        label = f"{name} (ORACLE)" if r.oracle else name
        lines.append(
            f"| {label} | {_fmt(o.e2e_s.mean)} | {_fmt(o.e2e_s.p50)} | {_fmt(o.e2e_s.p90)} | "
            f"{_fmt(o.e2e_s.p99)} | {_fmt(o.ttft_s.mean)} | {_fmt(o.ttft_s.p99)} | {_fmt(o.tbt_s.mean, 4)} | "
            f"{_fmt(o.router_wait_s.mean)} | {_fmt(o.queue_wait_s.mean)} | {_fmt(o.preemptions_total, 1)} | "
            f"{_fmt(vs, 1) if vs else '—'} |"
        )
    for title, attr in (("task", "by_task"), ("workload class", "by_class")):
        groups = sorted({g for r in report.routers.values() for g in getattr(r, attr)})
        if not groups:
            continue
        first = next(iter(report.routers.values()))
        counts = [getattr(first, attr).get(g) for g in groups]
        lines += [
            "",
            f"E2E mean (s) per {title} (requests per seed in brackets):",
            "",
            "| router | "
            + " | ".join(f"{g} [{c.n_requests:.0f}]" if c else g for g, c in zip(groups, counts, strict=True))
            + " |",
            "|---|" + "---|" * len(groups),
        ]
        for name, r in report.routers.items():
            cells = [_fmt(getattr(r, attr)[g].e2e_s.mean) if g in getattr(r, attr) else "—" for g in groups]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
