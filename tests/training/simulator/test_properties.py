"""Invariants over random small workloads (hypothesis), determinism, fast-forward equivalence."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.training.simulator._util import LeastLoaded, RoundRobin, SeededRandom, recount_load
from training.length.baselines import OraclePredictor
from training.simulator import (
    ClusterConfig,
    InstanceConfig,
    LinearLatencyModel,
    QueuePolicy,
    Request,
    simulate,
)
from training.workloads.synthetic import conversation_trace

LIN = LinearLatencyModel()
# more examples for a bug hunt: LOADWISE_SIM_EXAMPLES=5000 pytest tests/simulator
EXAMPLES = int(os.environ.get("LOADWISE_SIM_EXAMPLES", "200"))
PER_REQUEST = (
    "arrival_s",
    "routed_s",
    "first_token_s",
    "finish_s",
    "ttft_s",
    "e2e_s",
    "tbt_s",
    "queue_wait_s",
)


@st.composite
def workloads(draw):
    n = draw(st.integers(1, 25))
    block = draw(st.sampled_from([1, 4, 16]))
    prefix_tokens = block * draw(st.sampled_from([1, 2, 8]))
    reqs = []
    t = 0.0
    for i in range(n):
        t += draw(st.floats(0.0, 0.3))
        prompt = draw(st.integers(1, 200))
        ids = None
        if draw(st.booleans()):
            ids = tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=4)))
        reqs.append(Request(f"r{i}", t, prompt, draw(st.integers(1, 40)), prefix_hash_ids=ids))
    need = max(-(-(r.prompt_tokens + r.output_tokens - 1) // block) for r in reqs)  # peak KV
    kv = draw(st.one_of(st.none(), st.integers(need, need * 4)))
    inst = InstanceConfig(
        max_batch_size=draw(st.integers(1, 8)),
        max_batched_tokens=draw(st.integers(8, 400)),
        kv_blocks=kv,
        block_size=block,
        chunked_prefill_tokens=draw(st.one_of(st.none(), st.integers(8, 128))),
        queue_policy=draw(st.sampled_from(list(QueuePolicy))),
        prefix_caching=draw(st.booleans()),
        prefix_block_tokens=prefix_tokens,
        max_waiting=draw(st.one_of(st.none(), st.integers(1, 5))),
    )
    cfg = ClusterConfig(
        num_instances=draw(st.integers(1, 3)),
        instance=inst,
        max_router_wait_s=draw(st.one_of(st.none(), st.floats(0.0, 0.2))),
    )
    p_delay = draw(st.sampled_from([0.0, 0.3, -1.0]))  # -1: the load-sensitive LeastLoaded router
    return reqs, cfg, p_delay


def _router(p_delay):
    return LeastLoaded() if p_delay < 0 else SeededRandom(p_delay)


def _check_same(a, b):
    """Fast-forward and step-by-step replays must agree exactly (both accumulate iteration times
    one iteration at a time, and router snapshots are identical)."""
    for name in (*PER_REQUEST, "preemptions", "instance", "generated_tokens", "router_wait_s"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.num_iterations == b.num_iterations
    assert a.sim_time_s == b.sim_time_s


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.integers(0, 3))
def test_invariants_and_fast_forward_equivalence(workload, seed):
    reqs, cfg, p_delay = workload
    fast = simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), seed=seed)
    fast.check_invariants()
    assert np.array_equal(fast.generated_tokens, [r.output_tokens for r in reqs])
    for s in fast.instance_series:
        assert np.all(s["kv_used_blocks"] <= fast.kv_total_blocks)
        assert np.all(np.diff(s["time_s"]) >= 0)
    step = simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), seed=seed, fast_forward=False)
    step.check_invariants()
    _check_same(fast, step)


def _bench_like(n=300, m=3):
    reqs = conversation_trace(n, rate_per_s=4.0, seed=3)
    cfg = ClusterConfig(num_instances=m, instance=InstanceConfig(kv_blocks=600, max_batch_size=32))
    return reqs, cfg


def test_determinism_same_seed_identical_arrays():
    reqs, cfg = _bench_like()
    a = simulate(reqs, SeededRandom(0.2), cfg, LIN, OraclePredictor(), seed=7)
    b = simulate(reqs, SeededRandom(0.2), cfg, LIN, OraclePredictor(), seed=7)
    for name in (*PER_REQUEST, "preemptions", "instance", "router_wait_s"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for sa, sb in zip(a.instance_series, b.instance_series, strict=True):
        for key in sa:
            assert np.array_equal(sa[key], sb[key])
    c = simulate(reqs, SeededRandom(0.2), cfg, LIN, OraclePredictor(), seed=8)
    assert not np.array_equal(a.instance, c.instance)


def test_fast_forward_matches_step_by_step_under_pressure():
    reqs, cfg = _bench_like(400, 2)
    fast = simulate(reqs, LeastLoaded(), cfg, LIN, OraclePredictor())
    step = simulate(reqs, LeastLoaded(), cfg, LIN, OraclePredictor(), fast_forward=False)
    fast.check_invariants()
    assert fast.preemptions.sum() > 0  # the case exercises preemption
    _check_same(fast, step)
    assert sum(len(s["time_s"]) for s in fast.instance_series) < sum(
        len(s["time_s"]) for s in step.instance_series
    )


@pytest.mark.parametrize("policy", list(QueuePolicy))
def test_policies_with_prefix_and_chunking_match_step(policy):
    rng = np.random.default_rng(0)
    reqs = [
        Request(
            f"r{i}",
            float(i) * 0.05,
            int(rng.integers(300, 2000)),
            int(rng.integers(1, 120)),
            prefix_hash_ids=tuple(int(x) for x in rng.integers(0, 3, size=4)),
        )
        for i in range(150)
    ]
    inst = InstanceConfig(kv_blocks=300, chunked_prefill_tokens=512, queue_policy=policy, max_batch_size=16)
    cfg = ClusterConfig(num_instances=2, instance=inst)
    fast = simulate(reqs, RoundRobin(), cfg, LIN, OraclePredictor())
    step = simulate(reqs, RoundRobin(), cfg, LIN, OraclePredictor(), fast_forward=False)
    fast.check_invariants()
    assert fast.preemptions.sum() > 0
    _check_same(fast, step)


@settings(max_examples=max(EXAMPLES // 3, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from([True, False]))
def test_incremental_router_loads_match_recount(workload, fast):
    from training.simulator.cluster import Cluster

    reqs, cfg, p_delay = workload
    original = Cluster.view
    checked = []

    def checking_view(self, now, r, queue_len):
        cv = original(self, now, r, queue_len)
        self._cache_key = None  # a snapshot reused within an instant equals a fresh one
        assert original(self, now, r, queue_len) == cv
        for inst in self.instances:
            assert inst.load() == recount_load(inst)
            used = sum(x.alloc - x.shared for x in inst.running)
            assert inst.used_private == used
            assert inst.used_private + inst.cached_blocks <= inst.total_blocks
        checked.append(now)
        return cv

    Cluster.view = checking_view
    try:
        simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), fast_forward=fast).check_invariants()
    finally:
        Cluster.view = original
    assert checked


class TaskMean:
    """Non-integer predictions (exercise the 1/1024-token quantisation of load sums)."""

    name = "odd"
    is_oracle = False

    def predict_output_tokens(self, requests):
        return np.array([r.prompt_tokens / 7.0 + 0.3 for r in requests])
