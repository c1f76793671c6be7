"""``run_env_benchmark`` (``loadwise bench env``): the env episode and its same-run baseline are the same
replay (with and without admission control) and the figures are consistent. No timing assertions.
The command's ``--json``: tests/flows/cli/test_bench.py."""

from __future__ import annotations

import numpy as np
import pytest

from training.rl.bench import EnvBenchResult, next_valid, run_env_benchmark

N = 150


@pytest.fixture(scope="module", params=[None, 0.1], ids=["no-hold", "hold-0.1"])
def result(request) -> EnvBenchResult:
    return run_env_benchmark(num_requests=N, hold_kv_headroom=request.param)


def test_env_and_simulate_are_the_same_replay(result):
    assert result.identical_results
    assert result.max_rel_diff_e2e == 0.0


def test_figures_are_positive_and_consistent(result):
    for name in (
        "env_wall_s",
        "replay_wall_s",
        "env_decisions_per_s",
        "replay_requests_per_s",
        "overhead",
        "overhead_cpu",
        "observe_us",
        "snapshot_us",
        "encode_us",
    ):
        assert getattr(result, name) > 0, name
    assert result.observation_path == "compiled"  # the bench's linear paper profile takes the kernel
    assert result.mean_e2e_s > 0
    assert result.env_decisions_per_s == pytest.approx(result.decisions / result.env_wall_s)
    assert result.overhead == pytest.approx(result.env_wall_s / result.replay_wall_s)
    # one agent decision per request: round robin never DELAYs while an instance accepts, and the env
    # answers held ticks itself under admission control
    assert result.decisions == N


def test_the_hold_case_actually_holds(result):
    if result.hold_kv_headroom is None:
        assert result.held_requests == 0
    else:
        assert result.held_requests > 0
        assert result.mean_router_wait_s > 0


def test_next_valid_is_cyclic_and_delays_only_when_nothing_is_valid():
    mask = np.array([True, False, True, False, False])  # 4 instances, then DELAY
    assert next_valid(mask, 0) == 0
    assert next_valid(mask, 1) == 2
    assert next_valid(mask, 3) == 0
    assert next_valid(np.array([False, False, False, False, True]), 2) == 4


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="repeats"):
        run_env_benchmark(num_requests=10, repeats=0)
    with pytest.raises(ValueError, match="hold_kv_headroom"):
        run_env_benchmark(num_requests=10, hold_kv_headroom=1.0)
