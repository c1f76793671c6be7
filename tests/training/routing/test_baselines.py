"""Each router's choice on hand-built views."""

from __future__ import annotations

import pytest

from tests.training.routing.views import cluster, inst, req
from training.routing.registry import RouterContext, get_entry, get_router
from training.simulator.interface import DELAY


def make(name: str, n: int = 3, seed: int = 0, **ctx):
    router = get_router(name, RouterContext(num_instances=n, **ctx))
    router.reset(n, seed)
    return router


def test_round_robin_cycles_and_skips_non_accepting():
    rr = make("round_robin")
    c = cluster(inst(0), inst(1), inst(2))
    assert [rr.route(req(), c) for _ in range(4)] == [0, 1, 2, 0]
    c2 = cluster(inst(0), inst(1, accepting=False), inst(2))
    assert [rr.route(req(), c2) for _ in range(3)] == [2, 0, 2]


def test_random_covers_all_instances():
    r = make("random", 4, seed=1)
    c = cluster(*(inst(i) for i in range(4)))
    assert {r.route(req(), c) for _ in range(200)} == {0, 1, 2, 3}


def test_power_of_two_with_two_instances_picks_less_loaded():
    r = make("power_of_two", 2)
    c = cluster(inst(0, num_running=5, num_waiting=3), inst(1, num_running=2))
    assert all(r.route(req(), c) == 1 for _ in range(20))


def test_least_request_picks_the_emptiest():
    c = cluster(
        inst(0, num_running=4, num_waiting=1), inst(1, num_running=1, num_waiting=1), inst(2, num_running=3)
    )
    assert make("least_request").route(req(), c) == 1


def test_least_request_breaks_ties_at_random():
    r = make("least_request", seed=2)
    c = cluster(inst(0, num_running=1), inst(1, num_running=1), inst(2, num_running=5))
    assert {r.route(req(), c) for _ in range(100)} == {0, 1}


def test_least_queue_looks_only_at_waiting():
    c = cluster(inst(0, num_running=50, num_waiting=0), inst(1, num_running=0, num_waiting=2))
    assert make("least_queue", 2).route(req(), c) == 0


def test_least_kv_uses_usage_fraction_and_max_free_capacity_absolute_blocks():
    c = cluster(
        inst(0, kv_used_blocks=100, kv_total_blocks=200), inst(1, kv_used_blocks=300, kv_total_blocks=1000)
    )
    assert make("least_kv", 2).route(req(), c) == 1  # 30 % < 50 %
    c2 = cluster(
        inst(0, kv_used_blocks=0, kv_total_blocks=500), inst(1, kv_used_blocks=300, kv_total_blocks=1000)
    )
    assert make("least_kv", 2).route(req(), c2) == 0  # 0 % used
    assert make("max_free_capacity", 2).route(req(), c2) == 1  # 700 free > 500 free


def test_least_tokens_counts_prompt_and_predicted_decode():
    c = cluster(
        inst(0, outstanding_prompt_tokens=1000, outstanding_decode_tokens=0.0),
        inst(1, outstanding_prompt_tokens=100, outstanding_decode_tokens=500.0),
        inst(2, outstanding_prompt_tokens=0, outstanding_decode_tokens=900.0),
    )
    assert make("least_tokens").route(req(), c) == 1


def test_gie_default_prefers_prefix_hits():
    r = make("gie_default")
    c = cluster(inst(0), inst(1, cached_prefix_blocks=3), inst(2, cached_prefix_blocks=1))
    assert r.route(req(prefix=(1, 2, 3)), c) == 1
    # a full prefix hit (weight 3) outweighs a longer queue (queue weight 2, normalised)
    c2 = cluster(inst(0, num_waiting=0), inst(1, num_waiting=4, cached_prefix_blocks=3))
    assert make("gie_default", 2).route(req(prefix=(1, 2, 3)), c2) == 1
    # without prefix ids the cache does not matter: the shorter queue wins
    assert make("gie_default", 2).route(req(prefix=None), c2) == 0


