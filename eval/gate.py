"""The statistical promotion gate: does a newly trained router beat the champion and every baseline?

Who calls this: the nightly retraining flow, once per trained router, after ``eval.harness.evaluate``
replayed the challenger, the current champion (if any) and every baseline router on the same held-out
replays and seeds. Pure: an ``EvalReport`` in, a frozen ``GateResult`` out; no I/O, nothing changed.

The rule. The challenger is compared with the champion (when there is one) and with the *best
baseline*: the non-oracle router with the lowest mean E2E over seeds, other than the challenger, the
champion and ``exclude`` (oracle routers read true output lengths and cannot be deployed, so they
never count). Each comparison is paired per seed, since every router replays the same trace for a
seed: ``d_i = comparator_i - challenger_i`` of the per-seed mean E2E (seconds, positive = challenger
faster). A check passes when

- the two-sided Student-t confidence interval of the mean of ``d`` lies above zero
  (``mean(d) - t_{(1+c)/2, n-1} * sd(d) / sqrt(n) > 0``), with at least ``min_seeds`` seeds, and
- the challenger's p99 E2E (mean over seeds) is at most the comparator's times
  ``1 + p99_tolerance_pct / 100``, so a better mean cannot hide a worse tail.

The challenger is promoted only when every check passes, so a tie (equal means) never promotes.
A report whose seeds repeat is refused: a repeated seed replays the same window, so it adds no
evidence but narrows the interval (``eval_seeds = [0, 0]`` once passed on one window). Identical
per-seed differences give a zero width interval (the point itself). A NaN per-seed value (a router
that served no request on that seed) fails its check with a reason. Baselines with NaN values rank
after every finite one.
Units: seconds for latencies, % for improvements and the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eval.report import EvalReport, RouterResult

_FROZEN = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class GateConfig(BaseModel):
    """How strict the gate is; the resolved config is kept in every ``GateResult``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    confidence: float = Field(default=0.95, ge=0.5, le=0.999)
    """Two-sided confidence level of the paired mean-E2E interval."""
    p99_tolerance_pct: float = Field(default=0.0, ge=0.0)
    """The challenger's p99 E2E may exceed a comparator's by at most this many percent."""
    min_seeds: int = Field(default=2, ge=2)
    """Fewer replays (seeds) than this and the challenger is refused: no interval to trust."""


class GateCheck(BaseModel):
    """The challenger against one comparator (seconds; differences are comparator minus challenger)."""

    model_config = _FROZEN

    comparator: str
    kind: Literal["champion", "best_baseline"]
    challenger_mean_s: float
    """Challenger's mean E2E, averaged over seeds."""
    comparator_mean_s: float
    diff_mean_s: float
    """Mean over seeds of the per-seed mean-E2E difference (positive = challenger faster)."""
    ci_low_s: float
    ci_high_s: float
    improvement_pct: float
    """``100 * diff_mean_s / comparator_mean_s``."""
    challenger_p99_s: float
    """Challenger's p99 E2E, averaged over seeds."""
    comparator_p99_s: float
    mean_ok: bool
    p99_ok: bool
    passed: bool
    reason: str


class GateResult(BaseModel):
    """The gate's decision with every check behind it."""

    model_config = _FROZEN

    passed: bool
    challenger: str
    champion: str | None
    best_baseline: str
    n_seeds: int
    config: GateConfig
    checks: tuple[GateCheck, ...]
    reason: str
    """One line: why the challenger is promoted, or which comparator refused it and why."""

    def to_markdown(self) -> str:
        """The checks as a markdown table, then the decision line."""
        pct = f"{100 * self.config.confidence:g} %"
        lines = [
            f"Promotion gate for `{self.challenger}` ({self.n_seeds} seeds, paired, {pct} t interval; "
            f"p99 tolerance {self.config.p99_tolerance_pct:g} %):",
            "",
            "| comparator | kind | E2E mean (s) challenger / comparator | diff (s) | "
            f"{pct} CI (s) | improvement (%) | E2E p99 (s) challenger / comparator | result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {c.comparator} | {c.kind} | {c.challenger_mean_s:.3f} / {c.comparator_mean_s:.3f} | "
                f"{c.diff_mean_s:+.3f} | [{c.ci_low_s:+.3f}, {c.ci_high_s:+.3f}] | "
                f"{c.improvement_pct:+.1f} | "
                f"{c.challenger_p99_s:.3f} / {c.comparator_p99_s:.3f} | {'pass' if c.passed else 'FAIL'} |"
            )
        decision = "PROMOTE" if self.passed else "REFUSE"
        lines += ["", f"**{decision}**: {self.reason}"]
        return "\n".join(lines) + "\n"


