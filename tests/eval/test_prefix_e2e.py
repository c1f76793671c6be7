"""End to end: a Mooncake-format trace with shared prefixes, read by the warehouse reader, replayed.

Prefix ids must survive the whole path (reader → marts.requests → Request → simulator prefix cache)
and a cache-aware router must win when every instance cannot hold every prefix family.
"""

from __future__ import annotations

import json

import numpy as np

from training.length.baselines import TaskMeanPredictor
from training.routing.registry import RouterContext, get_router
from training.simulator import ClusterConfig, default_instance_config, load_latency_model, simulate
from training.workloads.sources import trace_requests


def _write_mooncake(path, n=600, families=24, rate=1.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    with open(path, "w") as f:
        for i in range(n):
            fam = int(rng.integers(families))
            ids = [fam * 100 + k for k in range(6)] + [10**6 + 2 * i, 10**6 + 2 * i + 1]
            rec = {
                "timestamp": int(t[i] * 1000),
                "input_length": 512 * 8 - int(rng.integers(100)),
                "output_length": int(rng.integers(10, 80)),
                "hash_ids": ids,
            }
            f.write(json.dumps(rec) + "\n")


def test_prefix_ids_flow_through_and_cache_aware_routing_wins(tmp_path):
    path = tmp_path / "trace.jsonl"
    _write_mooncake(path)
    requests, report = trace_requests([path], "mooncake")
    assert report.ingested == 600
    assert requests[0].prefix_hash_ids is not None
    assert len(requests[0].prefix_hash_ids) == 8

    profile = "v100-llama2-7b-paper"
    lm = load_latency_model(profile)
    # A V100's KV cache (~2,000 blocks of 16 tokens) holds ~10 of the 24 prefix families (6 blocks of
    # 512 tokens each): caches must specialise to help.
    cluster = ClusterConfig(num_instances=4, instance=default_instance_config(profile))
    predictor = TaskMeanPredictor.fit(requests)
    e2e = {}
    for name in ("round_robin", "gie_default"):
        router = get_router(name, RouterContext(num_instances=4, latency_model=lm))
        result = simulate(requests, router, cluster, lm, predictor, seed=0)
        result.check_invariants()
        e2e[name] = float(np.mean(result.e2e_s))
    assert e2e["gie_default"] < 0.8 * e2e["round_robin"], e2e
