"""The lookahead teacher (issue 17): it never reads the trace's true future or true output lengths,
it is seeded, and its forks leave the replay it drives alone.

Small traces on the linear latency model, a predictor that gives bucket probabilities by task (so the
teacher's length sampling from buckets is exercised) and reads nothing of the true lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from training.routing.lookahead import (
    LOOKAHEAD_OPTION,
    LookaheadParams,
    LookaheadRouter,
    LookaheadTeacher,
    SampledLengths,
    drive_teacher,
    simulate_with_lookahead,
)
from training.routing.registry import RouterContext, get_entry, get_router, router_names
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel
from training.simulator.engine import ReplayState
from training.simulator.interface import LengthPrediction
from training.simulator.request import Request
from training.simulator.result import SimResult

LIN = LinearLatencyModel()
EDGES = (64.0, 256.0)
PROBS = {"a": (0.6, 0.3, 0.1), "b": (0.1, 0.3, 0.6)}


class BucketsByTask:
    """Bucket probabilities and an expected length by task only: blind to the true lengths."""

    name = "buckets_by_task"
    is_oracle = False

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        probs = np.array([PROBS[r.task] for r in requests], dtype=np.float64).reshape(len(requests), 3)
        expected = probs @ np.array([40.0, 160.0, 400.0])
        return LengthPrediction(expected, probs, EDGES)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens


def trace(n: int, seed: int, gap_s: float = 0.05) -> list[Request]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    return [
        Request(f"r{i}", float(t[i]), int(rng.integers(20, 400)), int(rng.integers(1, 400)), "ab"[i % 2])
        for i in range(n)
    ]


def config(n: int = 3) -> ClusterConfig:
    return ClusterConfig(num_instances=n, instance=InstanceConfig(kv_blocks=200, block_size=16))


CTX = RouterContext(num_instances=3, latency_model=LIN)
PARAMS = LookaheadParams(samples=2, horizon_s=1.0, seed=5)
CHEAP = replace(PARAMS, stop_at_horizon=True, horizon_s=4.0)
BOTH = pytest.mark.parametrize("params", [PARAMS, CHEAP], ids=["drain", "stop_at_horizon"])


def teach(reqs: list[Request], params: LookaheadParams = PARAMS, cfg: ClusterConfig | None = None):
    return simulate_with_lookahead(reqs, cfg or config(), LIN, BucketsByTask(), CTX, params)


def same(a: SimResult, b: SimResult) -> None:
    for name in ("arrival_s", "routed_s", "first_token_s", "finish_s", "instance", "preemptions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.request_ids == b.request_ids


def other_truth(reqs: list[Request], cut_s: float) -> list[Request]:
    """The same requests up to ``cut_s`` but longer true outputs for every request that has arrived,
    and a different future (other arrival times, prompts and lengths) after it."""
    seen = [replace(r, output_tokens=r.output_tokens + 300) for r in reqs if r.arrival_s < cut_s]
    rng = np.random.default_rng(99)
    later = [
        Request(f"x{i}", cut_s + 0.01 + 0.2 * i, int(rng.integers(20, 400)), int(rng.integers(1, 400)), "b")
        for i in range(15)
    ]
    return seen + later


@pytest.mark.parametrize(
    "params",
    [PARAMS, CHEAP, replace(CHEAP, conservative=True, z=0.0)],
    ids=["drain", "stop_at_horizon", "conservative"],
)
def test_the_teacher_never_reads_true_lengths_or_the_true_future(monkeypatch, params: LookaheadParams):
    """Two traces identical up to ``cut_s`` as a router knows them (same arrivals, prompts, tasks, same
    tokens streamed so far) but with other true lengths of the unfinished requests and another future:
    the teacher decides identically up to ``cut_s``. A teacher whose forks keep the truth does not
    (the same check with ``fork`` ignoring its ``future`` / ``lengths``; for the cheap teacher, whose
    score needs its sampled arrivals in the fork, ignoring ``lengths``), so the check can fail. The
    conservative teacher runs with ``z = 0``, so that it deviates from its base often."""
    reqs = trace(40, 0)
    a = teach(reqs, params)
    # a router sees a request finish: the traces agree as a router knows them only until the first one
    cut_s = min(reqs[25].arrival_s + 1e-6, float(np.min(a.result.finish_s)))
    b = teach(other_truth(reqs, cut_s), params)

    def before(run) -> list[int]:
        return [c for c, t in zip(run.choices, run.decision_s, strict=True) if t < cut_s]

    assert len(before(a)) >= 15
    assert before(a) == before(b)[: len(before(a))]
    assert len(before(a)) == len(before(b))

    real_fork = ReplayState.fork

    def fork_with_the_truth(self, future=None, lengths=None):
        return real_fork(self, future=future) if params.stop_at_horizon else real_fork(self)

    monkeypatch.setattr(ReplayState, "fork", fork_with_the_truth)
    assert before(teach(reqs, params)) != before(teach(other_truth(reqs, cut_s), params))


@BOTH
def test_the_teacher_is_seeded_and_reproducible(params: LookaheadParams):
    reqs = trace(40, 1)
    a, b = teach(reqs, params), teach(reqs, params)
    assert a.choices == b.choices
    same(a.result, b.result)
    assert a.rollouts == b.rollouts > 0
    assert teach(reqs, replace(params, seed=6)).choices != a.choices  # the seed matters


@BOTH
def test_the_replay_equals_replaying_the_teachers_choices(params: LookaheadParams):
    """The forks never touch the replay the teacher drives: replaying its recorded answers without
    any fork gives the same result, bit for bit."""
    reqs = trace(40, 2)
    run = teach(reqs, params)
    state = ReplayState(reqs, config(), LIN, BucketsByTask())
    answers = iter(run.choices)
    while state.next_decision() is not None:
        state.decide(next(answers))
    assert next(answers, None) is None
    same(run.result, state.result)
    run.result.check_invariants()


@BOTH
def test_admission_mode_tries_delay_and_finishes(params: LookaheadParams):
    reqs = trace(15, 3, gap_s=0.01)
    params = replace(params, admission=True, base="workload_impact_greedy+hold", samples=1, horizon_s=1.0)
    run = teach(reqs, params, ClusterConfig(num_instances=3, instance=InstanceConfig(kv_blocks=60)))
    run.result.check_invariants()
    assert run.result.num_requests == 15
    assert -1 in run.choices  # DELAY was tried and chosen at least once


@pytest.mark.parametrize(
    ("guard", "limit"),
    [("max_wait_s", 0.0), ("max_wait_s", 0.05), ("protect_tokens", 0.0), ("protect_tokens", 150.0)],
)
def test_the_tail_guards_never_delay_a_guarded_request(guard: str, limit: float):
    """With ``max_wait_s`` the teacher delays only requests that have waited less at the router, with
    ``protect_tokens`` only those predicted shorter; at 0 it never delays. The same trace without a
    guard does delay (so the guard is what stops it)."""
    reqs = trace(15, 3, gap_s=0.01)
    cfg = ClusterConfig(num_instances=3, instance=InstanceConfig(kv_blocks=60))
    params = replace(CHEAP, admission=True, base="workload_impact_greedy+hold", samples=1, horizon_s=1.0)
    assert -1 in teach(reqs, params, cfg).choices
    seen: list[tuple[float, int]] = []

    class Recording(LookaheadTeacher):
        def decide(self, state, rv, cv):  # type: ignore[no-untyped-def]
            choice = super().decide(state, rv, cv)
            value = rv.waited_s if guard == "max_wait_s" else rv.predicted_output_tokens
            seen.append((value, choice if isinstance(choice, int) else -1))
            return choice

    guarded = replace(params, **{guard: limit})
    run = drive_teacher(reqs, cfg, LIN, Recording(guarded, CTX, SampledLengths(BucketsByTask())))
    run.result.check_invariants()
    assert run.result.num_requests == 15
    assert seen
    assert all(choice >= 0 for value, choice in seen if value >= limit)
    assert any(value >= limit for value, _ in seen)  # the guard was tested on guarded requests
    if limit == 0:
        assert -1 not in run.choices
    with pytest.raises(ValueError, match=guard):
        replace(params, **{guard: -1.0})


def test_the_registry_entry_is_teacher_only():
    assert "lookahead" not in router_names()  # not in --routers all nor the contract suite
    assert "lookahead" in router_names(include_configured=True)
    assert get_entry("lookahead").required_options == ("lookahead",)
    router = get_router(
        "lookahead", RouterContext(3, LIN, options={LOOKAHEAD_OPTION: {"samples": 1, "horizon_s": 0.5}})
    )
    assert isinstance(router, LookaheadRouter)
    assert router.params.samples == 1
    reqs = trace(12, 4)
    run = router.simulate(reqs, config(), LIN, BucketsByTask())
    assert run.result.num_requests == 12
    with pytest.raises(RuntimeError, match="needs the replay state"):
        router.route(None, None)  # type: ignore[arg-type]


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="samples"):
        LookaheadParams(samples=0)
    with pytest.raises(ValueError, match="horizon_s"):
        LookaheadParams(horizon_s=float("inf"))


@pytest.mark.parametrize("log_uniform", [False, True])
def test_sampled_lengths_exceed_what_was_streamed_and_fit(log_uniform):
    """Lengths drawn for an unfinished request are longer than the tokens it has streamed, at most
    what fits an instance, and follow the buckets (uniform or log-uniform inside one)."""
    from training.routing.lookahead import Known, _sample_length

    k = Known("r0", 0.0, 50, "a", None, None, None, 100.0, (0.5, 0.5, 0.0), EDGES)
    rng = np.random.default_rng(0)
    fresh = [_sample_length(k, 0, rng, 10_000, log_uniform) for _ in range(400)]
    assert min(fresh) >= 1
    assert max(fresh) <= 256  # the open bucket has no mass
    assert 0.3 < np.mean(np.array(fresh) <= 64) < 0.7
    streamed = [_sample_length(k, 100, rng, 10_000, log_uniform) for _ in range(200)]
    assert min(streamed) >= 101
    assert max(streamed) <= 256
    assert all(_sample_length(k, 100, rng, 120, log_uniform) <= 120 for _ in range(50))


def test_progress_reports_what_the_replay_gives_and_changes_nothing():
    """``ReplayState.progress`` mid-replay: finished requests carry the finish time the result gives,
    unfinished ones NaN, requests not arrived yet -1; calling it at every decision leaves the replay
    bit-identical to one that never calls it."""
    from training.simulator.request import RequestStatus

    reqs = trace(40, 7, gap_s=0.3)
    router = get_router("workload_impact_greedy", CTX)
    router.reset(3, 0)
    plain = ReplayState(reqs, config(), LIN, BucketsByTask()).run(router.route)
    router.reset(3, 0)
    state = ReplayState(reqs, config(), LIN, BucketsByTask())
    ids = [r.request_id for r in reqs]
    seen: list[list[tuple[float, int, int, int]]] = []
    while (decision := state.next_decision()) is not None:
        seen.append(state.progress(ids))
        state.decide(router.route(*decision))
    same(plain, state.result)
    fin = int(RequestStatus.FINISHED)
    mid = next(x for x in seen if any(p[1] == fin for p in x) and any(p[1] == -1 for p in x))
    for i, (finish, status, inst, generated) in enumerate(mid):
        if status == fin:
            assert finish == plain.finish_s[i]
            assert inst == plain.instance[i]
            assert generated == plain.output_tokens[i]
        else:
            assert np.isnan(finish)
            assert generated < reqs[i].output_tokens


def test_backlog_estimate_by_hand():
    """``backlog_e2e`` on one instance of the linear model (0.02 s + 3.3e-5 s per decode context
    token... here per-sequence 0.01 s, prefill 0.001 s per token), KV for two requests at a time:
    two running requests with 10 and 30 tokens left hold the slots; the queued one starts when the
    first ends (iteration 10), prefills and decodes 5 tokens; a finished request counts its E2E; a
    request held at the router goes to the slot that frees first."""
    from training.routing.lookahead import backlog_e2e
    from training.simulator.request import RequestStatus as S

    lm = LinearLatencyModel(
        base_s=0.02,
        grad1_s_per_prefill_token=0.001,
        grad2_s_per_decode_context_token=0.0,
        per_decode_seq_s=0.01,
    )
    cfg = ClusterConfig(num_instances=1, instance=InstanceConfig(kv_blocks=25, block_size=16))  # 400 tokens
    progress = [
        (7.0, int(S.FINISHED), 0, 50),
        (float("nan"), int(S.DECODING), 0, 40),
        (float("nan"), int(S.DECODING), 0, 10),
        (float("nan"), int(S.WAITING_AT_INSTANCE), 0, 0),
        (float("nan"), int(S.QUEUED_AT_ROUTER), -1, 0),
    ]
    arrival = [1.0, 2.0, 3.0, 4.0, 5.0]
    prompt = [100, 100, 100, 100, 100]
    output = [50, 50, 40, 5, 20]
    e2e = backlog_e2e(progress, 10.0, arrival, prompt, output, cfg, lm)
    # footprint: mean of 100 + (gen + out) / 2 over the open ones = (145 + 125 + 102.5 + 110) / 4
    # = 120.6 tokens -> 3 slots fit 400 tokens, but the batch is also at most len(running) = 2 or
    # more: c = 3; tau = 0.02 + 3 * 0.01 = 0.05 s. Slots: 10, 30, 0 -> the queued one takes slot 0
    # (start 0, ends 0 + 1 + 5 = 6), the held one then takes it too (start 6, ends 6 + 1 + 20 = 27).
    tau = 0.05
    pre = 0.001 * 100
    assert e2e[0] == pytest.approx(6.0)
    assert e2e[1] == pytest.approx(8.0 + 10 * tau + 2 * pre)  # both prefills start before iteration 10
    assert e2e[2] == pytest.approx(7.0 + 30 * tau + 2 * pre)
    assert e2e[3] == pytest.approx(6.0 + 6 * tau + pre)
    assert e2e[4] == pytest.approx(5.0 + 27 * tau + 2 * pre)


def test_compare_replays_the_teacher_through_its_simulate():
    """``eval.harness.replay_job`` runs a router that has ``simulate`` through it (with the replay's
    seed), and ``run_evaluation`` gives ``lookahead`` its default settings when asked by name."""
    from eval.harness import ReplayJob, _with_default_options, replay_job
    from training.routing.lookahead import COMPARE_PARAMS

    assert _with_default_options(["round_robin"], None) == {}
    assert _with_default_options(["lookahead"], {"x": 1}) == {"x": 1, LOOKAHEAD_OPTION: COMPARE_PARAMS}
    reqs = trace(20, 8)
    ctx = RouterContext(3, LIN, options={LOOKAHEAD_OPTION: CHEAP})
    out = replay_job(ReplayJob("lookahead", 3, reqs, config(), LIN, BucketsByTask(), ctx, False))
    direct = simulate_with_lookahead(reqs, config(), LIN, BucketsByTask(), ctx, replace(CHEAP, seed=3))
    assert np.array_equal(out["e2e_s"], direct.result.e2e_s)
    assert np.array_equal(out["instance"], direct.result.instance)
