"""``Hold``: a held request is offered again only when some instance has the room it asked for, and the
replay sleeps between such events instead of ticking; the results are those of ticking.

Each case replays the same trace twice with the same router: once as is (its ``Hold`` answers let
the replay skip offers and ticks) and once through ``Ticking``, which turns every ``Hold`` into a
plain ``DELAY`` (every held request offered at every tick, the behaviour before ``Hold``). Every
per-request array and per-instance series must be equal, with far fewer router calls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.routing.admission  # noqa: F401  (registers the +hold routers)
from training.length.baselines import OraclePredictor
from training.routing.admission_rule import can_start, room_needed
from training.routing.bench_engine import CountingRouter
from training.routing.registry import RouterContext, get_router
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, RouterQueueOrder, simulate
from training.simulator.interface import DELAY, ClusterView, Hold, RequestView
from training.simulator.request import Request
from training.simulator.result import SimResult

BLOCK = 16
KV_BLOCKS = 128  # 2048 tokens per instance: a few requests fill it


class PerRequestRule:
    """The admission rule with a headroom that depends on the request (so held requests wait for
    different rooms), a plain DELAY on a request's first offer when ``first_delay`` picks it (DELAY
    may read anything: such a request is offered at every tick), then the first startable instance."""

    name = "per_request_rule"

    def __init__(self, headrooms: tuple[float, ...], first_delay: int) -> None:
        self.headrooms, self.first_delay = headrooms, first_delay

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        k = int(request.request_id[1:])
        if self.first_delay and k % self.first_delay == 0 and request.waited_s == 0:
            return DELAY
        h = self.headrooms[k % len(self.headrooms)]
        ok = [i for i, v in enumerate(cluster.instances) if can_start(v, request.prompt_tokens, BLOCK, h)]
        if ok:
            return ok[0]
        return Hold(room_needed(request.prompt_tokens, BLOCK, h, cluster.instances[0].kv_total_blocks))


def overloaded(n: int, seed: int, gap_s: float = 0.03) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    out = []
    for i in range(n):
        prefix = (int(rng.integers(3)), 7) if i % 3 == 0 else None
        out.append(
            Request(f"r{i}", float(t[i]), int(rng.integers(40, 700)), int(rng.integers(20, 300)), "", prefix)
        )
    return out


def config(**kw) -> ClusterConfig:
    inst = InstanceConfig(kv_blocks=KV_BLOCKS, block_size=BLOCK, prefix_block_tokens=32)
    return ClusterConfig(num_instances=kw.pop("n", 3), instance=inst, **kw)


def assert_same(a: SimResult, b: SimResult) -> None:
    for name in (
        "routed_s",
        "first_token_s",
        "finish_s",
        "preemptions",
        "instance",
        "generated_tokens",
        "queue_wait_s",
    ):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert (a.num_iterations, a.sim_time_s) == (b.num_iterations, b.sim_time_s)
    for sa, sb in zip(a.instance_series, b.instance_series, strict=True):
        for key in sa:
            assert np.array_equal(sa[key], sb[key]), key


def both(make, requests, cfg, fast_forward=True) -> tuple[SimResult, SimResult, int, int]:
    woken, ticked = CountingRouter(make(), tick=False), CountingRouter(make(), tick=True)
    lin = LinearLatencyModel()
    a = simulate(requests, woken, cfg, lin, OraclePredictor(), seed=1, fast_forward=fast_forward)
    b = simulate(requests, ticked, cfg, lin, OraclePredictor(), seed=1, fast_forward=fast_forward)
    return a, b, woken.calls, ticked.calls


@pytest.mark.parametrize(
    ("base", "fast_forward"),
    [("round_robin", True), ("least_tokens", True), ("workload_impact_greedy", True), ("round_robin", False)],
)
def test_hold_routers_give_the_results_of_ticking_with_far_fewer_calls(base, fast_forward):
    def make():
        ctx = RouterContext(num_instances=3, block_size=BLOCK, latency_model=LinearLatencyModel())
        return get_router(f"{base}+hold", ctx)

    a, b, calls, tick_calls = both(make, overloaded(100, 0), config(), fast_forward)
    a.check_invariants()
    assert a.router_wait_s.max() > 1.0  # the trace holds requests over many ticks
    assert_same(a, b)
    assert calls < tick_calls / 10, (calls, tick_calls)


def test_shortest_first_router_queue_with_aging():
    cfg = config(router_queue_order=RouterQueueOrder.SHORTEST, router_queue_aging_tokens_per_s=50.0)

    def make():
        return get_router("least_tokens+hold", RouterContext(num_instances=3, block_size=BLOCK))

    a, b, calls, tick_calls = both(make, overloaded(100, 1), cfg)
    assert_same(a, b)
    assert calls < tick_calls / 10


def test_plain_delays_among_holds_and_per_request_rooms():
    """Requests waiting for different rooms, and some answered DELAY (offered at every tick)."""

    def make():
        return PerRequestRule((0.0, 0.1, 0.4), first_delay=4)

    a, b, calls, tick_calls = both(make, overloaded(100, 2), config())
    a.check_invariants()
    assert_same(a, b)
    assert calls < tick_calls


def test_max_router_wait_keeps_ticking_and_the_fallback_fires_on_time():
    cfg = config(max_router_wait_s=0.3)

    def make():
        return get_router("round_robin+hold", RouterContext(num_instances=3, block_size=BLOCK))

    a, b, calls, tick_calls = both(make, overloaded(100, 3), cfg)
    assert_same(a, b)
    assert a.router_wait_s.max() <= 0.3 + cfg.decision_interval_s + 1e-9
    assert calls < tick_calls  # held requests without room are not asked, the fallback still fires


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 60),
    gap=st.sampled_from([0.005, 0.03, 0.2]),
    instances=st.integers(1, 3),
    headrooms=st.sampled_from([(0.0,), (0.1,), (0.0, 0.3), (0.05, 0.2, 0.6)]),
    first_delay=st.sampled_from([0, 2, 5]),
    fast_forward=st.booleans(),
)
def test_hold_equals_ticking_on_random_traces(seed, n, gap, instances, headrooms, first_delay, fast_forward):
    a, b, calls, tick_calls = both(
        lambda: PerRequestRule(headrooms, first_delay),
        overloaded(n, seed, gap),
        config(n=instances),
        fast_forward,
    )
    assert_same(a, b)
    assert calls <= tick_calls


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 150),
    gap=st.sampled_from([0.002, 0.01, 0.03, 0.2]),
    instances=st.integers(1, 4),
    headrooms=st.sampled_from([(0.0,), (0.1,), (0.0, 0.3), (0.05, 0.2, 0.6)]),
    first_delay=st.sampled_from([0, 2, 5]),
    fast_forward=st.booleans(),
)
def test_hold_equals_ticking_on_random_traces_long(
    seed, n, gap, instances, headrooms, first_delay, fast_forward
):
    a, b, _, _ = both(
        lambda: PerRequestRule(headrooms, first_delay),
        overloaded(n, seed, gap),
        config(n=instances),
        fast_forward,
    )
    assert_same(a, b)


def test_hold_is_a_delay():
    h = Hold(12.5)
    assert h == DELAY
    assert isinstance(h, int)
    assert h.room_blocks == 12.5
    assert repr(h) == "Hold(12.5)"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    accepting=st.booleans(),
    running=st.integers(0, 3),
    waiting=st.integers(0, 3),
    used=st.integers(0, 1000),
    outstanding=st.integers(0, 20_000),
    prompt=st.integers(1, 8000),
    headroom=st.sampled_from([0.0, 0.05, 0.1, 0.37]),
)
def test_the_admission_rule_is_of_the_form_hold_promises(
    accepting, running, waiting, used, outstanding, prompt, headroom
):
    """``can_start`` == accepting and (empty or total - committed >= room_needed): the form whose
    monotonicity the replay relies on to skip offers (``interface.Hold``)."""
    from tests.training.routing.views import inst

    v = inst(
        0,
        accepting=accepting,
        num_running=running,
        num_waiting=waiting,
        kv_used_blocks=used,
        outstanding_prompt_tokens=outstanding,
    )
    committed = v.kv_used_blocks + math.ceil(v.outstanding_prompt_tokens / BLOCK)
    room = v.kv_total_blocks - committed
    form = v.accepting and (
        v.num_requests == 0 or room >= room_needed(prompt, BLOCK, headroom, v.kv_total_blocks)
    )
    assert can_start(v, prompt, BLOCK, headroom) == form
