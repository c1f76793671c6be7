"""``Instance.fork`` / ``Cluster.fork``: a fork taken mid-replay and advanced by the same calls as the
original ends in the same state, and advancing one never changes the other.

The driver below is a small copy of the engine's loop (arrivals routed round robin with a router
snapshot first, SCHEDULE / ITERATION_END events, cut stretches), so the instances are forked in every
state a replay puts them in: decode stretches in progress, preempted requests, pinned prefix blocks.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np
import pytest

from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel
from training.simulator.cluster import Cluster
from training.simulator.event_order import ARRIVAL, ITERATION_END, SCHEDULE
from training.simulator.instance import Stretch
from training.simulator.state import ReqState

LIN = LinearLatencyModel()


def _states(n: int, seed: int) -> tuple[list[float], list[ReqState]]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(0.02, n)).tolist()
    states = []
    for i in range(n):
        prompt = int(rng.integers(20, 600))
        output = int(rng.integers(1, 300))
        cacheable = tuple(int(rng.integers(3)) * 10 + k for k in range(prompt // 64)) if i % 3 == 0 else ()
        states.append(ReqState(i, prompt, output, float(rng.integers(1, 400)), cacheable))
    return arrivals, states


class Driver:
    """The replay's mutable state outside the cluster: the event heap, requests, round robin."""

    def __init__(self, cluster: Cluster, arrivals: list[float], states: list[ReqState]) -> None:
        self.cluster = cluster
        self.states = states
        self.heap = [(t, ARRIVAL, i, 0) for i, t in enumerate(arrivals)]
        heapq.heapify(self.heap)
        self.next = 0
        self.now = 0.0

    def fork(self) -> Driver:
        memo: dict[int, ReqState] = {}
        new = Driver.__new__(Driver)
        new.cluster = self.cluster.fork(memo)
        new.states = [memo.get(id(r)) or r.copy() for r in self.states]
        new.heap = list(self.heap)
        new.next = self.next
        new.now = self.now
        return new

    def advance(self, events: int, until_arrival: int | None = None) -> None:
        """Process ``events`` events, or stop after the arrival of request ``until_arrival``."""
        heap, instances = self.heap, self.cluster.instances
        for _ in range(events):
            if not heap:
                return
            t, kind, key, version = heapq.heappop(heap)
            if kind == ITERATION_END:
                inst = instances[key]
                if version != inst.version or not inst.busy:
                    continue
                self.now = t
                inst.end_iteration(t)
                if not inst.schedule_pending:
                    inst.schedule_pending = True
                    heapq.heappush(heap, (t, SCHEDULE, key, 0))
            elif kind == SCHEDULE:
                self.now = t
                inst = instances[key]
                inst.schedule_pending = False
                if inst.busy:
                    continue
                end = inst.step(t)
                if end is not None:
                    heapq.heappush(heap, (end, ITERATION_END, key, inst.version))
            else:  # ARRIVAL: a router snapshot (syncs stretches), then place round robin
                self.now = t
                r = self.states[key]
                self.cluster.view(t, r, 0)
                target = self.next
                self.next = (self.next + 1) % len(instances)
                r.routed_s = t
                self.cluster.placements += 1
                inst = instances[target]
                if inst.busy:
                    new_end = inst.cut_stretch(t)
                    if new_end is not None:
                        heapq.heappush(heap, (new_end, ITERATION_END, target, inst.version))
                elif not inst.schedule_pending:
                    inst.schedule_pending = True
                    heapq.heappush(heap, (t, SCHEDULE, target, 0))
                inst.enqueue(r)
                if key == until_arrival:
                    return


