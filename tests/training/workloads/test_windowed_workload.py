"""Seeded windows of a trace (``windowed_trace_workload``): determinism, disjoint pools, rate scaling,
short pools, and the RL router training and evaluating on a tiny synthetic warehouse end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval.spec import EvalSpec, LearnedPolicy, evaluate_spec
from training.rl.config import RouterTrainConfig
from training.rl.train import train_router
from training.simulator.request import Request
from training.workloads.catalog import (
    TRAIN_WINDOW_FRACTION,
    WorkloadOptions,
    warehouse_workload,
    windowed_trace_workload,
)
from training.workloads.episodes import episode_sampler, workload_for
from warehouse.ingest import ingest
from warehouse.synthetic import SyntheticConfig, write_azure_like

PROFILE = "v100-llama2-7b-paper"


def _trace(n: int = 1000, seed: int = 3) -> list[Request]:
    """``n`` requests with irregular (Poisson, 2 req/s) arrivals; ``r<i>`` is the i-th by arrival."""
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(0.5, n))
    return [Request(f"r{i}", float(t), 100 + i % 7, 20 + i % 5, "t") for i, t in enumerate(arrivals)]


def _windows(requests: list[Request], num_requests: int | None, rate: float | None = 4.0):
    return windowed_trace_workload(
        "w",
        "test trace",
        requests,
        WorkloadOptions(num_requests=num_requests, rate=rate),
        num_instances=2,
        profile=PROFILE,
    )


def _index(r: Request) -> int:
    return int(r.request_id[1:])


def test_same_seed_same_window_and_different_seeds_differ():
    wl = _windows(_trace(), 100)
    assert wl.seed_dependent
    assert wl.sample_train is not None
    assert wl.sample(0) == wl.sample(0)
    assert wl.sample_train(0) == wl.sample_train(0)
    starts = {wl.sample(s)[0].request_id for s in range(10)}
    assert len(starts) >= 8
    assert len({wl.sample_train(s)[0].request_id for s in range(10)}) >= 8


def test_windows_are_consecutive_rebased_and_at_the_target_rate():
    wl = _windows(_trace(), 100, rate=4.0)
    assert wl.sample_train is not None
    for window in (wl.sample(1), wl.sample_train(1)):
        assert len(window) == 100
        idx = [_index(r) for r in window]
        assert idx == list(range(idx[0], idx[0] + 100))
        assert window[0].arrival_s == 0.0
        assert (len(window) - 1) / window[-1].arrival_s == pytest.approx(4.0)
    assert wl.info["num_requests"] == 100
    assert wl.info["whole_pools"] == []


def test_rate_none_keeps_the_trace_gaps():
    trace = _trace()
    window = _windows(trace, 50, rate=None).sample(2)
    first = trace[_index(window[0])].arrival_s
    for r in window:
        assert r.arrival_s == pytest.approx(trace[_index(r)].arrival_s - first)


def test_train_and_held_out_windows_never_share_a_request():
    trace = _trace()
    cut = trace[0].arrival_s + TRAIN_WINDOW_FRACTION * (trace[-1].arrival_s - trace[0].arrival_s)
    wl = _windows(trace, 100)
    assert wl.sample_train is not None
    held = {r.request_id for s in range(20) for r in wl.sample(s)}
    train = {r.request_id for s in range(20) for r in wl.sample_train(s)}
    assert held.isdisjoint(train)
    assert all(trace[_index(r)].arrival_s < cut for r in wl.train)
    assert train <= {r.request_id for r in wl.train}
    assert all(trace[int(i[1:])].arrival_s >= cut for i in held)
    assert len(wl.train) + wl.info["held_out_pool_requests"] == len(trace)


def test_a_short_pool_is_used_whole():
    trace = _trace(300)
    wl = _windows(trace, 280)  # training pool ~60 requests, held-out pool ~240
    assert wl.sample_train is not None
    n_held = wl.info["held_out_pool_requests"]
    assert wl.info["whole_pools"] == ["held_out", "train"]
    assert len(wl.sample(0)) == n_held
    assert wl.sample(0) == wl.sample(7)
    assert not wl.seed_dependent
    assert [r.request_id for r in wl.sample_train(4)] == [r.request_id for r in wl.train]


def test_a_trace_without_a_time_span_is_refused():
    with pytest.raises(ValueError, match="same time"):
        _windows([Request(f"r{i}", 5.0, 10, 10, "t") for i in range(10)], 5)


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("windows")
    wh = d / "w.duckdb"
    ingest(write_azure_like(d / "syn", SyntheticConfig(rows=3000, seed=11)), warehouse=wh)
    return str(wh)


def _cfg(warehouse: str, **extra: object) -> RouterTrainConfig:
    return RouterTrainConfig.model_validate(
        {
            "workload": "warehouse",
            "warehouse": warehouse,
            "episode_requests": 200,
            "rate_rps": 5,
            "profile": PROFILE,
            **extra,
        }
    )


def test_warehouse_windows_flag(tiny_warehouse: str):
    fixed = warehouse_workload(tiny_warehouse, "format = 'azure'", WorkloadOptions(num_requests=200))
    assert not fixed.seed_dependent
    assert fixed.sample_train is None
    windows = warehouse_workload(
        tiny_warehouse, "format = 'azure'", WorkloadOptions(num_requests=200), windows=True
    )
    assert windows.seed_dependent
    assert windows.sample(0) != windows.sample(1)
    assert windows.info["where"] == "format = 'azure'"


def test_workload_for_a_warehouse_config(tiny_warehouse: str):
    cfg = _cfg(tiny_warehouse)
    wl = workload_for(cfg)
    assert wl.name == "warehouse"
    assert wl.num_instances == cfg.num_instances
    assert wl.sample_train is not None
    episode = wl.sample_train(3)
    assert len(episode) == 200
    assert len({r.request_id for r in episode}) == 200
    assert (len(episode) - 1) / episode[-1].arrival_s == pytest.approx(5.0)
    assert {r.task for r in episode} <= {"code", "conv"}
    sampler = episode_sampler(cfg, wl)
    assert sampler.sample(3) == episode
    assert workload_for(cfg).sample(2) == wl.sample(2)


def test_rl_smoke_on_warehouse_windows(tiny_warehouse: str, tmp_path: Path):
    cfg = _cfg(
        tiny_warehouse,
        num_instances=2,
        total_timesteps=300,
        net_arch=(8,),
        learning_starts=50,
        buffer_size=1000,
        batch_size=32,
        target_update_interval=100,
        eval_every_episodes=1000,
        eval_episodes=1,
        checkpoint_every_steps=1000,
    )
    trained = train_router(cfg, episode_sampler(cfg), tmp_path, progress=False)
    policy = {"rl": LearnedPolicy(policy_dir=trained.policy_dir)}
    report = evaluate_spec(EvalSpec.for_setting(cfg, (0, 1), routers=["round_robin"], learned=policy))
    assert set(report.routers) == {"round_robin", "rl"}
    for name in ("round_robin", "rl"):
        first, second = report.routers[name].overall.e2e_s.mean.per_seed
        assert first != second, name
