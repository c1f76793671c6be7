"""The compiled observation kernel (``training.rl.kernel``, issue 16 fourth pass) equals its pure-Python
twin bit for bit: ``SnapshotBuilder.build`` + ``action_mask`` + ``encode_observation`` (themselves held
to the pre-issue-16 reference by ``test_observation.py``). Over a real overloaded replay, preempting
replays (simulator stats and the same entries as plain tuples), Hypothesis-drawn view sequences, NaN
lengths and whole env episodes (``RouterEnv(compiled=True)`` against ``compiled=False``). Speed is
measured by ``loadwise bench env``, never asserted here."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from collections.abc import Callable, Generator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.rl.test_observation import BATCH, BLOCK, RELIEF, _view_sequences, broken_length_decision
from training.impact.penalty import DEFAULT_ALPHA
from training.length.baselines import OraclePredictor
from training.rl.env import KERNEL_ENV_VAR, RouterEnv, use_kernel
from training.rl.kernel import QPLANES, REQ, CompiledObserver, _extends, _pairwise, supports
from training.rl.observation import DecisionState, SnapshotBuilder
from training.rl.policy_serving import ObsSpec, action_mask, encode_observation
from training.simulator.config import ClusterConfig, QueuePolicy
from training.simulator.engine import replay
from training.simulator.interface import (
    DELAY,
    BatchStats,
    ClusterView,
    RequestStats,
    RequestView,
)
from training.simulator.latency import LatencyModel, LinearLatencyModel
from training.simulator.profiles import PAPER_PROFILE, default_instance_config, load_latency_model
from training.workloads.episodes import EpisodeSampler
from training.workloads.synthetic import conversation_trace


class _Twins:
    """A ``CompiledObserver`` and a ``SnapshotBuilder`` of the same settings, fed the same decisions."""

    def __init__(self, spec: ObsSpec, lm: LatencyModel, batch: int = BATCH) -> None:
        self.spec = spec
        self.compiled = CompiledObserver(
            spec, lm, block_size=BLOCK, max_batch_size=batch, alpha=DEFAULT_ALPHA, progress_relief=RELIEF
        )
        self.python = SnapshotBuilder(
            spec, lm, block_size=BLOCK, max_batch_size=batch, progress_relief=RELIEF
        )

    def python_observe(
        self, rv: RequestView, cv: ClusterView
    ) -> tuple[DecisionState, np.ndarray, np.ndarray]:
        st = self.python.build(rv, cv)
        mask = action_mask(st.snapshot, self.spec)
        return st, mask, encode_observation(st.snapshot, self.spec, mask)

    def check(self, rv: RequestView, cv: ClusterView, *, bits: bool = True) -> DecisionState:
        """Both paths on one decision: every array equal byte for byte (``bits``) or NaN-aware equal."""
        got, want = self.compiled.observe(rv, cv), self.python_observe(rv, cv)
        (st, mask, obs), (st0, mask0, obs0) = got, want
        pairs = {
            "instances": (st.snapshot.instances, st0.snapshot.instances),
            "prefill_hist": (st.snapshot.prefill_hist, st0.snapshot.prefill_hist),
            "decode_hist": (st.snapshot.decode_hist, st0.snapshot.decode_hist),
            "in_system": (st.in_system, st0.in_system),
            "pending_weight": (st.pending_weight, st0.pending_weight),
            "mask": (mask, mask0),
            "obs": (obs, obs0),
        }
        for name, (a, b) in pairs.items():
            assert a.dtype == b.dtype, name
            assert a.shape == b.shape, name
            if bits:
                assert a.tobytes() == b.tobytes(), name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
        scalars = ("prompt_tokens", "predicted_output_tokens", "router_queue_len", "waited_s")
        assert [getattr(st.snapshot, f) for f in scalars] == [getattr(st0.snapshot, f) for f in scalars]
        p, p0 = st.snapshot.predicted_bucket_probs, st0.snapshot.predicted_bucket_probs
        assert (p is None) == (p0 is None)
        if p is not None:
            assert p0 is not None
            assert p.tobytes() == p0.tobytes()
        return st


def _round_robin(cv: ClusterView, pointer: int, m: int) -> int:
    ok = [v.index for v in cv.instances if v.accepting]
    return next((i % m for i in range(pointer, pointer + m) if i % m in ok), DELAY)


def _drive_round_robin(
    gen: Generator[tuple[RequestView, ClusterView], int, object],
    check: Callable[[RequestView, ClusterView], None],
) -> int:
    """Answer every decision of the replay ``gen`` round robin over 4 instances, after ``check``
    looked at it; return the number of decisions."""
    pointer = decisions = 0
    try:
        rv, cv = next(gen)
        while True:
            check(rv, cv)
            decisions += 1
            choice = _round_robin(cv, pointer, 4)
            pointer = (choice + 1) % 4 if choice != DELAY else pointer
            rv, cv = gen.send(choice)
    except StopIteration:
        pass
    return decisions


def test_every_decision_of_an_overloaded_replay_matches_the_python_path():
    """The bench's setting (20 req/s on 4 V100s: queues of ~100-200 requests, more than 128 per
    instance, so numpy's pairwise sum splits): three specs, with and without length buckets,
    admission control and DELAY."""
    lm = load_latency_model(PAPER_PROFILE)
    assert supports(lm)
    cluster = ClusterConfig(
        num_instances=4, instance=default_instance_config(PAPER_PROFILE), request_stats=True
    )
    specs = [
        ObsSpec(num_instances=4),
        ObsSpec(
            num_instances=4, predicted_bucket_edges=(100.0, 400.0), hold_kv_headroom=0.1, allow_delay=True
        ),
        ObsSpec(num_instances=4, prompt_edges=(64.0,), decode_edges=(50.0, 1000.0, 2000.0), queue_cap=8),
    ]
    twins = [_Twins(s, lm) for s in specs]
    gen = replay(conversation_trace(700, 20.0, 3), cluster, lm, OraclePredictor())
    longest = 0

    def check(rv: RequestView, cv: ClusterView) -> None:
        nonlocal longest
        for t in twins:
            t.check(rv, cv)
        longest = max(longest, *(len(v.request_stats or ()) for v in cv.instances))

    assert _drive_round_robin(gen, check) == 700
    assert longest > 128


@pytest.mark.parametrize("policy", [QueuePolicy.FCFS, QueuePolicy.LWL])
def test_preempting_replays_match_with_simulator_stats_and_with_plain_tuples(policy):
    """A small KV cache preempts (queue entries with generated tokens), LWL admits out of arrival order
    (the queue delta converts whole): the simulator's ``RequestStats`` and the very same entries as
    plain tuples both give the Python path's decision."""
    lm = load_latency_model(PAPER_PROFILE)
    icfg = dataclasses.replace(default_instance_config(PAPER_PROFILE), queue_policy=policy, kv_blocks=900)
    cluster = ClusterConfig(num_instances=3, instance=icfg, request_stats=True)
    spec = ObsSpec(num_instances=3)
    fast, plain = _Twins(spec, lm), _Twins(spec, lm)
    gen = replay(conversation_trace(400, 14.0, 5), cluster, lm, OraclePredictor())
    decisions = 0
    result = None
    try:
        rv, cv = next(gen)
        while True:
            assert all(isinstance(v.request_stats, RequestStats) for v in cv.instances)
            fast.check(rv, cv)
            tuples = tuple(
                dataclasses.replace(v, request_stats=tuple(v.request_stats or ())) for v in cv.instances
            )
            plain.check(rv, dataclasses.replace(cv, instances=tuples))
            decisions += 1
            rv, cv = gen.send(decisions % 3 if cv.instances[decisions % 3].accepting else DELAY)
    except StopIteration as done:
        result = done.value
    assert result is not None
    assert int(np.sum(result.preemptions)) > 0
    assert decisions >= 400


