"""The one place that decides whether a model version may become ``champion``, and the moves it allows.

Who calls this: every path that moves ``champion``: the metric models' registration
(``flows.models.publish``), the router's (``flows.models.router.register_router``), the nightly
``promote-router`` step and ``loadwise promote`` by hand; each asks ``gate_verdict`` and moves with a
compare-and-set against the champion the verdict was about, under ``ModelRegistry.champion_lock``.

- ``length-predictor``: two conditions, both required. (1) Accuracy: the challenger's expected-length
  MAE in tokens on held-out prompts must be strictly lower than the champion's, for the same serving
  model (a bucket-free metric, so predictors with different bucket schemes compare fairly). A
  different serving model never replaces the champion automatically. (2) Routing: a router that
  reads the predictions, replayed on the same held-out windows and seeds with the challenger's and
  with the champion's predictions (``flows.models.predictor.routing_evidence``), must not route
  worse with the challenger: its mean E2E at most ``PREDICTOR_MEAN_TOLERANCE_PCT`` higher and its
  p99 E2E at most ``PREDICTOR_P99_TOLERANCE_PCT`` higher (``routing_verdict``). The replay's figures
  are recorded on the version (``PREDICTOR_ROUTING_TAG``) with the champion they were measured
  against; like the router's evidence they hold only while that champion still serves. The first
  champion needs no replay (nothing to compare with).
- ``impact-estimator``: held-out MAPE of iteration time strictly lower, for the same GPU profile (the
  paper's V100 preset has no held-out points: it becomes champion only when there is none).
- ``llm-router``: the statistical gate (``eval.gate.promotion_gate``: paired per-seed interval and p99
  against the champion, replayed on the same held-out windows, and the best baseline) decides when
  the router is evaluated (``gate_router``); its verdict and the champion it compared with are
  recorded on the version, and ``gate_verdict`` reads that evidence (it holds only while that
  champion still serves). The nightly flow evaluates several candidates (RL policies and tuned
  rules) and gates the best one (``choose_candidate``); while ``llm-router`` has no champion at all,
  the first one is decided by ``first_champion_gate`` (not significantly worse than the best
  baseline) instead, and recorded and moved the same way.

A tie never promotes: a challenger must be better, not equal. Reads and alias moves only: nothing
here trains or registers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flows.registry import (
    CHAMPION,
    ChampionMovedError,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    gate_tags,
    metric_verdict,
)

if TYPE_CHECKING:
    from eval.gate import GateConfig, GateResult
    from eval.report import EvalReport, RouterResult

LENGTH_PREDICTOR = "length-predictor"
IMPACT_ESTIMATOR = "impact-estimator"
LLM_ROUTER = "llm-router"
PREDICTOR_GATE_METRIC = "mae_tokens"
ESTIMATOR_GATE_METRIC = "chosen.holdout_mape_pct"
PREDICTOR_ROUTING_TAG = "loadwise.gate.routing"
"""Version tag of a ``length-predictor`` challenger: its routing replay against the champion (JSON,
``flows.models.predictor.RoutingEvidence``)."""
PREDICTOR_MEAN_TOLERANCE_PCT = 1.0
"""Routing with the challenger's predictions may raise the mean E2E by at most this many percent.
Why 1 %: the replays are paired (same requests, arrivals and seeds; deterministic), so any
difference is the predictions' doing, but a prediction change that moves a few requests' order
shifts a 300-request mean by a few tenths of a percent either way; a more accurate predictor must
not be refused for that, while a 1 % slowdown is about the smallest effect docs/evaluation.md
reports between routers."""
PREDICTOR_P99_TOLERANCE_PCT = 0.0
"""Routing with the challenger's predictions must not raise the p99 E2E at all (the statistical router
gate's default, ``eval.gate.GateConfig.p99_tolerance_pct``)."""


@dataclass(frozen=True)
class MetricGate:
    """A model whose gate is one held-out metric, comparable only within ``scope`` (config keys)."""

    metric: str
    higher_is_better: bool
    scope: tuple[str, ...]