def promotion_gate(
    report: EvalReport,
    challenger: str,
    champion: str | None = None,
    config: GateConfig | None = None,
    exclude: Sequence[str] = (),
) -> GateResult:
    """Whether ``challenger`` should replace ``champion``: it must beat it and the best baseline.

    ``exclude``: routers that are neither champion nor baselines (e.g. other candidates of the same
    run); names not in the report are ignored. Raises ``ValueError`` for a challenger or champion not in
    the report, a challenger equal to the champion, routers with different seed counts, or no baseline.
    """
    cfg = config or GateConfig()
    known = ", ".join(sorted(report.routers))
    for role, name in (("challenger", challenger), ("champion", champion)):
        if name is not None and name not in report.routers:
            raise ValueError(f"unknown {role} router {name!r}; the report has: {known}")
    if champion == challenger:
        raise ValueError(f"challenger and champion are the same router {challenger!r}")

    skip = {challenger, champion, *exclude}
    baselines = [r for name, r in report.routers.items() if name not in skip and not r.oracle]
    if not baselines:
        raise ValueError(
            f"no baseline router to compare {challenger!r} against (oracle routers never count); "
            f"the report has: {known}"
        )
    best = min(baselines, key=_ranking_key)

    ch = report.routers[challenger]
    comparators: list[tuple[RouterResult, Literal["champion", "best_baseline"]]] = []
    if champion is not None:
        comparators.append((report.routers[champion], "champion"))
    comparators.append((best, "best_baseline"))
    checks = tuple(_check(ch, other, kind, cfg, report.seeds) for other, kind in comparators)
    n_seeds = len(ch.overall.e2e_s.mean.per_seed)

    repeated = sorted({s for s in report.seeds if list(report.seeds).count(s) > 1})
    if repeated:
        passed = False
        reason = (
            f"not promoted: seed(s) {', '.join(map(str, repeated))} repeat in the evaluation; a repeated "
            "seed replays the same window (no more evidence, a falsely narrow interval)"
        )
    elif n_seeds < cfg.min_seeds:
        passed = False
        reason = (
            f"not promoted: a confidence interval needs at least {cfg.min_seeds} replays (seeds), "
            f"got {n_seeds}"
        )
    elif all(c.passed for c in checks):
        passed = True
        reason = f"promote {challenger}: " + "; ".join(c.reason for c in checks)
    else:
        passed = False
        reason = "not promoted: " + "; ".join(c.reason for c in checks if not c.passed)
    return GateResult(
        passed=passed,
        challenger=challenger,
        champion=champion,
        best_baseline=best.name,
        n_seeds=n_seeds,
        config=cfg,
        checks=checks,
        reason=reason,
    )


def _ranking_key(router: RouterResult) -> tuple[bool, float]:
    """Sort key for the best baseline: finite mean E2E first, lowest first; NaN (served nothing) last."""
    mean = float(np.mean(router.overall.e2e_s.mean.per_seed))
    return (not math.isfinite(mean), mean)