def test_small_buffers_grow_and_slide_and_match_the_python_path():
    """The observer's queue and batch buffers start at 2 rows and its change buffer at its minimum:
    an overloaded replay makes them slide (a queue's rows moved to the front) and grow (doubling)
    many times, several instances in one decision included; every decision still equals the Python
    path's."""
    lm = load_latency_model(PAPER_PROFILE)
    cluster = ClusterConfig(
        num_instances=4, instance=default_instance_config(PAPER_PROFILE), request_stats=True
    )
    twins = _Twins(ObsSpec(num_instances=4), lm)
    obs = twins.compiled
    obs.qbuf = np.zeros((QPLANES, 4, 2))
    obs.bbuf = np.zeros((4, 2, 4))
    obs.scratch = np.zeros(4)
    obs._set_upd(np.zeros(REQ + 1))
    gen = replay(conversation_trace(400, 20.0, 4), cluster, lm, OraclePredictor())
    assert _drive_round_robin(gen, twins.check) == 400
    assert obs.qbuf.shape[2] >= 64
    assert obs.bbuf.shape[1] >= 16


def test_an_error_mid_decision_leaves_the_observer_consistent():
    """A view without ``request_stats`` after instances already listed as changed raises (as the
    Python path does) and leaves no half-applied state: the following decisions, whose views the
    observer had partly seen, still equal the Python path's."""
    lm = load_latency_model(PAPER_PROFILE)
    cluster = ClusterConfig(
        num_instances=3, instance=default_instance_config(PAPER_PROFILE), request_stats=True
    )
    twins = _Twins(ObsSpec(num_instances=3), lm)
    gen = replay(conversation_trace(120, 12.0, 2), cluster, lm, OraclePredictor())
    decisions = broken = 0
    try:
        rv, cv = next(gen)
        while True:
            if decisions % 7 == 3:
                no_stats = dataclasses.replace(cv.instances[2], request_stats=None)
                bad = dataclasses.replace(cv, instances=(*cv.instances[:2], no_stats))
                with pytest.raises(ValueError, match="request_stats"):
                    twins.compiled.observe(rv, bad)
                with pytest.raises(ValueError, match="request_stats"):
                    twins.python_observe(rv, bad)
                broken += 1
            twins.check(rv, cv)
            decisions += 1
            rv, cv = gen.send(decisions % 3 if cv.instances[decisions % 3].accepting else DELAY)
    except StopIteration:
        pass
    assert broken >= 15


