"""The router side of the replay: DELAY ticks, the wait cap, accepting flags, errors, event order."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.simulator._util import (
    AlwaysDelay,
    ConstantPredictor,
    DelayThenFirst,
    Fixed,
    Recording,
    RoundRobin,
)
from training.length.baselines import OraclePredictor
from training.simulator import (
    ClusterConfig,
    InstanceConfig,
    LinearLatencyModel,
    Request,
    RoutingError,
    simulate,
)
from training.simulator.event_order import EventKind
from training.simulator.interface import DELAY, ClusterView, RequestView

LIN = LinearLatencyModel()


@pytest.mark.parametrize("n", [0, 1, 3, 7])
@pytest.mark.parametrize("interval", [0.02, 0.05])
def test_delay_n_ticks_waits_n_intervals(n, interval):
    reqs = [Request("a", 0.013, 100, 2)]
    cfg = ClusterConfig(num_instances=2, decision_interval_s=interval)
    res = simulate(reqs, DelayThenFirst(n), cfg, LIN, OraclePredictor())
    res.check_invariants()
    assert res.router_wait_s[0] == pytest.approx(n * interval, abs=1e-12)
    assert res.ttft_s[0] == pytest.approx(n * interval + 0.02 + 3.2e-4 * 100, abs=1e-12)


def test_held_requests_offered_in_arrival_order_each_tick():
    class Log(DelayThenFirst):
        def __init__(self):
            super().__init__(2)
            self.log: list[tuple[float, str]] = []

        def route(self, request, cluster):
            self.log.append((round(request.now_s, 9), request.request_id))
            return super().route(request, cluster)

    reqs = [Request("a", 0.0, 10, 1), Request("b", 0.005, 10, 1)]
    router = Log()
    res = simulate(reqs, router, ClusterConfig(num_instances=1), LIN, OraclePredictor())
    res.check_invariants()
    # a arrives at 0 and starts the tick series (0.02, 0.04); b arrives at 0.005 and joins it
    assert router.log == [(0.0, "a"), (0.005, "b"), (0.02, "a"), (0.02, "b"), (0.04, "a"), (0.04, "b")]
    assert res.routed_s.tolist() == pytest.approx([0.04, 0.04])


def test_router_view_carries_predictions_and_waiting():
    router = Recording(0)
    reqs = [Request(f"r{i}", 0.0, 100, 5, task="t") for i in range(3)]
    simulate(reqs, router, ClusterConfig(num_instances=1), LIN, ConstantPredictor(7.0))
    rvs = [rv for rv, _ in router.seen]
    assert all(rv.predicted_output_tokens == 7.0 for rv in rvs)
    last = router.seen[-1][1].instances[0]
    # two requests routed before at the same instant, not scheduled yet (SCHEDULE comes after routing)
    assert last.num_waiting == 2
    assert last.outstanding_prompt_tokens == 200
    assert last.outstanding_decode_tokens == 14.0
    assert last.num_prefill_requests == 2


def test_arrival_at_iteration_end_sees_post_iteration_state():
    end = 0.0 + LIN.iteration_time(100, 100 * 100, 0, 0)
    router = Recording(0)
    reqs = [Request("a", 0.0, 100, 1), Request("b", end, 100, 1)]
    simulate(reqs, router, ClusterConfig(num_instances=1), LIN, OraclePredictor())
    view = router.seen[1][1].instances[0]
    assert view.num_running == 0  # a's iteration ended at the same instant and was processed first
    assert view.kv_used_blocks == 0


def test_event_kind_order_is_the_documented_one():
    assert list(EventKind) == sorted(EventKind)
    assert [k.name for k in sorted(EventKind)] == ["ITERATION_END", "ROUTER_TICK", "ARRIVAL", "SCHEDULE"]


def test_requests_routed_at_same_instant_share_the_first_batch():
    reqs = [Request("a", 0.5, 100, 1), Request("b", 0.5, 100, 1)]
    res = simulate(reqs, Fixed(0), ClusterConfig(num_instances=1), LIN, OraclePredictor())
    assert res.num_iterations == 1
    assert res.finish_s[0] == res.finish_s[1]


def test_routing_to_non_accepting_instance_raises():
    reqs = [Request("a", 0.0, 10, 1), Request("b", 0.0, 10, 1)]
    cfg = ClusterConfig(num_instances=2, instance=InstanceConfig(max_waiting=1))
    with pytest.raises(RoutingError, match="accepting"):
        simulate(reqs, Fixed(0), cfg, LIN, OraclePredictor())
    with pytest.raises(RoutingError):
        simulate(reqs[:1], Fixed(5), cfg, LIN, OraclePredictor())


def test_max_waiting_sets_accepting_false():
    router = Recording(0)

    class FirstAccepting(Recording):
        def route(self, request: RequestView, cluster: ClusterView) -> int:
            self.seen.append((request, cluster))
            return cluster.accepting[0] if cluster.accepting else DELAY

    router = FirstAccepting()
    reqs = [Request(f"r{i}", 0.0, 10, 1) for i in range(3)]
    cfg = ClusterConfig(num_instances=2, instance=InstanceConfig(max_waiting=1))
    res = simulate(reqs, router, cfg, LIN, OraclePredictor())
    res.check_invariants()
    assert [cv.accepting for _, cv in router.seen[:3]] == [(0, 1), (1,), ()]
    assert res.instance.tolist() == [0, 1, 0]
    assert res.router_wait_s[2] > 0


def test_max_router_wait_caps_delay():
    reqs = [Request("a", 0.0, 10, 1), Request("b", 0.0, 10, 1)]
    cfg = ClusterConfig(num_instances=2, max_router_wait_s=0.05)
    res = simulate(reqs, AlwaysDelay(), cfg, LIN, OraclePredictor())
    res.check_invariants()
    assert res.router_wait_s.tolist() == pytest.approx([0.06, 0.06])  # first tick at or after the cap
    assert sorted(res.instance.tolist()) == [0, 1]  # fallback: fewest requests, lowest index


def test_router_that_never_routes_stops_with_an_error(monkeypatch):
    import training.simulator.engine as engine

    monkeypatch.setattr(engine, "MAX_IDLE_TICKS", 50)
    with pytest.raises(RoutingError, match="max_router_wait_s"):
        simulate([Request("a", 0.0, 10, 1)], AlwaysDelay(), ClusterConfig(1), LIN, OraclePredictor())


def test_router_reset_receives_seed_and_instance_count():
    class Spy(RoundRobin):
        def reset(self, num_instances, seed):
            self.args = (num_instances, seed)
            super().reset(num_instances, seed)

    spy = Spy()
    simulate([Request("a", 0.0, 10, 1)], spy, ClusterConfig(num_instances=3), LIN, OraclePredictor(), seed=42)
    assert spy.args == (3, 42)


def test_input_errors():
    cfg = ClusterConfig(num_instances=1, instance=InstanceConfig(kv_blocks=2, block_size=16))
    with pytest.raises(ValueError, match="KV blocks"):
        simulate([Request("a", 0.0, 100, 1)], Fixed(0), cfg, LIN, OraclePredictor())
    with pytest.raises(ValueError, match="unique"):
        simulate([Request("a", 0.0, 1, 1)] * 2, Fixed(0), ClusterConfig(1), LIN, OraclePredictor())
    with pytest.raises(ValueError, match="multiple of block_size"):
        InstanceConfig(prefix_block_tokens=100)
    with pytest.raises(ValueError, match="num_instances"):
        ClusterConfig(num_instances=0)


def test_bad_predictions_are_rejected():
    class Nan:
        name = "nan"
        is_oracle = False

        def predict_output_tokens(self, requests):
            return [float("nan")] * len(requests)

    with pytest.raises(ValueError, match="non-finite"):
        simulate([Request("a", 0.0, 10, 1)], Fixed(0), ClusterConfig(1), LIN, Nan())


def test_empty_replay():
    res = simulate([], RoundRobin(), ClusterConfig(2), LIN, OraclePredictor())
    res.check_invariants()
    assert res.num_requests == 0


def test_replay_generator_hands_out_decisions():
    from training.simulator import replay
    from training.workloads.synthetic import conversation_trace

    reqs = conversation_trace(60, rate_per_s=5.0, seed=2)
    cfg = ClusterConfig(num_instances=3)

    def policy(rv, cv):  # fewest requests, after holding each request once
        return DELAY if rv.waited_s == 0 else min(cv.accepting, key=lambda i: cv.instances[i].num_requests)

    gen = replay(reqs, cfg, LIN, OraclePredictor())
    decisions = 0
    try:
        rv, cv = next(gen)
        while True:
            decisions += 1
            # a hand-written policy: fewest requests, after holding each request once
            choice = (
                DELAY if rv.waited_s == 0 else min(cv.accepting, key=lambda i: cv.instances[i].num_requests)
            )
            rv, cv = gen.send(choice)
    except StopIteration as stop:
        res = stop.value
    res.check_invariants()
    assert decisions == 2 * len(reqs)
    assert res.router_wait_s.min() > 0

    class Same:
        name = "same"

        def reset(self, num_instances, seed):
            pass

        def route(self, rv, cv):
            return (
                DELAY if rv.waited_s == 0 else min(cv.accepting, key=lambda i: cv.instances[i].num_requests)
            )

    again = simulate(reqs, Same(), cfg, LIN, OraclePredictor())
    assert np.array_equal(again.finish_s, res.finish_s)
