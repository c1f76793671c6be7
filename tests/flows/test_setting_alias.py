"""Setting aliases: ``llm-router@paper-main`` is a champion scoped to one setting (issue 17).

The same gate moves it as moves ``champion`` (recorded evidence, compare-and-set under the lock,
rollback history), but on its own tags, so a version judged for one alias is not judged for the
other; only a router trained for the alias's setting may hold it; nothing else moves it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.gate import GateResult, promotion_gate
from flows.models import LLM_ROUTER
from flows.models.gate import gate_router, gate_verdict, promote_by_hand
from flows.models.router import ROUTER_SCOPES, check_scope, scope_refusal
from flows.registry import (
    CHAMPION,
    GATE_AGAINST_TAG,
    GATE_PASSED_TAG,
    GATE_TAG,
    HISTORY_TAG,
    SETTING_ALIASES,
    ModelRegistry,
    RegistryError,
    gate_tags,
)
from tests.eval.reports import BASE, hand_report, hand_router, minus
from tests.flows.toy_model import package
from training.rl.config import RouterTrainConfig

PAPER = "paper-main"


@pytest.fixture
def registry(store: str) -> ModelRegistry:
    """A fresh SQLite registry (``tests/flows/conftest.py`` ``store``)."""
    return ModelRegistry(store)


def _publish(registry: ModelRegistry, tmp_path: Path, scale: float) -> str:
    return registry.publish(package(tmp_path, scale, 0.5, name=LLM_ROUTER)).version


def _gate(passed: bool, incumbent: bool) -> GateResult:
    """A statistical gate result over hand-made figures: the challenger clearly better (or worse)."""
    step = [2.0, 3.0, 4.0] if passed else [-2.0, -3.0, -4.0]
    routers = [hand_router("round_robin", BASE), hand_router("challenger", minus(BASE, step))]
    if incumbent:
        routers.append(hand_router(CHAMPION, minus(BASE, [1.0, 1.5, 2.0])))
    result = promotion_gate(hand_report(*routers), "challenger", CHAMPION if incumbent else None)
    assert result.passed is passed
    return result


def test_every_setting_alias_has_a_scope_and_its_own_tags():
    assert set(SETTING_ALIASES) == set(ROUTER_SCOPES)
    champion = gate_tags(CHAMPION)
    assert (champion.decision, champion.passed, champion.against, champion.history) == (
        GATE_TAG, GATE_PASSED_TAG, GATE_AGAINST_TAG, HISTORY_TAG,
    )  # fmt: skip
    paper = gate_tags(PAPER)
    assert paper.passed == "loadwise.scope.paper-main.gate.passed"
    assert not {paper.decision, paper.passed, paper.against, paper.history} & {
        GATE_TAG, GATE_PASSED_TAG, GATE_AGAINST_TAG, HISTORY_TAG,
    }  # fmt: skip
    with pytest.raises(RegistryError, match="not a gated alias"):
        gate_tags("staging")


def test_the_gate_moves_the_setting_alias_apart_from_champion(registry: ModelRegistry, tmp_path: Path):
    v1, v2, v3 = (_publish(registry, tmp_path, s) for s in (1.0, 2.0, 3.0))
    registry.promote(LLM_ROUTER, v1)  # the production champion, untouched below

    first = gate_router(registry, v2, _gate(True, incumbent=False), None, PAPER)
    assert first.promoted
    assert registry.get(LLM_ROUTER, PAPER).version == v2
    assert registry.get(LLM_ROUTER, CHAMPION).version == v1
    tags = registry.get(LLM_ROUTER, v2).tags
    assert tags[gate_tags(PAPER).passed] == "true"
    assert GATE_PASSED_TAG not in tags
    # evidence for paper-main is no evidence for champion
    assert not gate_verdict(registry, LLM_ROUTER, v2).passed
    assert "no gate evidence" in gate_verdict(registry, LLM_ROUTER, v2).reason

    refused = gate_router(registry, v3, _gate(False, incumbent=True), v2, PAPER)
    assert not refused.promoted
    assert registry.get(LLM_ROUTER, PAPER).version == v2
    moved = gate_router(registry, v3, _gate(True, incumbent=True), v1, PAPER)  # compared with a stale holder
    assert not moved.promoted
    assert "compared with paper-main champion v1, but the paper-main champion is now v2" in moved.reason
    assert gate_router(registry, v3, _gate(True, incumbent=True), v2, PAPER).promoted
    assert registry.champion_history(LLM_ROUTER, PAPER) == [v2, v3]
    assert registry.champion_history(LLM_ROUTER) == [v1]

    assert registry.rollback(LLM_ROUTER, PAPER) == (v3, v2)
    assert registry.get(LLM_ROUTER, PAPER).version == v2
    assert registry.get(LLM_ROUTER, CHAMPION).version == v1


def test_only_promote_moves_a_setting_alias(registry: ModelRegistry, tmp_path: Path):
    v1, v2 = (_publish(registry, tmp_path, s) for s in (1.0, 2.0))
    with pytest.raises(RegistryError, match="moves only through promote"):
        registry.set_alias(LLM_ROUTER, PAPER, v1)
    registry.set_alias(LLM_ROUTER, "staging", v1)  # an ungated alias still moves freely
    done = promote_by_hand(registry, LLM_ROUTER, v2, alias=PAPER)
    assert not done.moved
    assert "no gate evidence" in done.verdict.reason
    forced = promote_by_hand(registry, LLM_ROUTER, v2, force=True, why="review of the paper run", alias=PAPER)
    assert forced.moved
    assert forced.forced
    assert registry.get(LLM_ROUTER, PAPER).version == v2
    assert registry.find(LLM_ROUTER, CHAMPION) is None
    # metric models have no setting aliases
    metric_model = gate_verdict(registry, "length-predictor", v1, PAPER)
    assert "for llm-router only" in metric_model.reason


def test_only_a_router_of_the_aliass_setting_may_hold_it():
    paper = RouterTrainConfig(workload="main", profile="v100-llama2-7b-paper", num_instances=4, rate_rps=20.0)
    assert scope_refusal(PAPER, paper.model_dump(mode="json")) is None
    check_scope(PAPER, paper)
    other = paper.model_copy(update={"rate_rps": 10.0})
    with pytest.raises(ValueError, match=r"llm-router@paper-main is the champion of .*'rate_rps': 10.0"):
        check_scope(PAPER, other)
    assert scope_refusal(CHAMPION, other.model_dump(mode="json")) is None
    with pytest.raises(RegistryError, match="not a gated alias"):
        check_scope("challenger", paper)


def test_the_cli_takes_only_gated_aliases(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch):
    from flows.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    bad = (["promote", LLM_ROUTER, "1", "--alias", "staging"], ["rollback", LLM_ROUTER, "--alias", "x"])
    for args in bad:
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, out.output
        assert "--alias must be one of champion, paper-main" in out.output
    out = CliRunner().invoke(app, ["train-router", "--alias", PAPER, "--rate", "10", "--timesteps", "10"])
    assert out.exit_code == 1, out.output
    assert "llm-router@paper-main is the champion of" in out.output  # refused before any training
