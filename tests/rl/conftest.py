"""Tiny env fixtures: a 2-instance paper-profile cluster and a seeded synthetic request sampler."""

from __future__ import annotations

import numpy as np
import pytest

from training.length.baselines import TaskMeanPredictor
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, Request
from training.workloads.episodes import EpisodeSampler


def tiny_requests(seed: int, n: int = 30, rate: float = 8.0) -> list[Request]:
    """A mix of short/long prompts and outputs, Poisson arrivals (deterministic for a seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    out = []
    for k in range(n):
        heavy = bool(rng.random() < 0.3)
        prompt = int(rng.integers(1200, 2000)) if heavy else int(rng.integers(20, 300))
        output = int(rng.integers(5, 40)) if heavy else int(rng.integers(50, 400))
        out.append(Request(f"r{k}", float(t[k]), prompt, output, "heavy" if heavy else "light"))
    return out


@pytest.fixture(scope="session")
def tiny_sampler() -> EpisodeSampler:
    train = tiny_requests(12345, n=200)
    return EpisodeSampler(
        sample=tiny_requests,
        cluster=ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=400, block_size=16)),
        latency_model=LinearLatencyModel(grad2_s_per_decode_context_token=0.0, per_decode_seq_s=3.3e-5),
        predictor=TaskMeanPredictor.fit(train),
        name="tiny",
    )
