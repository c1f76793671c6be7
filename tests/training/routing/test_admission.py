"""Router-side admission control (``training.routing.admission``): the start rule, the wrapper, a replay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.training.routing.views import cluster, inst, req
from training.length.baselines import OraclePredictor
from training.routing.admission import HoldForHeadroom
from training.routing.admission_rule import AdmissionMemo, can_start, startable_instances
from training.routing.bench_engine import CountingRouter
from training.routing.registry import RouterContext, get_entry, get_router
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, Request, simulate
from training.simulator.interface import DELAY, ClusterView, InstanceView, RequestView

BLOCK = 16


class FirstAccepting:
    """Inner router that records the views it is shown and picks the first accepting instance."""

    name = "first"

    def __init__(self, needs_request_stats: bool = False) -> None:
        self.needs_request_stats = needs_request_stats
        self.seen: list[ClusterView] = []

    def reset(self, num_instances: int, seed: int) -> None:
        self.seen = []

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        self.seen.append(cluster)
        return cluster.accepting[0] if cluster.accepting else DELAY


def hold(name: str = "round_robin", n: int = 4, **options) -> HoldForHeadroom:
    router = get_router(f"{name}+hold", RouterContext(num_instances=n, block_size=BLOCK, options=options))
    assert isinstance(router, HoldForHeadroom)
    router.reset(n, 0)
    return router


FULL_QUEUE = {"outstanding_prompt_tokens": 950 * BLOCK}
"""Queued prompts that will take 950 of an instance's 1000 blocks."""


def busy(index: int, used: int, **kw):
    """An instance with one running request and ``used`` of 1000 KV blocks in use."""
    return inst(index, num_running=1, kv_used_blocks=used, **kw)


# --- can_start -------------------------------------------------------------------------------------


def test_not_accepting_cannot_start():
    assert not can_start(inst(0, accepting=False), 10, BLOCK, 0.1)


def test_prompts_already_queued_there_count_against_the_free_blocks():
    # 200 free blocks; the request needs 3 + 100 (headroom): 97 queued prompt blocks leave exactly 103
    assert can_start(busy(0, 800), 33, BLOCK, 0.1)
    queued = 97 * BLOCK
    assert can_start(busy(0, 800, num_waiting=2, outstanding_prompt_tokens=queued), 33, BLOCK, 0.1)
    assert not can_start(busy(0, 800, num_waiting=2, outstanding_prompt_tokens=queued + 1), 33, BLOCK, 0.1)
    # waiting requests alone make an instance non-empty: their prompts are what counts
    assert not can_start(inst(0, num_waiting=1, outstanding_prompt_tokens=990 * BLOCK), 10, BLOCK, 0.1)
    assert can_start(inst(0, num_waiting=1, outstanding_prompt_tokens=10 * BLOCK), 10, BLOCK, 0.1)


def test_idle_instance_starts_a_prompt_larger_than_its_cache():
    assert can_start(inst(0, kv_total_blocks=10), 10_000, BLOCK, 0.5)
    assert not can_start(busy(0, 0, kv_total_blocks=10), 10_000, BLOCK, 0.5)


def test_headroom_boundary_uses_ceil_of_prompt_blocks():
    # 33 tokens -> ceil(33 / 16) = 3 blocks; 10% of 1000 blocks = 100 -> needs 103 free blocks
    assert can_start(busy(0, 1000 - 103), 33, BLOCK, 0.1)
    assert not can_start(busy(0, 1000 - 102), 33, BLOCK, 0.1)
    # 32 tokens are exactly 2 blocks: 102 free is then enough
    assert can_start(busy(0, 1000 - 102), 32, BLOCK, 0.1)


# --- HoldForHeadroom -------------------------------------------------------------------------------


def test_delay_when_no_instance_can_start_although_all_accept():
    c = cluster(busy(0, 950), inst(1, num_waiting=2, **FULL_QUEUE), busy(2, 899), busy(3, 1000))
    assert all(v.accepting for v in c.instances)
    assert hold().route(req(prompt=100), c) == DELAY