@settings(derandomize=True, max_examples=60, deadline=None)
@given(_view_sequences(), st.sampled_from([None, 0.2]), st.sampled_from([1, 4, BATCH]), st.booleans())
def test_view_sequences_match_the_python_path(seq, headroom, batch, buckets):
    """Views kept, replaced by equal ones, with queues appended to, renewed, batches advanced (the
    ``test_observation`` strategy), forwards then backwards; full batches (capacity wait) included."""
    lm = load_latency_model(PAPER_PROFILE)
    spec = ObsSpec(
        num_instances=3, hold_kv_headroom=headroom, predicted_bucket_edges=(80.0, 300.0) if buckets else None
    )
    twins = _Twins(spec, lm, batch=batch)
    for rv, cv in seq + seq[::-1]:
        twins.check(rv, cv)


def test_nan_and_infinite_lengths_match_the_python_path():
    """A NaN or infinite predicted length in plain entries propagates as in the Python path (NaN
    compared as NaN; its sign bit may differ); a NaN in the simulator's batch raises in both."""
    lm = load_latency_model(PAPER_PROFILE)
    rv, cv = broken_length_decision()
    twins = _Twins(ObsSpec(num_instances=3), lm)
    st = twins.check(rv, cv, bits=False)
    assert np.isnan(st.pending_weight[0])

    views = cv.instances
    batch = BatchStats(np.array([30]), np.array([float("nan")]), np.array([2.0]), np.array([True]))
    bad = dataclasses.replace(views[1], request_stats=RequestStats((), batch, 3))
    broken = ClusterView(0.0, (views[0], bad, views[2]))
    with pytest.raises(ValueError, match="NaN"):
        twins.compiled.observe(rv, broken)
    with pytest.raises(ValueError, match="NaN"):
        twins.python_observe(rv, broken)
    twins.check(rv, cv, bits=False)  # the observer recovers


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=40)
    | st.integers(0, 2000).map(lambda n: np.random.default_rng(n).random(n).tolist())
)
def test_the_pairwise_sum_is_numpys(values):
    a = np.array(values, dtype=np.float64)
    assert np.float64(_pairwise(a, len(a))).tobytes() == np.add.reduce(a).tobytes()


def _env(trace, compiled, **spec_kw):
    lm = load_latency_model(PAPER_PROFILE)
    cluster = ClusterConfig(num_instances=4, instance=default_instance_config(PAPER_PROFILE))
    sampler = EpisodeSampler(
        sample=lambda s: trace, cluster=cluster, latency_model=lm, predictor=OraclePredictor()
    )
    return RouterEnv(sampler, spec=ObsSpec(num_instances=4, **spec_kw), compiled=compiled)