def _check(
    challenger: RouterResult,
    other: RouterResult,
    kind: Literal["champion", "best_baseline"],
    cfg: GateConfig,
    seeds: Sequence[int],
) -> GateCheck:
    """One paired comparison of per-seed mean E2E and mean-over-seeds p99 E2E (see the module doc)."""
    ch_mean = np.asarray(challenger.overall.e2e_s.mean.per_seed, dtype=np.float64)
    ot_mean = np.asarray(other.overall.e2e_s.mean.per_seed, dtype=np.float64)
    ch_p99 = np.asarray(challenger.overall.e2e_s.p99.per_seed, dtype=np.float64)
    ot_p99 = np.asarray(other.overall.e2e_s.p99.per_seed, dtype=np.float64)
    if len(ch_mean) != len(ot_mean):
        raise ValueError(
            f"{challenger.name!r} has {len(ch_mean)} seeds but {other.name!r} has {len(ot_mean)}; "
            "the gate needs both on the same replays"
        )
    n = len(ch_mean)
    diffs = ot_mean - ch_mean
    diff_mean = float(diffs.mean()) if n else float("nan")
    if n >= 2:
        from scipy import stats  # here, not at import: NightlyConfig (a GateConfig field) loads fast

        half = float(stats.t.ppf((1 + cfg.confidence) / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    else:
        half = float("nan")
    lo, hi = diff_mean - half, diff_mean + half
    ch_p99_mean, ot_p99_mean = float(np.mean(ch_p99)), float(np.mean(ot_p99))
    ot_mean_mean = float(np.mean(ot_mean))
    limit_p99 = ot_p99_mean * (1 + cfg.p99_tolerance_pct / 100)

    label = f"vs {kind.replace('_', ' ')} {other.name}"
    pct = f"{100 * cfg.confidence:g} %"
    non_finite = [
        f"{who} has no finite {what} E2E on seed(s) {_bad_seeds(values, seeds)}"
        for who, what, values in (
            (challenger.name, "mean", ch_mean),
            (challenger.name, "p99", ch_p99),
            (other.name, "mean", ot_mean),
            (other.name, "p99", ot_p99),
        )
        if not np.isfinite(values).all()
    ]
    if non_finite:
        mean_ok = p99_ok = False
        problems = non_finite
    else:
        mean_ok = n >= cfg.min_seeds and lo > 0
        p99_ok = ch_p99_mean <= limit_p99
        problems = []
        if n < cfg.min_seeds:
            problems.append(f"only {n} seeds, a confidence interval needs at least {cfg.min_seeds}")
        elif not mean_ok:
            problems.append(
                f"mean E2E not clearly better: diff {diff_mean:+.3f} s, {pct} CI [{lo:+.3f}, {hi:+.3f}] s "
                "does not exclude zero on the good side"
            )
        if not p99_ok:
            problems.append(
                f"p99 E2E {ch_p99_mean:.3f} s exceeds {other.name}'s {ot_p99_mean:.3f} s "
                f"(+{cfg.p99_tolerance_pct:g} % allowed: {limit_p99:.3f} s)"
            )
    passed = mean_ok and p99_ok
    if passed:
        reason = (
            f"{label}: mean E2E {ch_mean.mean():.3f} s vs {ot_mean_mean:.3f} s, diff {diff_mean:+.3f} s "
            f"({pct} CI [{lo:+.3f}, {hi:+.3f}] s), p99 {ch_p99_mean:.3f} s vs {ot_p99_mean:.3f} s"
        )
    else:
        reason = f"{label}: " + "; ".join(problems)
    return GateCheck(
        comparator=other.name,
        kind=kind,
        challenger_mean_s=float(np.mean(ch_mean)),
        comparator_mean_s=ot_mean_mean,
        diff_mean_s=diff_mean,
        ci_low_s=lo,
        ci_high_s=hi,
        improvement_pct=100 * diff_mean / ot_mean_mean if ot_mean_mean else float("nan"),
        challenger_p99_s=ch_p99_mean,
        comparator_p99_s=ot_p99_mean,
        mean_ok=mean_ok,
        p99_ok=p99_ok,
        passed=passed,
        reason=reason,
    )


def _bad_seeds(values: np.ndarray, seeds: Sequence[int]) -> str:
    """The seeds (or seed positions, if the report's seed list does not match) of non-finite values."""
    bad: list[int] = np.flatnonzero(~np.isfinite(values)).tolist()
    names = [seeds[i] for i in bad] if len(seeds) == len(values) else bad
    return ", ".join(map(str, names))
