"""The one place that decides whether a model version may become ``champion``, and the moves it allows.

Who calls this: every path that moves ``champion``: the metric models' registration
(``flows.models.publish``), the router's (``flows.models.router.register_router``), the nightly
``promote-router`` step and ``loadwise promote`` by hand; each asks ``gate_verdict`` and moves with a
compare-and-set against the champion the verdict was about, under ``ModelRegistry.champion_lock``.

- ``length-predictor``: the challenger's expected-length MAE in tokens on held-out prompts must be
  strictly lower than the champion's, for the same serving model (a bucket-free metric, so
  predictors with different bucket schemes compare fairly). A different serving model never replaces
  the champion automatically.
- ``impact-estimator``: held-out MAPE of iteration time strictly lower, for the same GPU profile (the
  paper's V100 preset has no held-out points: it becomes champion only when there is none).
- ``llm-router``: the statistical gate (``eval.gate.promotion_gate``: paired per-seed interval and p99
  against the champion, replayed on the same held-out windows, and the best baseline) decides when
  the router is evaluated (``gate_router``); its verdict and the champion it compared with are
  recorded on the version, and ``gate_verdict`` reads that evidence (it holds only while that
  champion still serves).

A tie never promotes: a challenger must be better, not equal. Reads and alias moves only: nothing
here trains or registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.registry import (
    CHAMPION,
    GATE_AGAINST_TAG,
    GATE_PASSED_TAG,
    GATE_TAG,
    ChampionMovedError,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    metric_verdict,
)

if TYPE_CHECKING:
    from eval.gate import GateResult

LENGTH_PREDICTOR = "length-predictor"
IMPACT_ESTIMATOR = "impact-estimator"
LLM_ROUTER = "llm-router"
PREDICTOR_GATE_METRIC = "mae_tokens"
ESTIMATOR_GATE_METRIC = "chosen.holdout_mape_pct"


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


def gate_verdict(registry: ModelRegistry, name: str, version: str) -> Verdict:
    """Whether ``version`` of ``name`` may replace the current champion, and why (reads only).

    Who calls this: every path that moves ``champion`` (``promote_through_gate``, ``gate_router``
    via its recorded evidence, ``promote_by_hand``), under ``ModelRegistry.champion_lock`` so that
    the champion it judged is the one replaced. Metric models compare their metric now; the router's
    statistical gate needs replays, so its verdict is the evidence recorded on the version
    (``loadwise.gate.passed`` and the champion it compared with), valid only while that champion
    still serves. A model with no gate, or a router version without evidence, is refused.
    """
    cand = registry.get(name, version)
    champ = registry.find(name, CHAMPION)
    current = champ.version if champ else None
    if current == version:
        return Verdict(False, f"{name} v{version} already is the champion", current)
    gate = METRIC_GATES.get(name)
    if gate is not None:
        passed, reason = metric_verdict(cand, champ, gate.metric, gate.higher_is_better, scope=gate.scope)
        return Verdict(passed, reason, current)
    if name != LLM_ROUTER:
        return Verdict(False, f"no gate is defined for model {name!r}", current)
    verdict, against = cand.tags.get(GATE_PASSED_TAG), cand.tags.get(GATE_AGAINST_TAG)
    recorded = cand.tags.get(GATE_TAG)
    if verdict is None:
        what = f" (its recorded decision: {recorded})" if recorded else ""
        return Verdict(
            False,
            f"no gate evidence for {name} v{version}: no evaluation against the champion and the best "
            f"baseline is recorded on it{what}",
            current,
        )
    if verdict != "true":
        return Verdict(False, f"the gate refused v{version}: {recorded}", current)
    compared = None if against in (None, "none") else against
    if compared != current:
        return Verdict(
            False,
            f"the gate passed v{version} against champion {v_(compared)}, but the champion is now "
            f"{v_(current)}: that evidence no longer applies (evaluate again)",
            current,
        )
    return Verdict(True, f"the gate passed v{version} against champion {v_(compared)}: {recorded}", current)


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
    registry: ModelRegistry, version: str, gate: GateResult, expected: str | None
) -> PromotionDecision:
    """Record the statistical gate's result (``eval.gate.GateResult``) on router ``version`` and, when
    it passed, move ``champion`` to it if the champion is still ``expected`` (the one the evaluation
    replayed; ``None``: there was none). Who calls this: ``register_router`` (``train-router``) and the
    nightly ``promote-router`` step. Refused when the champion moved since: the reason says so."""
    if version == expected:  # an unchanged model reused as the challenger: nothing to decide
        return PromotionDecision(False, f"{LLM_ROUTER} v{version} already is the champion", expected)
    registry.record_gate(
        LLM_ROUTER, version, gate.reason, gate.to_markdown(), passed=bool(gate.passed), against=expected
    )
    if not gate.passed:
        return PromotionDecision(False, gate.reason, expected)
    with registry.champion_lock():
        verdict = gate_verdict(registry, LLM_ROUTER, version)  # the evidence just recorded
        if verdict.champion == version:  # a retried step whose first attempt moved it
            return PromotionDecision(True, gate.reason, version)
        if not verdict.passed:
            champion = registry.find(LLM_ROUTER, CHAMPION)
            moved = ChampionMovedError(LLM_ROUTER, version, expected, champion.version if champion else None)
            registry.record_gate(LLM_ROUTER, version, str(moved), passed=True, against=expected)
            return PromotionDecision(False, str(moved), moved.current)
        try:
            registry.promote(LLM_ROUTER, version, expected=expected)
        except ChampionMovedError as exc:  # only where the lock is per process (a tracking server)
            registry.record_gate(LLM_ROUTER, version, str(exc), passed=True, against=expected)
            return PromotionDecision(False, str(exc), exc.current)
    return PromotionDecision(True, gate.reason, version)


@dataclass(frozen=True)
class HandPromotion:
    """What ``loadwise promote`` did: the champion before and after, the verdict, whether forced."""

    before: RegisteredVersion | None
    after: RegisteredVersion | None
    verdict: Verdict
    moved: bool
    forced: bool


def promote_by_hand(
    registry: ModelRegistry, name: str, version: str, *, force: bool = False, why: str = ""
) -> HandPromotion:
    """``loadwise promote NAME VERSION``: the gate's verdict; the move when it passed, or when
    ``force`` overrides a refusal (then recorded on the version: who, when, ``why``, the verdict).
    Verdict and move run under one lock (compare-and-set against the champion judged)."""
    with registry.champion_lock():
        before = registry.find(name, CHAMPION)
        verdict = gate_verdict(registry, name, version)
        if before is not None and before.version == version:
            return HandPromotion(before, before, verdict, moved=False, forced=False)
        if not verdict.passed and not force:
            return HandPromotion(before, None, verdict, moved=False, forced=False)
        after = registry.promote(name, version, expected=verdict.champion)
        if not verdict.passed:
            registry.record_forced(name, version, why, verdict.reason)
            after = registry.get(name, version)
    return HandPromotion(before, after, verdict, moved=True, forced=not verdict.passed)
