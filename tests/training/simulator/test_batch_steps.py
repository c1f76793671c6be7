"""The batch representation of the running batch (issue 16) against its request-by-request twin.

``Instance.batch_steps = False`` schedules every iteration request by request (the pre-issue-16
code: per-request token counts, no decode-tick aggregates, no stretches). Both must give the same
replay bit for bit: every per-request array, the iteration count, the simulated time and, against
step-by-step mode (one sample per iteration in both), every per-instance series.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.training.simulator._util import LeastLoaded
from tests.training.simulator.test_properties import TaskMean, _router, workloads
from training.length.baselines import OraclePredictor
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, SimResult, simulate
from training.simulator.instance import Instance
from training.workloads.synthetic import conversation_trace

LIN = LinearLatencyModel()
ARRAYS = ("routed_s", "first_token_s", "finish_s", "preemptions", "instance", "generated_tokens")


def _same(a: SimResult, b: SimResult, series: bool) -> None:
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.num_iterations == b.num_iterations
    assert a.sim_time_s == b.sim_time_s
    if series:
        for sa, sb in zip(a.instance_series, b.instance_series, strict=True):
            for key in sa:
                assert np.array_equal(sa[key], sb[key]), key


def _twin(monkeypatch: pytest.MonkeyPatch, run) -> SimResult:
    with monkeypatch.context() as m:
        m.setattr(Instance, "batch_steps", False)
        return run()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.integers(0, 3))
def test_batch_steps_match_request_by_request(workload, seed):
    reqs, cfg, p_delay = workload
    mp = pytest.MonkeyPatch()

    def run(fast: bool) -> SimResult:
        return simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), seed=seed, fast_forward=fast)

    twin = _twin(mp, lambda: run(False))
    _same(run(False), twin, series=True)
    _same(run(True), twin, series=False)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.integers(0, 3))
def test_batch_steps_match_request_by_request_long(workload, seed):
    """The same property over many more workloads (``make test-all``)."""
    test_batch_steps_match_request_by_request.hypothesis.inner_test(workload, seed)


def test_batch_steps_match_under_kv_pressure_and_chunking(monkeypatch):
    # deep batches, preemptions, chunked prefills sharing the budget with decodes, prefix hits
    reqs = conversation_trace(500, rate_per_s=6.0, seed=4)
    inst = InstanceConfig(kv_blocks=500, max_batch_size=48, chunked_prefill_tokens=256)
    cfg = ClusterConfig(num_instances=2, instance=inst)

    def run(fast: bool) -> SimResult:
        return simulate(reqs, LeastLoaded(), cfg, LIN, OraclePredictor(), fast_forward=fast)

    twin = _twin(monkeypatch, lambda: run(False))
    assert twin.preemptions.sum() > 0
    _same(run(False), twin, series=True)
    _same(run(True), twin, series=False)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.booleans())
def test_reused_instance_views_equal_fresh_ones(workload, fast):
    """``Cluster`` reuses an instance's view while the instance's ``mut`` is unchanged: every
    snapshot must equal one built from scratch."""
    from training.simulator.cluster import Cluster

    reqs, cfg, p_delay = workload
    original = Cluster.view
    checked = []

    def checking_view(self, now, r, queue_len):
        cv = original(self, now, r, queue_len)
        self._cache_key = None
        self._muts = [-1] * len(self.instances)  # forget every reusable view
        assert original(self, now, r, queue_len) == cv
        checked.append(now)
        return cv

    mp = pytest.MonkeyPatch()
    mp.setattr(Cluster, "view", checking_view)
    try:
        simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), fast_forward=fast).check_invariants()
    finally:
        mp.undo()
    assert checked