def _canon(value: object) -> object:
    """Live objects replaced by their contents (ReqState slots, stretch fields), recursively."""
    if isinstance(value, ReqState):
        return tuple(_canon(getattr(value, name)) for name in ReqState.__slots__)
    if isinstance(value, Stretch):
        return (np.asarray(value.ends).tolist(), value.k, value.applied, value.ahead)
    if isinstance(value, (list, tuple, deque)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return [(k, _canon(v)) for k, v in value.items()]
    return value


def snapshot(d: Driver) -> str:
    """Everything mutable, canonical (repr keeps NaN comparable and floats exact). Reading
    ``running`` writes the decodes' token counts back, which changes no behaviour."""
    parts = [repr(d.heap), repr(d.next), repr(d.cluster.placements), repr(d.cluster._cache)]
    for inst in d.cluster.instances:
        inst.running  # noqa: B018 - writes the batch's counts back into the states
    parts += [repr(_canon(r)) for r in d.states]
    for inst in d.cluster.instances:
        for name, value in sorted(vars(inst).items()):
            if name in ("config", "latency", "observer", "_series_base", "_s"):
                continue
            parts.append(f"{inst.index}.{name}={_canon(value)!r}")
        parts.append(repr((inst.s_time, inst.s_batch, inst.s_queue, inst.s_kv)))
    return "\n".join(parts)


CONFIGS = {
    "kv_pressure": InstanceConfig(kv_blocks=120, block_size=16, prefix_block_tokens=64),
    "chunked_prefix": InstanceConfig(
        kv_blocks=400, block_size=16, prefix_block_tokens=64, chunked_prefill_tokens=128
    ),
    "roomy": InstanceConfig(),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast_forward", "step"])
@pytest.mark.parametrize("cfg", list(CONFIGS), ids=list(CONFIGS))
def test_fork_advanced_like_the_original_ends_identical(cfg: str, fast: bool) -> None:
    arrivals, states = _states(150, seed=3)
    cluster = Cluster(ClusterConfig(num_instances=3, instance=CONFIGS[cfg]), LIN, fast)
    reference = Driver(cluster, arrivals, states)
    preempted = 0
    for fork_at in (40, 250, 400, 900):  # events between forks; each fork is checked to the end
        reference.advance(fork_at)
        before = snapshot(reference)
        fork = reference.fork()
        assert snapshot(fork) == before
        # the fork runs to the end first: the original must not move
        fork.advance(10**9)
        assert snapshot(reference) == before
        twin = reference.fork()
        reference_end = reference.fork()
        reference_end.advance(10**9)
        twin.advance(10**9)
        assert snapshot(fork) == snapshot(twin) == snapshot(reference_end)
        assert all(r.status.is_finished for r in fork.states)
        preempted = max(preempted, sum(r.preemptions for r in fork.states))
    if cfg == "kv_pressure":
        assert preempted > 0  # the forks crossed preemptions


def test_fork_shares_immutable_parts_only() -> None:
    arrivals, states = _states(60, seed=5)
    d = Driver(
        Cluster(ClusterConfig(num_instances=2, instance=CONFIGS["kv_pressure"]), LIN, True), arrivals, states
    )
    d.advance(120)
    f = d.fork()
    for a, b in zip(d.cluster.instances, f.cluster.instances, strict=True):
        assert a.latency is b.latency
        assert a.config is b.config
        assert a.running is not b.running
        assert a.cache_ref is not b.cache_ref
        assert not {id(r) for r in a.running} & {id(r) for r in b.running}


@pytest.mark.parametrize("shorter", [True, False], ids=["shorter", "longer"])
def test_set_output_tokens_mid_decode_matches_request_by_request(shorter: bool) -> None:
    """A rollout's new length for a decoding request (``set_output_tokens``, then the stretch cut at
    the boundary in progress, as ``ReplayState.fork(lengths=...)`` does) gives the same replay as
    the request-by-request twin given the same change."""
    drivers = []
    for batch in (True, False):
        arrivals, states = _states(120, seed=7)
        cluster = Cluster(ClusterConfig(num_instances=2, instance=CONFIGS["roomy"]), LIN, True)
        for inst in cluster.instances:
            inst.batch_steps = batch
        drivers.append(Driver(cluster, arrivals, states))
    changed = 0
    for j in range(10, 120, 15):
        for d in drivers:
            d.advance(10**9, until_arrival=j)
        # the same decoding request in both, at the same instant (a decision point: synced)
        now = drivers[0].now
        assert drivers[1].now == now
        inst0 = drivers[0].cluster.instances[0]
        inst0.sync(now)
        decoding = [r for r in inst0.running if r.status.name == "DECODING"]
        if not decoding:
            continue
        idx = decoding[0].idx
        for d in drivers:
            inst = d.cluster.instances[0]
            inst.sync(now)
            inst.refresh_requests()
            r = d.states[idx]
            out = r.generated + 1 if shorter else r.output + 37
            inst.set_output_tokens(r, out)
            new_end = inst.cut_stretch(now)
            if new_end is not None:
                heapq.heappush(d.heap, (new_end, ITERATION_END, 0, inst.version))
        changed += 1
    for d in drivers:
        d.advance(10**9)
    assert changed
    a, b = ([(r.finish_s, r.generated, r.output) for r in d.states] for d in drivers)
    assert a == b
    assert all(r.status.is_finished for r in drivers[0].states)


def test_reqstate_copy_covers_every_slot() -> None:
    r = ReqState(3, 100, 20, 17.5, (1, 2))
    for i, name in enumerate(ReqState.__slots__):  # distinct values, so a missed slot shows
        if name not in ("cacheable", "pinned", "status"):
            setattr(r, name, 1000 + i)
    r.pinned = [1]
    c = r.copy()
    assert [getattr(c, n) for n in ReqState.__slots__] == [getattr(r, n) for n in ReqState.__slots__]
    assert c.pinned is not r.pinned
