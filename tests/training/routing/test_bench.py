"""The replay benchmark runs, both modes agree, and it reports the figures BENCHMARKS.md quotes."""

from __future__ import annotations

from training.routing.bench import run_replay_benchmark
from training.workloads.synthetic import conversation_trace


def test_small_benchmark_reports_both_modes():
    out = run_replay_benchmark(num_requests=200, num_instances=2, rate_per_s=5.0)
    for key in ("sim_requests_per_s", "step_sim_requests_per_s", "speedup", "wall_s", "num_iterations"):
        assert out[key] > 0, key
    assert out["identical_results"] is True
    assert out["max_rel_diff_e2e"] == 0.0
    assert out["same_preemptions"] is True


def test_trace_is_seeded():
    a, b = conversation_trace(50, seed=3), conversation_trace(50, seed=3)
    assert a == b
    assert a != conversation_trace(50, seed=4)
    assert all(1 <= r.prompt_tokens <= 4096 and 1 <= r.output_tokens <= 1024 for r in a)
