"""What the replay hands routers from the length predictor (expected length and bucket probabilities),
and the order in which the router's hold queue offers held requests (``RouterQueueOrder``)."""

from __future__ import annotations

import numpy as np
import pytest

from training.length.baselines import OraclePredictor
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, RouterQueueOrder, simulate
from training.simulator.interface import DELAY, ClusterView, LengthPrediction, RequestView
from training.simulator.request import Request

LM = LinearLatencyModel()
EDGES = (100.0, 300.0)


class _Probs:
    """Bucket probabilities that differ per request (its index over 10), expected = 10 x index + 1."""

    name = "probs"
    is_oracle = False

    def predict_lengths(self, requests):
        n = len(requests)
        first = np.array([int(r.request_id[1:]) / 10 for r in requests])
        probs = np.column_stack([first, 1.0 - first, np.zeros(n)])
        return LengthPrediction(np.array([10.0 * int(r.request_id[1:]) + 1 for r in requests]), probs, EDGES)

    def predict_output_tokens(self, requests):
        return self.predict_lengths(requests).expected_tokens


class _Spy:
    name = "spy"

    def __init__(self) -> None:
        self.seen: dict[str, RequestView] = {}

    def reset(self, num_instances: int, seed: int) -> None:
        self.seen = {}

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        self.seen[request.request_id] = request
        return cluster.accepting[0]


def test_routers_see_the_predictors_bucket_probabilities():
    reqs = [Request(f"r{i}", 0.1 * i, 10, 5) for i in range(5)]
    spy = _Spy()
    simulate(reqs, spy, ClusterConfig(2), LM, _Probs())
    for i in range(5):
        view = spy.seen[f"r{i}"]
        assert view.predicted_output_tokens == 10.0 * i + 1
        assert view.predicted_bucket_probs == pytest.approx((i / 10, 1 - i / 10, 0.0))
        assert view.predicted_bucket_edges == EDGES
    simulate(reqs, spy, ClusterConfig(2), LM, OraclePredictor())  # a length only: no probabilities
    assert all(
        v.predicted_bucket_probs is None and v.predicted_bucket_edges is None for v in spy.seen.values()
    )


class _HoldThenOnePerTick:
    """Holds every request until ``release_s``, then places one held request per decision tick."""

    name = "hold_then_one"

    def __init__(self, release_s: float) -> None:
        self.release_s = release_s
        self.order: list[str] = []
        self._tick = -1.0

    def reset(self, num_instances: int, seed: int) -> None:
        self.order, self._tick = [], -1.0

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        if request.now_s < self.release_s or request.now_s == self._tick:
            return DELAY
        self._tick = request.now_s
        self.order.append(request.request_id)
        return cluster.accepting[0]


def _held_order(
    order: RouterQueueOrder, outputs: list[int], arrivals: list[float], release_s: float
) -> list[str]:
    reqs = [Request(f"r{i}", a, 10, o) for i, (a, o) in enumerate(zip(arrivals, outputs, strict=True))]
    router = _HoldThenOnePerTick(release_s)
    cfg = ClusterConfig(
        1, InstanceConfig(kv_blocks=4000), router_queue_order=order, router_queue_aging_tokens_per_s=100.0
    )
    simulate(reqs, router, cfg, LM, OraclePredictor())
    return router.order


def test_the_hold_queue_offers_in_arrival_order_by_default_and_shortest_first_when_asked():
    outputs, arrivals = [400, 50, 300, 10], [0.0, 0.01, 0.02, 0.03]
    assert _held_order(RouterQueueOrder.ARRIVAL, outputs, arrivals, 0.1) == ["r0", "r1", "r2", "r3"]
    assert _held_order(RouterQueueOrder.SHORTEST, outputs, arrivals, 0.1) == ["r3", "r1", "r2", "r0"]


def test_aging_lets_a_long_held_request_go_before_short_newcomers():
    """r0 (1,000 tokens) has waited 9.5 s more than the 100-token newcomers: 1000 - 100 x 9.5 < 100."""
    outputs = [1000, 100, 100]
    arrivals = [0.0, 9.5, 9.5]
    assert _held_order(RouterQueueOrder.SHORTEST, outputs, arrivals, 9.6)[0] == "r0"
    assert _held_order(RouterQueueOrder.SHORTEST, outputs, [0.0, 0.5, 0.5], 0.6)[-1] == "r0"


def test_the_aging_rate_must_be_positive():
    with pytest.raises(ValueError, match="aging"):
        ClusterConfig(1, router_queue_aging_tokens_per_s=0.0)