def test_round_robin_hold_only_picks_startable_instances():
    c = cluster(busy(0, 950), busy(1, 100), inst(2, num_waiting=1, **FULL_QUEUE), inst(3))
    router = hold("round_robin")
    assert {router.route(req(prompt=100), c) for _ in range(50)} == {1, 3}


def test_inner_router_sees_non_startable_instances_as_not_accepting():
    inner = FirstAccepting()
    router = HoldForHeadroom(inner, BLOCK, 0.1)
    c = ClusterView(
        now_s=1.5,
        instances=(
            busy(0, 950),
            inst(1, accepting=False),
            busy(2, 100),
            inst(3, num_waiting=1, **FULL_QUEUE),
        ),
        router_queue_len=3,
    )
    assert router.route(req(prompt=100), c) == 2
    (seen,) = inner.seen
    assert [v.accepting for v in seen.instances] == [False, False, True, False]
    assert (seen.now_s, seen.router_queue_len) == (1.5, 3)
    # only the flag changes
    assert seen.instances[0].kv_used_blocks == 950
    assert seen.instances[3].num_waiting == 1


def test_headroom_option_changes_the_decision():
    # 100 tokens = 7 blocks; 400 free: startable with no headroom, not with half the cache kept free
    c = cluster(busy(0, 600))
    assert hold(n=1, hold_kv_headroom=0.0).route(req(prompt=100), c) == 0
    assert hold(n=1, hold_kv_headroom=0.5).route(req(prompt=100), c) == DELAY
    assert hold(n=1).headroom == pytest.approx(0.10)


@pytest.mark.parametrize("kw", [{"headroom": 1.0}, {"headroom": -0.1}, {"block_size": 0}])
def test_invalid_settings_raise(kw):
    args = {"block_size": BLOCK, "headroom": 0.1} | kw
    with pytest.raises(ValueError, match=next(iter(kw))):
        HoldForHeadroom(FirstAccepting(), **args)


def test_name_and_request_stats_pass_through():
    assert HoldForHeadroom(FirstAccepting(), BLOCK).name == "first+hold"
    assert HoldForHeadroom(FirstAccepting(needs_request_stats=True), BLOCK).needs_request_stats
    assert not HoldForHeadroom(FirstAccepting(), BLOCK).needs_request_stats
    for base in ("round_robin", "least_tokens", "workload_impact_greedy"):
        assert hold(base).name == f"{base}+hold"
        assert get_entry(f"{base}+hold").admission


# --- replay ----------------------------------------------------------------------------------------

KV_BLOCKS = 128  # 2048 tokens per instance


def trace() -> list[Request]:
    """80 requests at 10 req/s with outputs longer than their prompts, and one near-full-cache prompt
    (95% of the cache > 90%: only an idle instance can start it under the default headroom)."""
    rng = np.random.default_rng(0)
    reqs = [
        Request(f"r{i}", 0.1 * i, int(rng.integers(50, 150)), int(rng.integers(50, 250))) for i in range(80)
    ]
    reqs.append(Request("big", 2.65, int(0.95 * KV_BLOCKS * BLOCK), 16))
    return reqs


