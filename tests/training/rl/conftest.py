"""Tiny env fixtures: a 2-instance paper-profile cluster and a seeded synthetic request sampler."""

from __future__ import annotations

import pytest

from tests.training.rl.samples import tiny_requests
from training.length.baselines import TaskMeanPredictor
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel
from training.workloads.episodes import EpisodeSampler


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
