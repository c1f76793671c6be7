"""``ReplayState.fork``: a copy of a replay in progress that replays bit-identically to the original
from the fork point, evolves independently, and can be given a different future (``future=``,
``lengths=``) for lookahead rollouts that must not read the truth.

The driver is a pure function of the two views (so the same decision gets the same answer in the
original and the copy), placing on the instance with the fewest requests and holding some requests
once (``DELAY``) so that forks also happen in the middle of a decision tick.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.routing.admission  # noqa: F401  (registers the +hold routers)
from training.length.baselines import OraclePredictor, TaskMeanPredictor
from training.routing.registry import RouterContext, get_router
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, simulate
from training.simulator.engine import ReplayState
from training.simulator.interface import DELAY, ClusterView, RequestView
from training.simulator.request import Request
from training.simulator.result import SimResult

BLOCK = 16
LIN = LinearLatencyModel()


def fewest(rv: RequestView, cv: ClusterView) -> int:
    if rv.waited_s == 0 and int(rv.request_id[1:]) % 3 == 0:
        return DELAY
    if not cv.accepting:
        return DELAY
    return min(cv.accepting, key=lambda i: (cv.instances[i].num_requests, i))


def other(rv: RequestView, cv: ClusterView) -> int:
    return max(cv.accepting, key=lambda i: (cv.instances[i].num_requests, i)) if cv.accepting else DELAY


def trace(n: int, seed: int, gap_s: float = 0.04) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    out = []
    for i in range(n):
        prefix = (int(rng.integers(3)), 5) if i % 4 == 0 else None
        task = ("a", "b")[i % 2]
        out.append(
            Request(f"r{i}", float(t[i]), int(rng.integers(20, 600)), int(rng.integers(1, 300)), task, prefix)
        )
    return out


def config(n: int = 3, kv_blocks: int = 160) -> ClusterConfig:
    inst = InstanceConfig(kv_blocks=kv_blocks, block_size=BLOCK, prefix_block_tokens=32)
    return ClusterConfig(num_instances=n, instance=inst)


def assert_same(a: SimResult, b: SimResult, series: bool = True) -> None:
    for name in (
        "arrival_s",
        "routed_s",
        "first_token_s",
        "finish_s",
        "preemptions",
        "instance",
        "generated_tokens",
    ):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.output_tokens, b.output_tokens)
    assert a.request_ids == b.request_ids
    assert (a.num_iterations, a.sim_time_s) == (b.num_iterations, b.sim_time_s)
    for sa, sb in zip(a.instance_series, b.instance_series, strict=True):
        for key in sa:
            assert not series or np.array_equal(sa[key], sb[key]), key


def to_decision(state: ReplayState, k: int, route=fewest) -> None:
    """Answer the first ``k`` decisions with ``route`` and advance to the next one (pending)."""
    for _ in range(k):
        decision = state.next_decision()
        if decision is None:
            return
        state.decide(route(*decision))
    state.next_decision()


def fork_and_finish(requests, cfg, k: int, fast_forward: bool = True, predictor=None):
    predictor = predictor or OraclePredictor()
    whole = ReplayState(requests, cfg, LIN, predictor, fast_forward).run(fewest)
    state = ReplayState(requests, cfg, LIN, predictor, fast_forward)
    to_decision(state, k)
    if state.done:  # fewer than k decisions in this replay
        return whole, state.result, state.result
    copy = state.fork()
    return whole, state.run(fewest), copy.run(fewest)


@pytest.mark.parametrize("k", [0, 1, 17, 60, 150])
@pytest.mark.parametrize("fast_forward", [True, False])
def test_a_fork_replays_identically_to_the_original(k, fast_forward):
    whole, original, copy = fork_and_finish(trace(80, 0), config(), k, fast_forward)
    whole.check_invariants()
    assert_same(whole, original)
    assert_same(whole, copy)


def test_simulate_and_the_state_are_the_same_replay():
    reqs = trace(60, 1)
    router = get_router("least_tokens+hold", RouterContext(num_instances=3, block_size=BLOCK))
    a = simulate(reqs, router, config(), LIN, TaskMeanPredictor.fit(reqs), seed=3)
    router.reset(3, 3)
    b = ReplayState(reqs, config(), LIN, TaskMeanPredictor.fit(reqs)).run(router.route)
    assert_same(a, b)


def test_forks_under_admission_control_mid_tick_and_asleep():
    """Forks at every decision of a held-heavy replay (ticks, sleeps, wake-ups) finish identically."""
    reqs = trace(40, 2, gap_s=0.01)
    cfg = config(n=2, kv_blocks=96)

    def router():
        r = get_router("round_robin+hold", RouterContext(num_instances=2, block_size=BLOCK))
        r.reset(2, 0)
        return r

    whole = ReplayState(reqs, cfg, LIN, OraclePredictor()).run(router().route)
    state = ReplayState(reqs, cfg, LIN, OraclePredictor())
    live = router()
    forks = []
    while (decision := state.next_decision()) is not None:
        if len(forks) < 12 and state.decisions % 5 == 0:
            forks.append((state.fork(), _copy_router(live)))
        state.decide(live.route(*decision))
    assert_same(whole, state.result)
    assert len(forks) == 12
    for copy, r in forks:
        assert_same(whole, copy.run(r.route))


def _copy_router(r):
    import copy

    return copy.deepcopy(r)


def test_a_fork_and_its_original_evolve_independently():
    reqs = trace(70, 3)
    whole = ReplayState(reqs, config(), LIN, OraclePredictor()).run(fewest)
    state = ReplayState(reqs, config(), LIN, OraclePredictor())
    to_decision(state, 30)
    first = state.fork()
    second = state.fork()
    different = first.run(other)  # the copy goes another way, to the end
    assert not np.array_equal(different.instance, whole.instance)
    assert_same(whole, state.run(fewest))  # the original did not notice
    assert_same(whole, second.run(fewest))  # nor did a sibling copy
    with pytest.raises(RuntimeError, match="finished"):
        state.fork()


def test_the_true_future_given_explicitly_is_the_same_replay():
    """fork(future=the requests not yet arrived, lengths=the true lengths) changes nothing: the
    replacement mechanism is exact, so a rollout's only difference is what it samples."""
    reqs = trace(70, 4)  # in arrival order: the not-yet-arrived are a tail
    state = ReplayState(reqs, config(), LIN, OraclePredictor())
    to_decision(state, 40)
    arrived = {rid for rid, _ in state.unfinished()}
    tail = [r for r in reqs if r.arrival_s > state.now_s]
    truth = {r.request_id: r.output_tokens for r in reqs if r.request_id in arrived}
    copy = state.fork(future=tail, lengths=truth)
    assert_same(state.run(fewest), copy.run(fewest))