class Placements:
    """Delegates to ``inner`` and records the view of the chosen instance for every placement."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.placed: dict[str, InstanceView] = {}

    def reset(self, num_instances: int, seed: int) -> None:
        self.inner.reset(num_instances, seed)

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        choice = self.inner.route(request, cluster)
        if choice != DELAY:
            self.placed[request.request_id] = cluster.instances[choice]
        return choice


def replay(name: str):
    cfg = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=KV_BLOCKS, block_size=BLOCK))
    router = Placements(get_router(name, RouterContext(num_instances=2, block_size=BLOCK)))
    res = simulate(trace(), router, cfg, LinearLatencyModel(), OraclePredictor(), seed=3)
    res.check_invariants()
    return res, router.placed


def test_hold_finishes_everything_with_fewer_preemptions_and_is_deterministic():
    (base, _), (held, placed) = replay("round_robin"), replay("round_robin+hold")
    assert base.preemptions.sum() > 0
    assert np.all(np.isfinite(held.e2e_s))
    assert np.array_equal(held.generated_tokens, held.output_tokens)
    assert held.request_ids[-1] == "big"
    big_view = placed["big"]
    assert (big_view.num_running, big_view.num_waiting) == (0, 0)  # started by the idle rule
    assert held.preemptions.sum() < base.preemptions.sum()
    assert np.array_equal(replay("round_robin+hold")[0].e2e_s, held.e2e_s)


# --- the memo ----------------------------------------------------------------------------------------


def test_memo_answers_exactly_as_startable_instances():
    """Against one frozen tuple of views (a decision tick), then a new one, for random prompt orders."""
    rng = np.random.default_rng(1)
    memo = AdmissionMemo(BLOCK, 0.1)
    for _ in range(60):
        views = cluster(
            *(
                inst(
                    i,
                    num_running=int(rng.integers(0, 3)),
                    kv_used_blocks=int(rng.integers(0, 1000)),
                    outstanding_prompt_tokens=int(rng.integers(0, 4000)),
                )
                for i in range(3)
            )
        )
        for prompt in rng.integers(1, 6000, size=12):
            expected = startable_instances(views, int(prompt), BLOCK, 0.1)
            got = memo.startable(views, int(prompt))
            assert got == (expected if any(expected) else None)


def test_memo_skips_the_checks_it_can_and_replays_identically(monkeypatch):
    """The +hold wrapper with the memo replays an overloaded trace exactly like the plain rule, with
    fewer rule evaluations than routing calls (larger held prompts in the same tick are refused)."""
    import training.routing.admission_rule as admission_rule

    class PlainHold:
        name = "plain_hold"

        def __init__(self) -> None:
            self.inner = get_router("round_robin", RouterContext(num_instances=2, block_size=BLOCK))

        def reset(self, num_instances: int, seed: int) -> None:
            self.inner.reset(num_instances, seed)

        def route(self, request: RequestView, cluster: ClusterView) -> int:
            ok = startable_instances(cluster, request.prompt_tokens, BLOCK, 0.1)
            if not any(ok):
                return DELAY
            views = tuple(
                v if s else replace(v, accepting=False) for v, s in zip(cluster.instances, ok, strict=True)
            )
            return self.inner.route(request, ClusterView(cluster.now_s, views, cluster.router_queue_len))

    cfg = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=KV_BLOCKS, block_size=BLOCK))
    rng = np.random.default_rng(5)
    overloaded = [
        Request(f"r{i}", 0.02 * i, int(rng.integers(50, 600)), int(rng.integers(50, 300))) for i in range(150)
    ]
    calls = {"rule": 0}
    original = admission_rule.startable_instances

    def counted(*args, **kw):
        calls["rule"] += 1
        return original(*args, **kw)

    ref = simulate(overloaded, PlainHold(), cfg, LinearLatencyModel(), OraclePredictor(), seed=0)
    monkeypatch.setattr(admission_rule, "startable_instances", counted)
    # ticking as before Hold (every held request offered at every tick): the memo's case
    memoised = CountingRouter(
        get_router("round_robin+hold", RouterContext(num_instances=2, block_size=BLOCK)), tick=True
    )
    res = simulate(overloaded, memoised, cfg, LinearLatencyModel(), OraclePredictor(), seed=0)
    assert np.array_equal(res.e2e_s, ref.e2e_s)
    assert np.array_equal(res.instance, ref.instance)
    assert res.router_wait_s.max() > 1.0  # the trace does hold requests over many ticks
    assert calls["rule"] < memoised.calls / 2
