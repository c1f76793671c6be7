"""The conservative lookahead teacher (issue 17): it keeps its base policy's answer unless another
candidate beats it by a significant paired margin, so a teacher that never finds one IS its base. That
it never reads the truth is test_lookahead's spy test (its ``conservative`` case). Small traces on the
linear latency model (helpers of test_lookahead)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.training.routing.test_lookahead import (
    CHEAP,
    CTX,
    LIN,
    PARAMS,
    BucketsByTask,
    config,
    same,
    teach,
    trace,
)
from training.routing.lookahead import LookaheadParams, paired_choice
from training.routing.registry import get_router
from training.simulator import ClusterConfig, InstanceConfig
from training.simulator.engine import ReplayState


def test_paired_choice_by_hand():
    """Columns: candidates; rows: samples. The base is column 0."""
    steady = np.array([[10.0, 9.0, 10.5], [12.0, 11.1, 12.5], [11.0, 10.0, 11.2], [9.0, 8.1, 9.9]])
    got = paired_choice(steady, 0, z=2.0, min_margin_s=0.0)
    assert (got.index, got.best, got.significant) == (1, 1, True)
    assert got.mean_s == pytest.approx(-0.95)
    assert got.std_s == pytest.approx(np.std([-1.0, -0.9, -1.0, -0.9], ddof=1))
    # the same mean gain, but not the same sign on every sample: not significant at z = 2
    noisy = np.array([[10.0, 7.0, 11], [12.0, 13.1, 13], [11.0, 8.0, 12], [9.0, 10.1, 10]])
    got = paired_choice(noisy, 0, z=2.0, min_margin_s=0.0)
    assert (got.index, got.best, got.significant) == (0, 1, False)
    assert got.mean_s == pytest.approx(-0.95)
    assert paired_choice(noisy, 0, z=0.0, min_margin_s=0.0).index == 1
    # a margin the gain does not reach
    assert paired_choice(steady, 0, z=2.0, min_margin_s=1.0).index == 0
    # one sample: no standard error, the margin alone decides
    assert paired_choice(steady[:1], 0, z=50.0, min_margin_s=0.5).index == 1
    assert paired_choice(steady[:1], 0, z=0.0, min_margin_s=1.5).index == 0
    # ties keep the base, whatever the sum's argmin (the lowest index) would do
    tie = np.array([[5.0, 5.0], [6.0, 6.0]])
    assert paired_choice(tie, 1, z=0.0, min_margin_s=0.0).index == 1


def _base_replay(reqs, params: LookaheadParams, cfg: ClusterConfig):
    router = get_router(params.base, CTX)
    router.reset(CTX.num_instances, params.seed)
    return ReplayState(reqs, cfg, LIN, BucketsByTask()).run(router.route)


@pytest.mark.parametrize(
    "params",
    [
        replace(PARAMS, conservative=True, z=1e9),
        replace(CHEAP, conservative=True, z=1e9),
        replace(CHEAP, conservative=True, z=1e9, admission=True, base="workload_impact_greedy+hold"),
    ],
    ids=["drain", "stop_at_horizon", "admission"],
)
def test_a_conservative_teacher_that_never_deviates_is_its_base(params: LookaheadParams):
    """With a bar no gain reaches, every answer is the base's: the replay is the base router's own,
    bit for bit (the teacher's base is asked afresh at each decision, as its rollouts ask it)."""
    cfg = (
        ClusterConfig(num_instances=3, instance=InstanceConfig(kv_blocks=60))
        if params.admission
        else config()
    )
    reqs = trace(40, 11, gap_s=0.02 if params.admission else 0.05)
    run = teach(reqs, params, cfg)
    assert run.paired
    assert not any(x.significant for x in run.paired)
    same(run.result, _base_replay(reqs, params, cfg))
    if params.admission:
        assert -1 in run.choices


def test_the_conservative_teacher_deviates_exactly_when_significant():
    """At each decision the answer differs from the base's answer (``workload_impact_greedy`` on the
    same state) exactly at the decisions whose paired gain is significant; some are, some are not."""
    params = replace(CHEAP, conservative=True, z=0.5, samples=4)
    reqs = trace(40, 12)
    run = teach(reqs, params)
    state = ReplayState(reqs, config(), LIN, BucketsByTask())
    base = get_router(params.base, CTX)
    base.reset(CTX.num_instances, params.seed)
    answers = iter(run.choices)
    deviations = 0
    while (decision := state.next_decision()) is not None:
        choice = next(answers)
        deviations += int(choice != base.route(*decision))
        state.decide(choice)
    significant = sum(x.significant for x in run.paired)
    assert 0 < significant < len(run.paired)
    assert deviations == significant


def test_the_default_teacher_is_not_conservative():
    """Today's behaviour is the default: the lowest summed score wins."""
    assert LookaheadParams().conservative is False
    with pytest.raises(ValueError, match="z and min_margin_s"):
        LookaheadParams(z=-1.0)
