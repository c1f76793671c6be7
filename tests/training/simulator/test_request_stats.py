"""``Instance.request_stats`` (issue 16): the queue tuple kept in arrival order and the running batch
kept as ``BatchStats`` arrays per composition must give, at every call of a replay, the entries a
from-scratch walk over the instance's requests gives (waiting in arrival order, preempted, running
with their current token counts), with the same Python types; and the request-by-request twin
(``Instance.batch_steps = False``) must see the same stats at the same decisions as the batched path.
Hypothesis workloads cover preemption (small KV caches), chunked prefill, every queue policy and
prefix caching; a spy compares inside the real calls, so nothing else of the replay changes."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.training.simulator.test_properties import TaskMean, _router, workloads
from training.length.baselines import OraclePredictor
from training.routing.registry import RouterContext, get_router
from training.simulator import ClusterConfig, LinearLatencyModel, simulate
from training.simulator.config import InstanceConfig
from training.simulator.instance import Instance
from training.simulator.interface import RequestStats
from training.simulator.request import RequestStatus
from training.workloads.synthetic import conversation_trace

LIN = LinearLatencyModel()


def reference_stats(inst: Instance) -> tuple[tuple[Any, ...], ...]:
    """The entries from the instance's requests, one by one (``running`` writes the batch's counts
    back): waiting by routing sequence (arrival at the instance), then preempted, then running."""
    waiting = [r for _, _, r in sorted(inst.waiting, key=lambda e: e[1])]
    queue = [(r.prompt, r.pred, r.generated, False) for r in [*waiting, *inst.preempted]]
    run = [(r.prompt, r.pred, r.generated, r.status is RequestStatus.DECODING) for r in inst.running]
    return tuple(queue + run)


class Spy:
    """Wraps ``Instance.request_stats``: checks every result against ``reference_stats`` and records
    the entries (per call, in call order)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[tuple[Any, ...], ...]]] = []
        self._orig = Instance.request_stats

    def __call__(self, inst: Instance) -> RequestStats:
        got = self._orig(inst)
        want = reference_stats(inst)
        assert isinstance(got, RequestStats)
        assert len(got) == len(want) == inst.num_waiting + inst.num_running
        assert got == want
        assert tuple(got) == want
        assert got.entries == want
        assert [tuple(map(type, e)) for e in got] == [tuple(map(type, e)) for e in want]
        b = got.batch
        assert len(b) == inst.num_running
        assert got.queue == want[: len(got.queue)]
        assert np.array_equal(got.generated(), [e[2] for e in want[len(got.queue) :]])
        assert not b.pred.flags.writeable  # shared by views until the composition changes
        self.calls.append((inst.index, want))
        return got


def _spied(monkeypatch: pytest.MonkeyPatch, run, batch_steps: bool = True) -> list:
    spy = Spy()
    with monkeypatch.context() as m:
        m.setattr(Instance, "request_stats", lambda self: spy(self))
        m.setattr(Instance, "batch_steps", batch_steps)
        run()
    return spy.calls


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.integers(0, 3), st.booleans())
def test_request_stats_match_the_requests_and_the_twin(workload, seed, fast):
    reqs, cfg, p_delay = workload
    cfg = dataclasses.replace(cfg, request_stats=True)
    mp = pytest.MonkeyPatch()

    def run() -> None:
        simulate(reqs, _router(p_delay), cfg, LIN, TaskMean(), seed=seed, fast_forward=fast)

    batched = _spied(mp, run)
    twin = _spied(mp, run, batch_steps=False)
    assert batched == twin


def test_request_stats_over_an_overloaded_replay_with_preemption(monkeypatch):
    """The RL benchmark's kind of trace, on a KV cache small enough that requests get preempted."""
    reqs = conversation_trace(300, 20.0, 0)
    inst = InstanceConfig(kv_blocks=600, block_size=16, max_batch_size=32, max_batched_tokens=2048)
    cfg = ClusterConfig(num_instances=2, instance=inst, request_stats=True)

    def run() -> None:
        res = simulate(
            reqs, get_router("round_robin", RouterContext(num_instances=2)), cfg, LIN, OraclePredictor()
        )
        assert int(np.sum(res.preemptions)) > 0  # the case the queue's preempted part covers

    calls = _spied(monkeypatch, run)
    assert len(calls) > 300
    assert calls == _spied(monkeypatch, run, batch_steps=False)