def test_sampled_lengths_and_future_replace_the_truth_in_the_copy_only():
    reqs = trace(70, 5)
    state = ReplayState(reqs, config(), LIN, OraclePredictor())
    to_decision(state, 40)
    now = state.now_s
    unfinished = state.unfinished()
    assert unfinished
    sampled = {rid: g + 1 for rid, g in unfinished}  # every unfinished request ends at its next token
    future = [Request("s0", now + 0.5, 100, 7), Request("s1", now + 0.5, 50, 3, "b")]
    copy = state.fork(future=future, lengths=sampled)
    res = copy.run(fewest)
    res.check_invariants()
    arrived = [r.request_id for r in reqs if r.arrival_s <= now]
    assert res.request_ids == [*arrived, "s0", "s1"]  # the true future is gone, the sampled one is last
    got = dict(zip(res.request_ids, res.generated_tokens.tolist(), strict=True))
    assert all(got[rid] == n for rid, n in sampled.items())
    assert (got["s0"], got["s1"]) == (7, 3)
    whole = ReplayState(reqs, config(), LIN, OraclePredictor()).run(fewest)
    assert_same(whole, state.run(fewest))  # the original kept the truth


def test_a_shorter_length_cuts_a_decode_stretch():
    """Mid-stretch, a request given a length ending at its next token finishes at the boundary in
    progress, as it would step by step."""
    reqs = [Request("r1", 0.0, 32, 200), Request("r2", 0.0, 32, 200), Request("r4", 0.3, 16, 5)]
    results = []
    for ff in (True, False):
        state = ReplayState(reqs, config(n=1), LIN, OraclePredictor(), fast_forward=ff)
        to_decision(state, 2)  # r1 and r2 placed; r4's arrival is pending, mid-stretch
        rid, g = state.unfinished()[0]
        assert rid == "r1"
        assert g > 1
        results.append(state.fork(lengths={"r1": g + 1}).run(fewest))
    assert_same(*results, series=False)  # step by step samples every iteration, fast-forward a stretch
    assert results[0].generated_tokens[0] == results[0].output_tokens[0]
    assert results[0].finish_s[0] < results[0].finish_s[1]