def test_gie_default_scores_follow_llmd_normalisation():
    r = make("gie_default", 3)
    c = cluster(
        inst(0, num_waiting=0, kv_used_blocks=0),
        inst(1, num_waiting=5, kv_used_blocks=500),
        inst(2, num_waiting=10, kv_used_blocks=1000, cached_prefix_blocks=2),
    )
    s = r.scores(req(prefix=(7, 8)), c)
    assert s[0] == pytest.approx(2 * 1.0 + 2 * 1.0 + 0)
    assert s[1] == pytest.approx(2 * 0.5 + 2 * 0.5 + 0)
    assert s[2] == pytest.approx(2 * 0.0 + 2 * 0.0 + 3 * 1.0)
    equal = r.scores(req(), cluster(inst(0, num_waiting=3), inst(1, num_waiting=3)))
    assert equal[0] == equal[1] == pytest.approx(2 * 1.0 + 2 * 1.0)  # equal queues score 1.0 (neutral)


def test_dedicated_small_large_splits_by_predicted_length():
    r = make("dedicated_small_large", 4, length_threshold_tokens=200.0)
    c = cluster(*(inst(i) for i in range(4)))
    assert all(r.route(req(predicted=50), c) in (0, 1) for _ in range(20))
    assert all(r.route(req(predicted=500), c) in (2, 3) for _ in range(20))
    busy = cluster(inst(0, num_running=5), inst(1), inst(2), inst(3, num_running=2))
    assert r.route(req(predicted=50), busy) == 1
    assert r.route(req(predicted=500), busy) == 2
    no_small = cluster(inst(0, accepting=False), inst(1, accepting=False), inst(2), inst(3))
    assert r.route(req(predicted=50), no_small) == DELAY  # dedicated pools do not spill


def test_decode_balancer_is_oracle_and_balances_decode_tokens():
    assert get_entry("decode_balancer").oracle
    assert not any(get_entry(n).oracle for n in ("round_robin", "least_tokens", "workload_impact_greedy"))
    c = cluster(
        inst(0, outstanding_decode_tokens=900.0, num_running=1),
        inst(1, outstanding_decode_tokens=100.0, num_running=9),
        inst(2, outstanding_decode_tokens=400.0),
    )
    assert make("decode_balancer").route(req(), c) == 1


def test_min_min_prefers_the_earliest_completion():
    r = make("min_min")
    c = cluster(
        inst(0, num_running=10, num_decode_requests=10, kv_used_blocks=400, outstanding_decode_tokens=3000.0),
        inst(1, outstanding_prompt_tokens=8000, num_waiting=4),
        inst(2, num_running=1, num_decode_requests=1, kv_used_blocks=20, outstanding_decode_tokens=50.0),
    )
    assert r.route(req(prompt=200, predicted=300), c) == 2


def test_min_expected_latency_avoids_long_queues_and_prompt_backlog():
    r = make("min_expected_latency")
    c = cluster(
        inst(0, num_running=4, num_waiting=10),
        inst(1, num_running=4, num_waiting=0, outstanding_prompt_tokens=500),
        inst(2, num_running=4, num_waiting=0, outstanding_prompt_tokens=9000),
    )
    assert r.route(req(), c) == 1


def test_min_expected_latency_sees_running_decode_context_without_queues():
    # nobody waits: the prefill shares its iteration with the running decodes, so less KV context wins
    r = make("min_expected_latency", 2)
    busy = inst(0, num_running=20, num_decode_requests=20, kv_used_blocks=900)
    light = inst(1, num_running=20, num_decode_requests=20, kv_used_blocks=100)
    assert r.route(req(), cluster(busy, light)) == 1


def test_workload_impact_greedy_keeps_heavy_prefill_away_from_decodes():
    # same request counts and tokens outstanding, but instance 0 is running 12 decodes while
    # instance 1 holds prompts waiting for prefill: a prefill-heavy request stalls fewer decodes on 1
    r = make("workload_impact_greedy", 2)
    decodes = inst(
        0, num_running=12, num_decode_requests=12, kv_used_blocks=600, outstanding_decode_tokens=2400.0
    )
    prompts = inst(1, num_running=12, num_prefill_requests=12, outstanding_prompt_tokens=600,
                   outstanding_decode_tokens=2400.0)  # fmt: skip
    heavy_prefill = req(prompt=3000, predicted=20)
    assert r.impact_s(heavy_prefill, prompts) < r.impact_s(heavy_prefill, decodes)
    assert r.route(heavy_prefill, cluster(decodes, prompts)) == 1
    # an idle instance is always cheapest
    assert r.route(req(prompt=500, predicted=400), cluster(decodes, inst(1))) == 1
