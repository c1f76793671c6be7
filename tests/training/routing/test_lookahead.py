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


def test_the_teacher_never_reads_true_lengths_or_the_true_future(monkeypatch):
    """Two traces identical up to ``cut_s`` as a router knows them (same arrivals, prompts, tasks, same
    tokens streamed so far) but with other true lengths of the unfinished requests and another future:
    the teacher decides identically up to ``cut_s``. A teacher whose forks keep the truth does not
    (the same check with ``fork`` ignoring its ``future`` / ``lengths``), so the check can fail."""
    reqs = trace(40, 0)
    cut_s = reqs[25].arrival_s + 1e-6
    a, b = teach(reqs), teach(other_truth(reqs, cut_s))

    def before(run) -> list[int]:  # type: ignore[no-untyped-def]
        return [c for c, t in zip(run.choices, run.decision_s, strict=True) if t < cut_s]

    assert len(before(a)) >= 26
    assert before(a) == before(b)[: len(before(a))]
    assert len(before(a)) == len(before(b))

    real_fork = ReplayState.fork

    def fork_with_the_truth(self, future=None, lengths=None):  # type: ignore[no-untyped-def]
        return real_fork(self)

    monkeypatch.setattr(ReplayState, "fork", fork_with_the_truth)
    assert before(teach(reqs)) != before(teach(other_truth(reqs, cut_s)))


def test_the_teacher_is_seeded_and_reproducible():
    reqs = trace(40, 1)
    a, b = teach(reqs), teach(reqs)
    assert a.choices == b.choices
    same(a.result, b.result)
    assert a.rollouts == b.rollouts > 0


def test_the_replay_equals_replaying_the_teachers_choices():
    """The forks never touch the replay the teacher drives: replaying its recorded answers without
    any fork gives the same result, bit for bit."""
    reqs = trace(40, 2)
    run = teach(reqs)
    state = ReplayState(reqs, config(), LIN, BucketsByTask())
    answers = iter(run.choices)
    while state.next_decision() is not None:
        state.decide(next(answers))
    assert next(answers, None) is None
    same(run.result, state.result)
    run.result.check_invariants()


def test_admission_mode_tries_delay_and_finishes():
    reqs = trace(15, 3, gap_s=0.01)
    params = replace(PARAMS, admission=True, base="workload_impact_greedy+hold", samples=1, horizon_s=0.3)
    run = teach(reqs, params, ClusterConfig(num_instances=3, instance=InstanceConfig(kv_blocks=60)))
    run.result.check_invariants()
    assert run.result.num_requests == 15
    assert -1 in run.choices  # DELAY was tried and chosen at least once


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