def test_bad_replacements_are_refused():
    reqs = trace(40, 6)
    state = ReplayState(reqs, config(), LIN, OraclePredictor())
    arrived = 0
    while arrived == len(state.unfinished()):  # until some request has finished
        to_decision(state, 1)
        arrived = sum(r.arrival_s <= state.now_s for r in reqs)
    rid, g = state.unfinished()[0]
    finished = next(r.request_id for r in reqs[:arrived] if r.request_id not in dict(state.unfinished()))
    with pytest.raises(ValueError, match="at least"):
        state.fork(lengths={rid: g})
    with pytest.raises(ValueError, match="not in this replay"):
        state.fork(lengths={"nope": 3})
    with pytest.raises(ValueError, match="has finished"):
        state.fork(lengths={finished: 3})
    with pytest.raises(ValueError, match="KV blocks"):
        state.fork(lengths={rid: 10**6})
    with pytest.raises(ValueError, match="before the fork point"):
        state.fork(future=[Request("x", state.now_s - 1.0, 10, 1)])
    with pytest.raises(ValueError, match="already in the replay"):
        state.fork(future=[Request(rid, state.now_s + 1.0, 10, 1)])
    whole = ReplayState(reqs, config(), LIN, OraclePredictor()).run(fewest)
    assert_same(whole, state.run(fewest))  # refused forks changed nothing


def test_the_replay_generator_is_the_state_driven_step_by_step():
    from training.simulator import replay

    reqs = trace(50, 7)
    gen = replay(reqs, config(), LIN, OraclePredictor())
    try:
        decision = next(gen)
        while True:
            decision = gen.send(fewest(*decision))
    except StopIteration as done:
        assert_same(done.value, ReplayState(reqs, config(), LIN, OraclePredictor()).run(fewest))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 50),
    k=st.integers(0, 80),
    instances=st.integers(1, 3),
    kv_blocks=st.sampled_from([64, 96, 400]),
    fast_forward=st.booleans(),
)
def test_fork_at_any_decision_is_exact(seed, n, k, instances, kv_blocks, fast_forward):
    whole, original, copy = fork_and_finish(trace(n, seed), config(instances, kv_blocks), k, fast_forward)
    assert_same(whole, original)
    assert_same(whole, copy)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 120),
    k=st.integers(0, 300),
    instances=st.integers(1, 4),
    kv_blocks=st.sampled_from([64, 96, 400]),
    fast_forward=st.booleans(),
)
def test_fork_at_any_decision_is_exact_long(seed, n, k, instances, kv_blocks, fast_forward):
    whole, _, copy = fork_and_finish(trace(n, seed), config(instances, kv_blocks), k, fast_forward)
    assert_same(whole, copy)