METRIC_GATES = {
    LENGTH_PREDICTOR: MetricGate(PREDICTOR_GATE_METRIC, False, ("serving_model",)),
    IMPACT_ESTIMATOR: MetricGate(ESTIMATOR_GATE_METRIC, False, ("profile",)),
}


@dataclass(frozen=True)
class Verdict:
    """``gate_verdict``'s answer: may ``version`` replace ``champion`` (the version it is about)?"""

    passed: bool
    reason: str
    champion: str | None


def gate_verdict(registry: ModelRegistry, name: str, version: str, alias: str = CHAMPION) -> Verdict:
    """Whether ``version`` of ``name`` may replace the current champion, and why (reads only).
    ``alias``: the gated alias judged (``champion``, or for ``llm-router`` a setting alias such as
    ``paper-main``, whose evidence is recorded under its own tags, ``flows.registry.gate_tags``).

    Who calls this: every path that moves ``champion`` (``promote_through_gate``, ``gate_router``
    via its recorded evidence, ``promote_by_hand``), under ``ModelRegistry.champion_lock`` so that
    the champion it judged is the one replaced. Metric models compare their metric now; the router's
    statistical gate needs replays, so its verdict is the evidence recorded on the version
    (``loadwise.gate.passed`` and the champion it compared with), valid only while that champion
    still serves. A model with no gate, or a router version without evidence, is refused.
    """
    tags = gate_tags(alias)
    if alias != CHAMPION and name != LLM_ROUTER:
        return Verdict(False, f"setting aliases such as {alias!r} are gated for {LLM_ROUTER} only", None)
    cand = registry.get(name, version)
    champ = registry.find(name, alias)
    current = champ.version if champ else None
    if current == version:
        return Verdict(False, f"{name} v{version} already is the {alias}", current)
    gate = METRIC_GATES.get(name)
    if gate is not None:
        passed, reason = metric_verdict(cand, champ, gate.metric, gate.higher_is_better, scope=gate.scope)
        if name == LENGTH_PREDICTOR and passed and current is not None:
            routed, why = routing_verdict(cand.tags.get(PREDICTOR_ROUTING_TAG), current)
            return Verdict(
                routed, f"{reason}; {why}" if routed else f"kept champion: {why} ({reason})", current
            )
        return Verdict(passed, reason, current)
    if name != LLM_ROUTER:
        return Verdict(False, f"no gate is defined for model {name!r}", current)
    verdict, against = cand.tags.get(tags.passed), cand.tags.get(tags.against)
    recorded = cand.tags.get(tags.decision)
    what = "champion" if alias == CHAMPION else f"{alias} champion"
    if verdict is None:
        said = f" (its recorded decision: {recorded})" if recorded else ""
        return Verdict(
            False,
            f"no gate evidence for {name} v{version}: no evaluation against the {what} and the best "
            f"baseline is recorded on it{said}",
            current,
        )
    if verdict != "true":
        return Verdict(False, f"the gate refused v{version}: {recorded}", current)
    compared = None if against in (None, "none") else against
    if compared != current:
        return Verdict(
            False,
            f"the gate passed v{version} against {what} {v_(compared)}, but the {what} is now "
            f"{v_(current)}: that evidence no longer applies (evaluate again)",
            current,
        )
    return Verdict(True, f"the gate passed v{version} against {what} {v_(compared)}: {recorded}", current)


