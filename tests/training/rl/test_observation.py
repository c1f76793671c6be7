"""The fast snapshot builder and encoder (issue 16) equal, bit for bit, the per-instance reference they
replaced: over a real overloaded replay (one builder across the episode, so its per-part cache is
exercised as the env exercises it) and over Hypothesis-drawn sequences of views that reuse, extend,
shrink and reorder each instance's per-request stats. The reference below is the code before issue 16
(``git show d0206df:training/rl/observation.py`` and that commit's
``policy_serving.encode_observation``), kept here
as the specification. Speed is measured by ``loadwise bench env``, never asserted here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.impact.penalty import mixing_penalty_s
from training.length.baselines import OraclePredictor
from training.rl.observation import SnapshotBuilder
from training.rl.policy_serving import (
    INSTANCE_FIELDS,
    TIME_SCALE_S,
    ObsSpec,
    RouterSnapshot,
    action_mask,
    encode_observation,
    length_bucket_probs,
)
from training.routing.estimates import decode_step_s, prefill_s
from training.routing.latency_aware import MinMin
from training.routing.registry import RouterContext
from training.simulator.config import ClusterConfig, QueuePolicy
from training.simulator.engine import replay
from training.simulator.interface import DELAY, ClusterView, InstanceView, RequestStats, RequestView
from training.simulator.latency import LatencyModel
from training.simulator.profiles import PAPER_PROFILE, default_instance_config, load_latency_model
from training.workloads.synthetic import conversation_trace

BLOCK, BATCH, RELIEF = 16, 256, 0.5


# ---------------------------------------------------------------------- the reference (before issue 16)
def reference_build(
    spec: ObsSpec, lm: LatencyModel, request: RequestView, cluster: ClusterView, batch: int = BATCH
) -> tuple[RouterSnapshot, np.ndarray, np.ndarray]:
    """(snapshot, in_system, pending_weight): one instance at a time, as before issue 16."""
    BATCH = batch
    minmin = MinMin(
        RouterContext(
            num_instances=spec.num_instances, latency_model=lm, block_size=BLOCK, max_batch_size=BATCH
        )
    )
    pedges = np.asarray(spec.prompt_edges, dtype=np.float64)
    dedges = np.asarray(spec.decode_edges, dtype=np.float64)
    bp, bd = spec.n_prompt_buckets, spec.n_decode_buckets
    m = spec.num_instances
    inst = np.zeros((m, len(INSTANCE_FIELDS)))
    hists = np.zeros((m, 2 * bp * bd))
    weights = np.zeros(m)
    in_system = np.zeros(m, dtype=np.int64)
    for k, v in enumerate(cluster.instances):
        stats = v.request_stats
        hist = np.zeros(2 * bp * bd)
        earliest = weight = 0.0
        if stats:
            arr = np.asarray(stats, dtype=np.float64)
            prompt, pred, gen, dec = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            a = np.searchsorted(pedges, prompt, side="right")
            b = np.searchsorted(dedges, pred, side="right")
            idx = (dec > 0.5).astype(np.int64) * (bp * bd) + a * bd + b
            hist = np.bincount(idx, minlength=2 * bp * bd).astype(np.float64)
            progress = np.minimum(gen / np.maximum(pred, 1.0), 1.0)
            weight = float(len(stats) - RELIEF * progress.sum())
            remaining = np.maximum(pred - gen, 1.0)
            n = min(v.num_running, BATCH) or 1
            step = decode_step_s(lm, n, float(v.kv_used_blocks * BLOCK))
            if (dec > 0.5).any():
                earliest = float(remaining[dec > 0.5].min()) * step
            else:
                earliest = prefill_s(lm, v.outstanding_prompt_tokens) + float(remaining.min()) * step
        inst[k] = [
            1.0 if v.accepting else 0.0,
            float(v.num_running),
            float(v.num_waiting),
            float(v.kv_used_blocks),
            float(v.kv_total_blocks),
            float(v.outstanding_prompt_tokens),
            float(v.outstanding_decode_tokens),
            earliest,
            minmin.completion_s(request, v),
            mixing_penalty_s(request, v, lm, block_size=BLOCK, max_batch_size=BATCH),
        ]
        hists[k] = hist
        weights[k] = weight
        in_system[k] = v.num_running + v.num_waiting
    snap = RouterSnapshot(
        prompt_tokens=float(request.prompt_tokens),
        predicted_output_tokens=float(request.predicted_output_tokens),
        router_queue_len=float(cluster.router_queue_len),
        waited_s=float(request.waited_s),
        instances=inst,
        prefill_hist=hists[:, : bp * bd].reshape(m, bp, bd),
        decode_hist=hists[:, bp * bd :].reshape(m, bp, bd),
        predicted_bucket_probs=length_bucket_probs(
            spec,
            float(request.predicted_output_tokens),
            request.predicted_bucket_probs,
            request.predicted_bucket_edges,
        ),
    )
    return snap, in_system, weights


def _squash(x, scale):
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0) / scale)


def reference_encode(snap: RouterSnapshot, spec: ObsSpec) -> np.ndarray:
    """``encode_observation`` before issue 16: one numpy call per feature."""
    m = spec.num_instances
    mask = action_mask(snap, spec).astype(np.float64)
    pb = int(np.searchsorted(spec.prompt_edges, snap.prompt_tokens, side="right"))
    db = int(np.searchsorted(spec.decode_edges, snap.predicted_output_tokens, side="right"))
    req = np.zeros(spec.n_prompt_buckets + spec.n_decode_buckets + 4)
    req[pb] = 1.0
    req[spec.n_prompt_buckets + db] = 1.0
    req[-4] = _squash(snap.prompt_tokens, 256.0)
    req[-3] = _squash(snap.predicted_output_tokens, 256.0)
    req[-2] = min(snap.router_queue_len, spec.queue_cap) / spec.queue_cap
    req[-1] = min(snap.waited_s, spec.max_delay_s) / spec.max_delay_s if spec.max_delay_s > 0 else 0.0
    if spec.n_length_buckets:
        probs = snap.predicted_bucket_probs
        if probs is None:
            probs = length_bucket_probs(spec, snap.predicted_output_tokens)
        req = np.concatenate([req, np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)])
    inst = snap.instances
    usage = np.clip(inst[:, 3] / np.maximum(inst[:, 4], 1.0), 0.0, 1.0)
    comp, pen = inst[:, 8], inst[:, 9]
    acc = inst[:, 0] > 0.5
    best_comp = comp[acc].min() if acc.any() else comp.min()
    best_pen = pen[acc].min() if acc.any() else pen.min()
    per = np.column_stack(
        [
            _squash(inst[:, 1], 16.0),
            _squash(inst[:, 2], 16.0),
            usage,
            1.0 - usage,
            _squash(inst[:, 5], 1024.0),
            _squash(inst[:, 6], 4096.0),
            _squash(inst[:, 7], 1.0),
            _squash(comp, 10.0),
            _squash(pen, 10.0),
            (comp - best_comp) / TIME_SCALE_S,
            (pen - best_pen) / TIME_SCALE_S,
            _squash(snap.prefill_hist.reshape(m, -1), 4.0),
            _squash(snap.decode_hist.reshape(m, -1), 8.0),
        ]
    )
    out = np.concatenate([mask, req, per.ravel()])
    return np.clip(out, 0.0, 10.0).astype(np.float32)


# ---------------------------------------------------------------------- comparison
def assert_same(builder: SnapshotBuilder, lm: LatencyModel, rv: RequestView, cv: ClusterView) -> None:
    spec = builder.spec
    got = builder.build(rv, cv)
    snap, in_system, weights = reference_build(spec, lm, rv, cv, builder.max_batch)
    for name in ("instances", "prefill_hist", "decode_hist"):
        np.testing.assert_array_equal(getattr(got.snapshot, name), getattr(snap, name), err_msg=name)
    scalars = ("prompt_tokens", "predicted_output_tokens", "router_queue_len", "waited_s")
    assert [getattr(got.snapshot, f) for f in scalars] == [getattr(snap, f) for f in scalars]
    np.testing.assert_array_equal(got.in_system, in_system)
    np.testing.assert_array_equal(got.pending_weight, weights)
    obs = encode_observation(got.snapshot, spec)
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs, reference_encode(snap, spec))


def _builder(
    spec: ObsSpec, lm: LatencyModel, small_part: int | None = None, batch: int = BATCH
) -> SnapshotBuilder:
    """The env's builder; ``small_part`` (runs of stats converted in Python, not numpy) 0 forces the
    numpy path, a large value the Python one."""
    builder = SnapshotBuilder(spec, lm, block_size=BLOCK, max_batch_size=batch, progress_relief=RELIEF)
    if small_part is not None:
        builder.small_part = small_part
    return builder


def test_every_decision_of_an_overloaded_replay_matches_the_reference():
    """20 req/s overloads 4 V100s: queues grow to ~100 requests per instance, requests are preempted,
    instances are unchanged between some decisions and not others; both specs (with and without the
    predictor's length buckets, with admission control) over the same decisions."""
    lm = load_latency_model(PAPER_PROFILE)
    cluster = ClusterConfig(
        num_instances=4, instance=default_instance_config(PAPER_PROFILE), request_stats=True
    )
    specs = [
        ObsSpec(num_instances=4),
        ObsSpec(
            num_instances=4, predicted_bucket_edges=(100.0, 400.0), hold_kv_headroom=0.1, allow_delay=True
        ),
    ]
    builders = [_builder(s, lm) for s in specs]
    gen = replay(conversation_trace(600, 20.0, 3), cluster, lm, OraclePredictor())
    pointer, decisions, preempted = 0, 0, 0
    try:
        rv, cv = next(gen)
        while True:
            for b in builders:
                assert_same(b, lm, rv, cv)
            preempted += sum(1 for v in cv.instances for s in v.request_stats[: v.num_waiting] if s[2] > 0)
            decisions += 1
            ok = [v.index for v in cv.instances if v.accepting]
            choice = next((i % 4 for i in range(pointer, pointer + 4) if i % 4 in ok), DELAY)
            pointer = (choice + 1) % 4 if choice != DELAY else pointer
            rv, cv = gen.send(choice)
    except StopIteration:
        pass
    assert decisions == 600
    assert preempted > 0  # the queue part held preempted requests (generated > 0) at some decisions


@pytest.mark.parametrize("policy", [QueuePolicy.FCFS, QueuePolicy.LWL])
def test_the_simulators_request_stats_give_the_snapshot_of_their_entries(policy):
    """The builder reads the simulator's ``RequestStats`` through its arrays and its arrival-ordered
    queue (``_queue_part``: requests leaving at the front, joining at the back; LWL admits out of
    arrival order, a small KV cache preempts): at every decision of a replay it gives the reference's
    snapshot, and the same as a second builder fed the very same entries as plain tuples (the
    generic path)."""
    lm = load_latency_model(PAPER_PROFILE)
    icfg = dataclasses.replace(default_instance_config(PAPER_PROFILE), queue_policy=policy, kv_blocks=900)
    cluster = ClusterConfig(num_instances=3, instance=icfg, request_stats=True)
    spec = ObsSpec(num_instances=3)
    fast, plain = _builder(spec, lm), _builder(spec, lm)
    gen = replay(conversation_trace(500, 14.0, 5), cluster, lm, OraclePredictor())
    decisions = fast_views = 0
    result = None
    try:
        rv, cv = next(gen)
        while True:
            assert_same(fast, lm, rv, cv)
            fast_views += sum(isinstance(v.request_stats, RequestStats) for v in cv.instances)
            tuples = tuple(dataclasses.replace(v, request_stats=tuple(v.request_stats)) for v in cv.instances)
            a = fast.build(rv, cv)
            b = plain.build(rv, dataclasses.replace(cv, instances=tuples))
            for name in ("instances", "prefill_hist", "decode_hist"):
                np.testing.assert_array_equal(getattr(a.snapshot, name), getattr(b.snapshot, name))
            np.testing.assert_array_equal(a.pending_weight, b.pending_weight)
            decisions += 1
            rv, cv = gen.send(decisions % 3 if cv.instances[decisions % 3].accepting else DELAY)
    except StopIteration as done:
        result = done.value
    assert result is not None
    assert int(np.sum(result.preemptions)) > 0
    assert decisions >= 500
    assert fast_views == 3 * decisions


# ---------------------------------------------------------------------- Hypothesis: view sequences
_entry = st.tuples(
    st.integers(0, 5000),  # prompt tokens
    st.one_of(  # predicted output tokens: bucket edges, around the floor of 1, and anything
        st.sampled_from([0.5, 1.0, 1.5, 2.0, 127.0, 128.0, 256.0, 511.75, 512.0]),
        st.floats(0.0, 3000.0, allow_nan=False),
    ),
    st.one_of(st.integers(0, 3), st.integers(0, 600)),  # generated tokens
    st.booleans(),  # decoding
)


@st.composite
def _view_sequences(draw):
    """Per step, each of 3 instances either keeps its view object, keeps equal stats in a new view,
    appends to its queue, or gets fresh stats; the request changes every step."""
    m = 3
    steps = draw(st.integers(2, 8))
    queues = [draw(st.lists(_entry, max_size=12)) for _ in range(m)]
    running = [draw(st.lists(_entry, max_size=6)) for _ in range(m)]
    seq = []
    prev: list[InstanceView | None] = [None] * m
    for _ in range(steps):
        views = []
        for k in range(m):
            move = draw(st.sampled_from(["same", "equal", "append", "fresh", "run"]))
            if move == "same" and prev[k] is not None:
                views.append(prev[k])
                continue
            if move == "append":
                queues[k] = queues[k] + draw(st.lists(_entry, min_size=1, max_size=4))
            elif move == "fresh":
                queues[k] = draw(st.lists(_entry, max_size=12))
                running[k] = draw(st.lists(_entry, max_size=6))
            elif move == "run":
                running[k] = [(p, q, g + 1, d) for p, q, g, d in running[k]]
            stats = tuple(queues[k]) + tuple(running[k])
            n_run = len(running[k]) + draw(st.sampled_from([0, 0, 0, 2]))  # sometimes more than listed
            v = InstanceView(
                index=k,
                num_running=n_run,
                num_waiting=len(queues[k]),
                kv_used_blocks=draw(st.integers(0, 400)),
                kv_total_blocks=400,
                outstanding_prompt_tokens=draw(st.integers(0, 9000)),
                outstanding_decode_tokens=draw(st.sampled_from([0.0, 17.5, 900.0])),
                num_prefill_requests=len(queues[k]),
                num_decode_requests=len(running[k]),
                accepting=draw(st.booleans()),
                request_stats=stats,
            )
            views.append(v)
            prev[k] = v
        rv = RequestView(
            "r",
            0.0,
            draw(st.sampled_from([0.0, 0.1, 0.7])),
            draw(st.integers(0, 3000)),
            "t",
            draw(st.sampled_from([1.0, 90.0, 300.5])),
        )
        seq.append(
            (rv, ClusterView(now_s=1.0, instances=tuple(views), router_queue_len=draw(st.integers(0, 80))))
        )
    return seq


@settings(derandomize=True, max_examples=60, deadline=None)
@given(_view_sequences(), st.sampled_from([None, 0.2]))
def test_view_sequences_match_the_reference(seq, headroom):
    """Both conversion paths (numpy for every run, Python for every run) over the same views."""
    lm = load_latency_model(PAPER_PROFILE)
    spec = ObsSpec(num_instances=3, hold_kv_headroom=headroom)
    builders = [_builder(spec, lm, small_part=0), _builder(spec, lm, small_part=10**6)]
    for rv, cv in seq:
        for builder in builders:
            assert_same(builder, lm, rv, cv)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(_view_sequences(), st.sampled_from([1, 4, 9]))
def test_estimates_of_full_batches_match_the_reference(seq, batch):
    """The builder's latency estimates (``_rows``: view terms cached per view object, request terms
    once per decision) equal ``MinMin.completion_s`` and ``mixing_penalty_s`` also where the batch is
    full (capacity wait, capped decode coefficients), over views kept, replaced and re-seen."""
    lm = load_latency_model(PAPER_PROFILE)
    builder = _builder(ObsSpec(num_instances=3), lm, batch=batch)
    for rv, cv in seq + seq[::-1]:
        assert_same(builder, lm, rv, cv)


def broken_length_decision() -> tuple[RequestView, ClusterView]:
    """A decision on 3 instances whose plain request stats hold NaN and infinite predicted lengths
    (a broken predictor); also used by ``test_kernel.py``."""
    nan, inf = float("nan"), float("inf")
    views = (
        InstanceView(
            0, 1, 1, 10, 400, 300, 50.0, 1, 1, request_stats=((100, nan, 0, False), (30, 300.0, 7, True))
        ),
        InstanceView(
            1, 2, 0, 10, 400, 300, 50.0, 0, 2, request_stats=((100, inf, 3, True), (30, 9.0, 7, True))
        ),
        InstanceView(2, 0, 1, 0, 400, 10, 5.0, 1, 0, request_stats=((5000, inf, 0, False),)),
    )
    return RequestView("r", 0.0, 0.0, 50, "t", 40.0), ClusterView(0.0, views)


def test_nan_and_infinite_lengths_match_the_reference():
    """A NaN or infinite predicted length (a broken predictor) gives the reference's values, NaN
    included: the Python path hands such runs to numpy."""
    lm = load_latency_model(PAPER_PROFILE)
    rv, cv = broken_length_decision()
    for small_part in (0, 10**6):
        assert_same(_builder(ObsSpec(num_instances=3), lm, small_part), lm, rv, cv)


def test_a_builder_reused_for_other_views_gives_their_snapshot():
    """The cache is keyed by value: equal stats in new view objects give the same snapshot, changed
    ones (a queue entry's generated tokens, instances swapped) never return what earlier views gave."""
    lm = load_latency_model(PAPER_PROFILE)
    builder = _builder(ObsSpec(num_instances=2), lm)
    a = InstanceView(
        0,
        1,
        2,
        10,
        400,
        300,
        50.0,
        2,
        1,
        request_stats=((100, 50.0, 0, False), (2000, 600.0, 3, False), (30, 300.0, 7, True)),
    )
    b = InstanceView(
        1, 1, 1, 20, 400, 100, 80.0, 1, 1, request_stats=((100, 50.0, 0, False), (30, 300.0, 9, True))
    )
    a_preempted_more = dataclasses.replace(
        a, request_stats=((100, 50.0, 0, False), (2000, 600.0, 4, False), (30, 300.0, 7, True))
    )
    rv = RequestView("r", 0.0, 0.0, 50, "t", 40.0)
    for x, y in [(a, b), (dataclasses.replace(a), b), (a_preempted_more, b), (b, a), (a, b)]:
        views = (dataclasses.replace(x, index=0), dataclasses.replace(y, index=1))
        assert_same(builder, lm, rv, ClusterView(0.0, views))
