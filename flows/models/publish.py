"""Registering a model version: one ``ModelRegistry.publish``, then the model's gate decides.

Who calls this: the registration of each model (``flows.models.predictor``, ``estimator``,
``router``), once per job. ``publish`` registers a package as a new version with alias ``challenger``
(an identical model is reported, not registered again) and lets the caller's ``decide`` gate it;
``Published`` is what a job returns (the CLI's ``--json`` payload).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from flows.models.gate import promote_through_gate, v_
from flows.registry import (
    CHAMPION,
    ModelPackage,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    gate_tags,
)


@dataclass(frozen=True)
class Published:
    """What a train-and-register job returns (the CLI's ``--json`` payload)."""

    version: RegisteredVersion
    decision: PromotionDecision
    metrics: dict[str, float]
    report_markdown: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.version.to_dict(),
            "promotion": {
                "promoted": self.decision.promoted,
                "reason": self.decision.reason,
                "champion_version": self.decision.champion_version,
            },
            "metrics": self.metrics,
        }


def publish(
    registry: ModelRegistry,
    pkg: ModelPackage,
    report_md: str,
    decide: Callable[[RegisteredVersion], PromotionDecision] | None,
    alias: str = CHAMPION,
) -> Published:
    """Register ``pkg`` (alias ``challenger``) and let ``decide`` gate the new version for gated
    ``alias`` (``champion``, or a setting alias); without it the caller decides (the nightly flow's
    statistical gate). An identical model already registered (same data, config, requirements and
    code) is reported, not registered again nor re-gated (unless no gate ever recorded a verdict for
    ``alias`` on it: a retried registration, or one judged so far for another alias)."""
    version = registry.publish(pkg)
    champion = registry.find(pkg.name, alias)
    current = champion.version if champion else None
    if version.reused and decide is not None and gate_tags(alias).passed not in version.tags:
        decision = decide(version)  # registered by an attempt that failed before its gate (a retry)
    elif version.reused:
        state = f"is the {alias}" if current == version.version else f"{alias} stays {v_(current)}"
        why = (
            f"unchanged: identical to {pkg.name} v{version.version} (same data fingerprint, config and "
            f"code), not registered again; v{version.version} {state}"
        )
        decision = PromotionDecision(False, why, current)
    elif decide is None:
        decision = PromotionDecision(False, "registered as challenger; the caller's gate decides", current)
    else:
        decision = decide(version)
    now = replace(registry.get(pkg.name, version.version), reused=version.reused)  # aliases after the gate
    return Published(now, decision, dict(pkg.metrics), report_md)


def metric_gate(registry: ModelRegistry, name: str) -> Callable[[RegisteredVersion], PromotionDecision]:
    """``publish``'s ``decide`` for a metric model: ``promote_through_gate`` on the new version."""
    return lambda v: promote_through_gate(registry, name, v.version)