def routing_verdict(
    evidence: str | Mapping[str, object] | None,
    champion: str,
    mean_tolerance_pct: float = PREDICTOR_MEAN_TOLERANCE_PCT,
    p99_tolerance_pct: float = PREDICTOR_P99_TOLERANCE_PCT,
) -> tuple[bool, str]:
    """Whether a ``length-predictor`` challenger routes no worse than ``champion`` (the version now
    serving), from its recorded routing replay (``PREDICTOR_ROUTING_TAG``: JSON text or its dict);
    ``(passed, reason)``. Pure. Refused: no evidence, evidence measured against another champion, a
    non-finite figure, a mean E2E more than ``mean_tolerance_pct`` above the champion's, or a p99
    E2E more than ``p99_tolerance_pct`` above it (both averaged over the replay's seeds)."""
    if evidence is None:
        return False, (
            f"no routing evidence: the challenger was not replayed against champion v{champion} "
            "(train-predictor and the nightly do that before the gate)"
        )
    try:
        ev: dict[str, Any] = json.loads(evidence) if isinstance(evidence, str) else dict(evidence)
        against = str(ev["champion"])
        ours_mean, ours_p99 = float(ev["challenger_mean_e2e_s"]), float(ev["challenger_p99_e2e_s"])
        theirs_mean, theirs_p99 = float(ev["champion_mean_e2e_s"]), float(ev["champion_p99_e2e_s"])
    except (ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable routing evidence ({type(exc).__name__}: {exc})"
    if against != champion:
        return False, (
            f"the routing replay compared with champion v{against}, but the champion is now v{champion}: "
            "that evidence no longer applies (train again)"
        )
    setting = ev.get("setting", "a router that reads the predictions")
    figures = (
        f"routing with {setting}: mean E2E {ours_mean:.3f} s vs champion v{champion} {theirs_mean:.3f} s, "
        f"p99 {ours_p99:.2f} s vs {theirs_p99:.2f} s"
    )
    if not all(math.isfinite(x) for x in (ours_mean, ours_p99, theirs_mean, theirs_p99)):
        return False, f"routes worse: a non-finite figure ({figures})"
    worse = []
    if ours_mean > theirs_mean * (1 + mean_tolerance_pct / 100):
        worse.append(f"mean E2E more than {mean_tolerance_pct:g} % higher")
    if ours_p99 > theirs_p99 * (1 + p99_tolerance_pct / 100):
        more = f" by more than {p99_tolerance_pct:g} %" if p99_tolerance_pct else ""
        worse.append(f"p99 E2E higher{more}")
    if worse:
        return False, f"routes worse ({' and '.join(worse)}): {figures}"
    return True, f"routes no worse: {figures}"


def v_(version: str | None) -> str:
    """``v3`` for version ``3``, ``none`` for no version (in decisions)."""
    return f"v{version}" if version is not None else "none"


def promote_through_gate(registry: ModelRegistry, name: str, version: str) -> PromotionDecision:
    """A metric model's gate: ``gate_verdict`` and, when it passes, the move, under one lock; the
    decision is recorded on the version (``loadwise.gate*`` tags)."""
    with registry.champion_lock():
        verdict = gate_verdict(registry, name, version)
        if verdict.passed:
            registry.promote(name, version, expected=verdict.champion)
        registry.record_gate(name, version, verdict.reason, passed=verdict.passed, against=verdict.champion)
    return PromotionDecision(verdict.passed, verdict.reason, version if verdict.passed else verdict.champion)


def gate_router(
    registry: ModelRegistry, version: str, gate: GateResult, expected: str | None, alias: str = CHAMPION
) -> PromotionDecision:
    """Record the statistical gate's result (``eval.gate.GateResult``) on router ``version`` and, when
    it passed, move gated ``alias`` (``champion``; a setting alias such as ``paper-main``) to it if
    the alias still points at ``expected`` (the version the evaluation replayed; ``None``: there was
    none). Who calls this: ``register_router`` (``train-router``) and the nightly ``promote-router``
    step. Refused when the alias moved since: the reason says so."""
    if version == expected:  # an unchanged model reused as the challenger: nothing to decide
        return PromotionDecision(False, f"{LLM_ROUTER} v{version} already is the {alias}", expected)
    registry.record_gate(
        LLM_ROUTER, version, gate.reason, gate.to_markdown(), passed=bool(gate.passed), against=expected,
        alias=alias,
    )  # fmt: skip
    if not gate.passed:
        return PromotionDecision(False, gate.reason, expected)
    with registry.champion_lock():
        verdict = gate_verdict(registry, LLM_ROUTER, version, alias)  # the evidence just recorded
        if verdict.champion == version:  # a retried step whose first attempt moved it
            return PromotionDecision(True, gate.reason, version)
        if not verdict.passed:
            holder = registry.find(LLM_ROUTER, alias)
            now = holder.version if holder else None
            moved = ChampionMovedError(LLM_ROUTER, version, expected, now, alias)
            registry.record_gate(LLM_ROUTER, version, str(moved), passed=True, against=expected, alias=alias)
            return PromotionDecision(False, str(moved), moved.current)
        try:
            registry.promote(LLM_ROUTER, version, expected=expected, alias=alias)
        except ChampionMovedError as exc:  # only where the lock is per process (a tracking server)
            registry.record_gate(LLM_ROUTER, version, str(exc), passed=True, against=expected, alias=alias)
            return PromotionDecision(False, str(exc), exc.current)
    return PromotionDecision(True, gate.reason, version)


def _seed_means(router: RouterResult) -> tuple[float, float]:
    """(mean over seeds of the per-seed mean E2E, of the per-seed p99 E2E), seconds; NaN stays NaN."""
    e2e = router.overall.e2e_s
    return (
        sum(e2e.mean.per_seed) / len(e2e.mean.per_seed),
        sum(e2e.p99.per_seed) / len(e2e.p99.per_seed),
    )


def choose_candidate(report: EvalReport, candidates: Sequence[str]) -> tuple[str, str]:
    """The night's best candidate and why: the lowest mean E2E over the held-out windows (mean over
    seeds of the per-seed means), then the lowest p99, then the order given (a candidate with a
    non-finite figure ranks last). Pure; ``candidates`` are router names of ``report``."""
    if not candidates:
        raise ValueError("no candidate to choose from")

    def key(item: tuple[int, str]) -> tuple[bool, float, float, int]:
        mean, p99 = _seed_means(report.routers[item[1]])
        return (not (math.isfinite(mean) and math.isfinite(p99)), mean, p99, item[0])

    ranked = [name for _, name in sorted(enumerate(candidates), key=key)]
    best = ranked[0]
    mean, p99 = _seed_means(report.routers[best])
    why = (
        f"{best}: the lowest mean E2E of the night's {len(ranked)} candidate(s) on the held-out windows, "
        f"{mean:.3f} s (p99 {p99:.2f} s)"
    )
    if len(ranked) > 1:
        others = ", ".join(f"{n} {_seed_means(report.routers[n])[0]:.3f} s" for n in ranked[1:])
        why += f"; then {others}"
    return best, why


def first_champion_gate(
    report: EvalReport, challenger: str, config: GateConfig | None = None, exclude: Sequence[str] = ()
) -> GateResult:
    """The gate for the first ``llm-router`` champion (there is none yet): ``challenger`` (the night's
    best candidate, ``choose_candidate``) becomes champion unless it is *significantly worse* than the
    best baseline: the paired per-seed t interval (``config.confidence``) of ``baseline - challenger``
    lies entirely below zero for the mean E2E, or for the p99 E2E (the baseline's allowed
    ``p99_tolerance_pct`` higher). Also refused: fewer than ``min_seeds`` or repeated seeds, or a
    non-finite figure. ``exclude``: the other candidates (not baselines).

    Why not the promotion gate's "clearly better": with no champion, a consumer has nothing to
    deploy; the baselines are registry routers, not deployable versions, and the strongest of them
    is among the candidates as a packaged rule. What must not ship is a candidate the evidence says
    is worse than a known rule. Pure: the ``GateResult`` ``gate_router`` records and acts on."""
    from eval.gate import GateConfig, promotion_gate

    cfg = config or GateConfig()
    base = promotion_gate(report, challenger, None, cfg, exclude=exclude)
    check = base.checks[-1]
    if not base.passed and base.reason.startswith(("not promoted: seed", "not promoted: a confidence")):
        return base  # repeated seeds or too few: no evidence either way
    ours, theirs = report.routers[challenger], report.routers[base.best_baseline]
    tolerance = 1 + cfg.p99_tolerance_pct / 100
    p99_lo, p99_hi = _paired_interval(
        [b * tolerance for b in theirs.overall.e2e_s.p99.per_seed], ours.overall.e2e_s.p99.per_seed, cfg
    )
    finite = all(math.isfinite(x) for x in (check.ci_low_s, check.ci_high_s, p99_lo, p99_hi))
    mean_ok = finite and check.ci_high_s >= 0
    p99_ok = finite and p99_hi >= 0
    pct = f"{100 * cfg.confidence:g} %"
    figures = (
        f"mean E2E {check.challenger_mean_s:.3f} s vs {check.comparator_mean_s:.3f} s (diff "
        f"{check.diff_mean_s:+.3f} s, {pct} CI [{check.ci_low_s:+.3f}, {check.ci_high_s:+.3f}]), p99 "
        f"{check.challenger_p99_s:.2f} s vs {check.comparator_p99_s:.2f} s (diff {pct} CI "
        f"[{p99_lo:+.3f}, {p99_hi:+.3f}])"
    )
    label = f"vs best baseline {base.best_baseline}"
    if mean_ok and p99_ok:
        reason = (
            f"first champion: {challenger} is not significantly worse than the best baseline "
            f"{base.best_baseline}: {figures}"
        )
    else:
        worse = [what for what, ok in (("mean", mean_ok), ("p99", p99_ok)) if not ok]
        why = "a non-finite figure" if not finite else f"significantly worse {' and '.join(worse)} E2E"
        reason = f"not promoted (no champion yet): {challenger} {label}: {why}: {figures}"
    passed = mean_ok and p99_ok
    first = check.model_copy(
        update={"mean_ok": mean_ok, "p99_ok": p99_ok, "passed": passed, "reason": reason}
    )
    return base.model_copy(update={"passed": passed, "reason": reason, "checks": (first,)})


def _paired_interval(
    comparator: Sequence[float], challenger: Sequence[float], cfg: GateConfig
) -> tuple[float, float]:
    """The two-sided t interval (``cfg.confidence``) of the mean of ``comparator - challenger`` per
    seed (NaN with fewer than two seeds)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(comparator, dtype=np.float64) - np.asarray(challenger, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf((1 + cfg.confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


def selection_adjusted(config: GateConfig, candidates: int) -> GateConfig:
    """``config`` with its confidence raised for a challenger picked as the best of ``candidates`` on
    the very windows the gate judges it on (Bonferroni: ``1 - (1 - c) / k``, at most 0.999), so
    choosing among k candidates does not multiply the chance of promoting a lucky one."""
    if candidates <= 1:
        return config
    confidence = min(0.999, 1 - (1 - config.confidence) / candidates)
    return config.model_copy(update={"confidence": confidence})


@dataclass(frozen=True)
class HandPromotion:
    """What ``loadwise promote`` did: the champion before and after, the verdict, whether forced."""

    before: RegisteredVersion | None
    after: RegisteredVersion | None
    verdict: Verdict
    moved: bool
    forced: bool


def promote_by_hand(
    registry: ModelRegistry,
    name: str,
    version: str,
    *,
    force: bool = False,
    why: str = "",
    alias: str = CHAMPION,
) -> HandPromotion:
    """``loadwise promote NAME VERSION [--alias A]``: the gate's verdict for gated ``alias``; the move
    when it passed, or when ``force`` overrides a refusal (then recorded on the version: who, when,
    ``why``, the verdict). Verdict and move run under one lock (compare-and-set against the version
    judged)."""
    with registry.champion_lock():
        before = registry.find(name, alias)
        verdict = gate_verdict(registry, name, version, alias)
        if before is not None and before.version == version:
            return HandPromotion(before, before, verdict, moved=False, forced=False)
        if not verdict.passed and not force:
            return HandPromotion(before, None, verdict, moved=False, forced=False)
        after = registry.promote(name, version, expected=verdict.champion, alias=alias)
        if not verdict.passed:
            registry.record_forced(name, version, why, verdict.reason)
            after = registry.get(name, version)
    return HandPromotion(before, after, verdict, moved=True, forced=not verdict.passed)
