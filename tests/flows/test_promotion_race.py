"""Overlapping runs against one registry and one warehouse: the promotion gate is race-free.

The reproducer (issue 13): the nightly flow reads the champion at its drift step, minutes before
``promote-router`` moves it. Two overlapping runs (``loadwise serve``'s nightly and drift-watch) that
both beat the *old* champion each moved ``champion``: the later one replaced the newer champion
without being compared with it, and with no champion the last finisher won. Here two runs have both
evaluated against the same champion and both passed; only the first promotion may stand, the second
is refused with the reason next to its version. The same holds across processes (a ``flock`` beside
the SQLite store, a PostgreSQL advisory lock). And the watermark of ``ops.nightly_runs`` only moves
forward, whatever order overlapping runs finish in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eval.gate import GateResult, promotion_gate
from flows.models import LLM_ROUTER
from flows.registry import (
    CHAMPION,
    FORCED_TAG,
    GATE_AGAINST_TAG,
    GATE_PASSED_TAG,
    GATE_TAG,
    ChampionMovedError,
    ModelRegistry,
    PromotionDecision,
)
from tests.eval.reports import BASE, hand_report, hand_router, minus
from tests.flows.toy_model import package
from warehouse.settings import PROJECT_ROOT


def _publish(registry: ModelRegistry, tmp_path: Path, scale: float) -> str:
    """A toy model version registered as ``llm-router`` (the name the nightly flow promotes)."""
    return registry.publish(package(tmp_path, scale, 0.5, name=LLM_ROUTER)).version


def _passed(champion: bool) -> GateResult:
    """A gate that passed: the challenger clearly beats round robin (and the champion, when there is one)."""
    routers = [hand_router("round_robin", BASE), hand_router("challenger", minus(BASE, [2.0, 3.0, 4.0]))]
    if champion:
        routers.append(hand_router(CHAMPION, minus(BASE, [1.0, 2.0, 3.0])))
    result = promotion_gate(hand_report(*routers), "challenger", CHAMPION if champion else None)
    assert result.passed
    return result


def _promote_step(version: str, gate: GateResult, uri: str, expected: str | None) -> PromotionDecision:
    """The nightly flow's ``promote-router`` step, run as the flow runs it (``.fn``: no Prefect engine)."""
    from flows.tasks import promote_router

    return promote_router.fn(version, gate, uri, expected)