@pytest.mark.parametrize("spec_kw", [{}, {"hold_kv_headroom": 0.1, "allow_delay": True}])
def test_env_episodes_are_the_same_on_both_paths(spec_kw):
    """Two episodes of each env (the observer's state carries over ``reset``), driven by an agent
    that reads the observation: observations, masks, rewards, infos and the results equal."""
    trace = conversation_trace(250, 16.0, 7)
    envs = [_env(trace, True, **spec_kw), _env(trace, False, **spec_kw)]
    assert [e.observation_path for e in envs] == ["compiled", "python"]
    for _ in range(2):
        first = [e.reset(options={"requests": trace}) for e in envs]
        assert first[0][0].tobytes() == first[1][0].tobytes()
        obs = first[0][0]
        done, steps = False, 0
        while not done:
            masks = [e.action_masks() for e in envs]
            assert masks[0].tobytes() == masks[1].tobytes()
            valid = np.flatnonzero(masks[0])
            action = int(valid[int(obs.sum() * 1000.0) % len(valid)])  # a function of the observation
            out = [e.step(action) for e in envs]
            (o0, r0, d0, t0, i0), (o1, r1, d1, t1, i1) = out
            assert o0.tobytes() == o1.tobytes()
            assert r0 == r1
            assert (d0, t0) == (d1, t1)
            assert i0 == i1
            obs, done, steps = o0, d0, steps + 1
        assert steps >= 250
        r0, r1 = (e.last_result for e in envs)
        assert r0 is not None
        assert r1 is not None
        np.testing.assert_array_equal(r0.e2e_s, r1.e2e_s)


def test_the_switch_and_the_fallback(monkeypatch):
    """``LOADWISE_RL_KERNEL=0`` (or ``compiled=False``) selects the Python path; an argument wins over
    the variable; a latency model that is not the linear one always runs the Python path."""
    monkeypatch.delenv(KERNEL_ENV_VAR, raising=False)
    assert use_kernel()
    assert use_kernel(True)
    assert not use_kernel(False)
    monkeypatch.setenv(KERNEL_ENV_VAR, "0")
    assert not use_kernel()
    assert use_kernel(True)
    trace = conversation_trace(20, 5.0, 1)
    assert _env(trace, None).observation_path == "python"
    monkeypatch.setenv(KERNEL_ENV_VAR, "1")
    assert _env(trace, None).observation_path == "compiled"

    class Scaled(LinearLatencyModel):
        def iteration_time(self, p: int, pp: float, d: int, c: int) -> float:
            return 2.0 * super().iteration_time(p, pp, d, c)

    assert not supports(Scaled())
    with pytest.raises(TypeError, match="LinearLatencyModel"):
        CompiledObserver(
            ObsSpec(num_instances=4),
            object(),  # type: ignore[arg-type]
            block_size=16,
            max_batch_size=8,
            alpha=0.5,
            progress_relief=0.5,
        )
    cluster = ClusterConfig(num_instances=4, instance=default_instance_config(PAPER_PROFILE))
    sampler = EpisodeSampler(
        sample=lambda s: trace, cluster=cluster, latency_model=Scaled(), predictor=OraclePredictor()
    )
    assert RouterEnv(sampler, compiled=True).observation_path == "python"


def test_serving_and_the_env_module_do_not_import_numba():
    """The served policy's pyfunc needs no numba (its requirements: mlflow-skinny, numpy, pandas), and
    importing the env (the CLI does) leaves it to the first env that uses the kernel."""
    code = (
        "import sys, training.rl.policy_serving, training.rl.env, training.rl.observation; "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_queue_delta_check_is_the_slice_comparison():
    """``_extends(q, seen, d, kept)`` is ``q[:kept] == seen[d:]`` for every queue ``q`` of up to 5
    entries over 4 values and every drop ``d`` from a 4-entry ``seen`` (the one-slice shortcuts
    included)."""
    seen = ((1, 1.0, 0, False), (2, 2.0, 0, False), (3, 3.0, 1, False), (4, 4.0, 0, False))
    checked = 0
    for n in range(1, 6):
        for picks in itertools.product(range(4), repeat=n):
            q = tuple(seen[i] for i in picks)
            for d in range(len(seen)):
                kept = len(seen) - d
                if kept <= len(q):
                    assert _extends(q, seen, d, kept) == (q[:kept] == seen[d:])
                    checked += 1
    assert checked > 1000
