"""Same seed → bit-identical replay results across processes, whatever Python's hash seed.

String hashing is randomised per process (PYTHONHASHSEED); a set or dict iterated in hash order
anywhere in the replay or the routers would make two runs differ. Two fresh interpreters with
different hash seeds replay a prefix-sharing trace through randomised and prefix-aware routers and
must print the same digest of every result array.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import hashlib
import numpy as np
from training.length.baselines import TaskMeanPredictor
from training.routing.registry import RouterContext, get_router, router_names
from training.simulator import ClusterConfig, default_instance_config, load_latency_model, simulate
from training.simulator.request import Request

rng = np.random.default_rng(7)
t = np.cumsum(rng.exponential(0.15, 300))
reqs = [
    Request(f"r{i}", float(t[i]), int(rng.integers(600, 3000)), int(rng.integers(1, 300)),
            f"task{i % 3}", tuple(int(rng.integers(5)) * 10 + k for k in range(3)))
    for i in range(300)
]
lm = load_latency_model("v100-llama2-7b-paper")
cluster = ClusterConfig(3, default_instance_config("v100-llama2-7b-paper"))
digest = hashlib.sha256()
for name in router_names():
    router = get_router(name, RouterContext(num_instances=3, latency_model=lm))
    res = simulate(reqs, router, cluster, lm, TaskMeanPredictor.fit(reqs), seed=3)
    for arr in (res.routed_s, res.first_token_s, res.finish_s, res.preemptions, res.instance):
        digest.update(np.ascontiguousarray(arr).tobytes())
print(digest.hexdigest())
"""


def _digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    return out.stdout.strip()


def test_replays_identical_across_processes_and_hash_seeds():
    assert _digest("1") == _digest("12345")