def test_two_runs_without_a_champion_only_the_first_promotes(store: str, tmp_path: Path):
    """Both runs found no champion, both passed the gate, both reach promote-router at once."""
    uri = store
    registry = ModelRegistry(uri)
    versions = [_publish(registry, tmp_path, scale) for scale in (2.0, 3.0)]
    gate = _passed(champion=False)
    start = threading.Barrier(2)
    outcomes: dict[str, PromotionDecision] = {}

    def run(version: str) -> None:
        start.wait()
        outcomes[version] = _promote_step(version, gate, uri, None)

    threads = [threading.Thread(target=run, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [v for v, o in outcomes.items() if o.promoted]
    assert len(outcomes) == 2
    assert len(winners) == 1, outcomes  # before the fix: both moved champion, the last one won
    (winner,) = winners
    (loser,) = set(versions) - {winner}
    assert registry.get(LLM_ROUTER, CHAMPION).version == winner
    assert registry.champion_history(LLM_ROUTER) == [winner]
    reason = outcomes[loser].reason
    assert f"compared with champion none, but the champion is now v{winner}" in reason
    tags = registry.get(LLM_ROUTER, loser).tags  # the refusal is logged next to the version
    assert tags[GATE_TAG] == reason
    assert (tags[GATE_PASSED_TAG], tags[GATE_AGAINST_TAG]) == ("true", "none")


def test_a_run_that_beat_an_old_champion_does_not_replace_the_new_one(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """v1 serves; runs A (v2) and B (v3) both beat v1; A promotes first; B is refused, and its stale
    evidence does not let ``loadwise promote`` move it either, unless forced (recorded)."""
    from flows.cli import app

    uri = store
    registry = ModelRegistry(uri)
    v1, v2, v3 = (_publish(registry, tmp_path, scale) for scale in (1.0, 2.0, 3.0))
    registry.promote(LLM_ROUTER, v1)
    gate = _passed(champion=True)
    first = _promote_step(v2, gate, uri, v1)
    second = _promote_step(v3, gate, uri, v1)
    assert (first.promoted, first.reason) == (True, gate.reason)
    assert not second.promoted
    assert "compared with champion v1, but the champion is now v2" in second.reason
    assert registry.get(LLM_ROUTER, CHAMPION).version == v2

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    by_hand = CliRunner().invoke(app, ["promote", LLM_ROUTER, v3])
    assert by_hand.exit_code == 1, by_hand.output
    assert "gate on llm-router v3: refuses: the gate passed v3 against champion v1" in by_hand.output
    assert "no longer applies" in by_hand.output
    assert "--force" in by_hand.output
    assert registry.get(LLM_ROUTER, CHAMPION).version == v2
    forced = CliRunner().invoke(app, ["promote", LLM_ROUTER, v3, "--force", "--reason", "rollout test"])
    assert forced.exit_code == 0, forced.output
    assert "champion v2" in forced.output
    assert registry.get(LLM_ROUTER, CHAMPION).version == v3
    record = json.loads(registry.get(LLM_ROUTER, v3).tags[FORCED_TAG])
    assert record["why"] == "rollout test"
    assert record["by"]
    assert datetime.fromisoformat(record["at"]).tzinfo is not None
    assert "no longer applies" in record["gate"]


def test_promote_by_hand_says_when_no_gate_evidence_exists(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A router version no gate has judged (e.g. registered, then its run failed before promote-router)."""
    from flows.cli import app

    version = _publish(ModelRegistry(store), tmp_path, 2.0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = CliRunner().invoke(app, ["promote", LLM_ROUTER, version])
    assert out.exit_code == 1
    assert f"refuses: no gate evidence for llm-router v{version}" in out.output
    assert ModelRegistry(store).find(LLM_ROUTER, CHAMPION) is None


HOLDER = """
import sys, time
from pathlib import Path
from flows.registry import ModelRegistry

registry = ModelRegistry(sys.argv[1])
with registry.champion_lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
    registry.promote("llm-router", sys.argv[2])
    Path(sys.argv[4]).write_text("promoted")  # still under the lock
"""
"""Holds the champion lock, sleeps, promotes, then leaves a marker file before it releases the lock."""


def _cross_process_race(uri: str, tmp_path: Path) -> None:
    """Another process holds the champion lock and moves champion v1 -> v2 while this one tries
    v1 -> v3 from a comparison with v1: this one waits for the lock, then sees v2 and refuses.

    That it waited is checked by order, not by a clock: the holder leaves its marker file while it
    still holds the lock, so the marker exists as soon as this process's promote returns."""
    registry = ModelRegistry(uri)
    v1, v2, v3 = (_publish(registry, tmp_path, scale) for scale in (1.0, 2.0, 3.0))
    registry.promote(LLM_ROUTER, v1)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    marker = tmp_path / "holder-promoted"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri, v2, "1.0", str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert not marker.exists()
        with pytest.raises(ChampionMovedError, match="compared with champion v1, but the champion is now v2"):
            registry.promote(LLM_ROUTER, v3, expected=v1)
        assert marker.exists()  # it waited for the other process's lock (released after the marker)
    finally:
        out, _ = holder.communicate(timeout=60)
    assert holder.returncode == 0, out
    assert registry.get(LLM_ROUTER, CHAMPION).version == v2
    assert registry.champion_history(LLM_ROUTER) == [v1, v2]


def test_the_champion_lock_holds_across_processes_on_sqlite(store: str, tmp_path: Path):
    _cross_process_race(store, tmp_path)
    assert (tmp_path / "mlflow.db.champion.lock").exists()  # the advisory lock file beside the store


def test_the_champion_lock_holds_across_processes_on_postgres(
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("LOADWISE_ARTIFACT_ROOT", (tmp_path / "bucket").as_uri())
    _cross_process_race(postgres, tmp_path)


# -- the watermark only moves forward --------------------------------------------------------------
def _record(db: Path, status: str, watermark: int | None) -> int | None:
    from warehouse.ops import record_run

    return record_run(
        db, run_id=f"run-{status}-{watermark}", started_at=datetime.now(UTC), status=status,
        watermark_file_id=watermark,
    )  # fmt: skip


def test_a_drift_watch_run_finishing_late_does_not_move_the_watermark_back(tmp_path: Path):
    """Drift-watch reads watermark 5 and consumes nothing; meanwhile the nightly run advances it to 9;
    drift-watch finishes last and records what it read (5, as before the fix)."""
    from warehouse.ops import last_watermark

    db = tmp_path / "w.duckdb"
    _record(db, "ok", 5)
    assert last_watermark(db).file_id == 5
    _record(db, "ok", 9)  # the nightly run
    recorded = _record(db, "ok", 5)  # the drift-watch run, stale
    assert last_watermark(db).file_id == 9  # before the fix: 5, the new window read again
    assert recorded == 9
    assert _record(db, "ok", None) == 9  # a run that consumed nothing carries it
    assert _record(db, "failed", None) is None  # a failed run records none and moves nothing
    mark = last_watermark(db)
    assert mark.file_id == 9
    assert mark.run_id == "run-ok-9"


RUN_RECORDS = st.lists(
    st.tuples(st.sampled_from(["ok", "failed"]), st.none() | st.integers(0, 50)), min_size=1, max_size=5
)
"""Interleavings of ``record_run`` calls: status and the watermark a run consumed (None: nothing)."""


def _watermark_only_moves_forward(db: Path, calls: list[tuple[str, int | None]]) -> None:
    """Any order of run records: the watermark is the highest an ok run consumed, never less."""
    from warehouse.ops import last_watermark

    highest: int | None = None
    for status, watermark in calls:
        _record(db, status, watermark)
        if status == "ok" and watermark is not None:
            highest = max(watermark, highest if highest is not None else watermark)
        mark = last_watermark(db)
        assert (mark.file_id if mark else None) == highest


@settings(max_examples=6, deadline=None, derandomize=True)
@given(RUN_RECORDS)
def test_the_watermark_never_moves_backwards(tmp_path_factory: pytest.TempPathFactory, calls: list) -> None:
    _watermark_only_moves_forward(tmp_path_factory.mktemp("ops") / "w.duckdb", calls)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True)
@given(RUN_RECORDS)
def test_the_watermark_never_moves_backwards_long(
    tmp_path_factory: pytest.TempPathFactory, calls: list
) -> None:
    _watermark_only_moves_forward(tmp_path_factory.mktemp("ops") / "w.duckdb", calls)
