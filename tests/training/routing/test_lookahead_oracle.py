"""The oracle lookahead teacher (eval/lookahead_oracle.py) is a labelled DIAGNOSTIC: its draws are
the trace's truth, and it cannot become a router, a label source or a registered model by accident."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eval.lookahead_oracle import OracleLookaheadTeacher, simulate_with_oracle_lookahead
from tests.training.routing.test_lookahead import CHEAP, CTX, LIN, BucketsByTask, config, same, trace
from training.routing.lookahead import (
    LookaheadParams,
    LookaheadTeacher,
    SampledLengths,
    drive_teacher,
    known_request,
)
from training.routing.registry import get_router, router_names
from training.simulator.engine import ReplayState

ORACLE = replace(CHEAP, samples=1, horizon_s=1.0, conservative=True)
ROOT = Path(__file__).resolve().parents[3]


def test_the_oracles_draws_are_the_truth():
    """Mid-replay, the oracle's lengths are the true output lengths of the unfinished requests and
    its future is the trace's requests arriving within the horizon that have not arrived yet."""
    reqs = trace(60, 21, gap_s=0.05)
    wrapped = SampledLengths(BucketsByTask())
    teacher = OracleLookaheadTeacher(ORACLE, CTX, wrapped, truth=reqs)
    state = ReplayState(reqs, config(), LIN, wrapped)
    router = get_router("workload_impact_greedy", CTX)
    router.reset(3, 0)
    by_id = {r.request_id: r for r in reqs}
    for _ in range(30):
        decision = state.next_decision()
        assert decision is not None
        rv, cv = decision
        teacher.observe(known_request(by_id[rv.request_id], rv))
        state.decide(router.route(rv, cv))
    unfinished = state.unfinished()
    assert unfinished
    rng = np.random.default_rng(0)
    lengths = teacher._draw_lengths(unfinished, rng, 10_000)
    assert lengths == {rid: by_id[rid].output_tokens for rid, _ in unfinished}
    now = state.now_s
    future = teacher._draw_future(now, rng, 10_000)
    want = [r for r in reqs if now <= r.arrival_s < now + 1.0 and r.request_id not in teacher.seen]
    assert [r.request_id for r in future] == [r.request_id for r in want] != []
    assert all(a is b for a, b in zip(future, want, strict=True))  # true lengths and arrival times
    # a half oracle keeps the real teacher's draw for the other part, bit for bit
    half = OracleLookaheadTeacher(ORACLE, CTX, wrapped, truth=reqs, true_lengths=False)
    half.seen = teacher.seen
    real = LookaheadTeacher(ORACLE, CTX, wrapped, seen=teacher.seen)
    drawn = half._draw_lengths(unfinished, np.random.default_rng(1), 10_000)
    assert drawn == real._draw_lengths(unfinished, np.random.default_rng(1), 10_000) != lengths


def test_the_oracle_is_labelled_and_reproducible():
    reqs = trace(40, 22)
    a = simulate_with_oracle_lookahead(reqs, config(), LIN, BucketsByTask(), CTX, ORACLE)
    b = simulate_with_oracle_lookahead(reqs, config(), LIN, BucketsByTask(), CTX, ORACLE)
    assert a.oracle
    assert a.result.num_requests == 40
    assert a.choices == b.choices
    same(a.result, b.result)


def test_the_oracle_cannot_be_used_by_accident():
    """Only ``simulate_with_oracle_lookahead`` drives it: the driver refuses it otherwise, no
    registered name or ``LookaheadParams`` field reaches it, and nothing under training/ (the
    registry, compare's routers, the distillation, the registration) imports its module. The
    distillation's own refusal: tests/training/rl/test_distill.py."""
    reqs = trace(10, 23)
    teacher = OracleLookaheadTeacher(ORACLE, CTX, SampledLengths(BucketsByTask()), truth=reqs)
    with pytest.raises(ValueError, match="diagnostic only"):
        drive_teacher(reqs, config(), LIN, teacher)
    assert not LookaheadTeacher.is_oracle
    assert not any("oracle" in f for f in LookaheadParams.__dataclass_fields__)
    assert not any("lookahead" in n and n != "lookahead" for n in router_names(include_configured=True))
    assert (ROOT / "training" / "routing" / "lookahead.py").is_file()  # the scan below reads sources
    offenders = [
        str(p.relative_to(ROOT))
        for top in ("training", "flows")
        if (ROOT / top).is_dir()
        for p in (ROOT / top).rglob("*.py")
        if re.search(r"^\s*(from|import) eval\.lookahead_oracle", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []
