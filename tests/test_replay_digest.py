"""Stored digests of fixed replays: a refactor or a speed-up must leave every result bit-identical.

Who runs this: the default suite, on every change. The digests below were computed on the code
before the structural refactor (issue 14) and must never change unless a change of *semantics* is
intended; then update them in the same commit and say why in its message. Each case replays a fixed,
seeded trace and hashes every per-request array of ``SimResult``, its iteration count, simulated
time and per-instance series, so any change in event order, batching, routing or latency shows.

Cases: every registered non-learned router on the paper V100 profile (no data needed); the A100
profile with KV pressure, admission control (``+hold``), chunked prefill and the length-aware queue
policies (needs the Vidur profiles in ../shared/data); the RL env driven by a fixed action sequence;
the requests every registered workload builds (held-out samples and training pools, from the real
data).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from training.length.baselines import TaskMeanPredictor
from training.routing.registry import RouterContext, get_router, router_names
from training.simulator import (
    ClusterConfig,
    QueuePolicy,
    SimResult,
    default_instance_config,
    load_latency_model,
    simulate,
)
from training.simulator.request import Request

PAPER = "v100-llama2-7b-paper"
A100 = "a100-llama2-7b"


def _trace(n: int, mean_gap_s: float, seed: int) -> list[Request]:
    """A seeded mixed trace: prefill-heavy and decode-heavy tasks, shared prefixes on some requests."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(mean_gap_s, n))
    out = []
    for i in range(n):
        task = ("code", "conv", "summarize")[i % 3]
        prompt = int(rng.integers(1500, 4000)) if task == "code" else int(rng.integers(100, 900))
        output = int(rng.integers(5, 60)) if task == "code" else int(rng.integers(100, 700))
        prefix = tuple(int(rng.integers(4)) * 10 + k for k in range(2)) if i % 4 == 0 else None
        out.append(Request(f"r{i}", float(t[i]), prompt, output, task, prefix))
    return out


def _digest(results: list[SimResult]) -> str:
    digest = hashlib.sha256()
    for res in results:
        for arr in (
            res.routed_s,
            res.first_token_s,
            res.finish_s,
            res.preemptions,
            res.instance,
            res.generated_tokens,
        ):
            digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update(f"{res.num_iterations}:{res.sim_time_s!r}:{res.kv_total_blocks}".encode())
        for series in res.instance_series:
            for key in sorted(series):
                digest.update(key.encode())
                digest.update(np.ascontiguousarray(series[key]).tobytes())
    return digest.hexdigest()


def _replays(profile: str, routers: list[str], cluster: ClusterConfig, requests: list[Request]) -> str:
    model = load_latency_model(profile)
    predictor = TaskMeanPredictor.fit(requests)
    results = []
    for name in routers:
        ctx = RouterContext(num_instances=cluster.num_instances, latency_model=model)
        results.append(simulate(requests, get_router(name, ctx), cluster, model, predictor, seed=11))
    return _digest(results)


def test_every_router_on_the_paper_profile_replays_as_before():
    routers = [n for n in router_names() if n != "rl" and not n.startswith("rl+")]
    requests = _trace(400, 0.12, seed=5)
    cluster = ClusterConfig(4, default_instance_config(PAPER))
    assert _replays(PAPER, routers, cluster, requests) == PAPER_DIGEST


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize(
    ("case", "chunk", "policy"),
    [
        ("fcfs", None, QueuePolicy.FCFS),
        ("chunked", 512, QueuePolicy.FCFS),
        ("lwl", None, QueuePolicy.LWL),
        ("binpack", None, QueuePolicy.BINPACK),
    ],
)
def test_the_a100_profile_under_memory_pressure_replays_as_before(case, chunk, policy):
    routers = ["round_robin", "least_tokens", "workload_impact_greedy", "workload_impact_greedy+hold"]
    requests = _trace(300, 0.02, seed=9)
    instance = default_instance_config(A100, chunked_prefill_tokens=chunk, queue_policy=policy)
    instance = replace(instance, kv_blocks=1500)  # small KV: preemptions and held requests happen
    cluster = ClusterConfig(3, instance)
    assert _replays(A100, routers, cluster, requests) == A100_DIGESTS[case]


def test_the_rl_env_replays_a_fixed_action_sequence_as_before():
    from training.rl.env import RouterEnv
    from training.workloads.episodes import EpisodeSampler

    requests = _trace(300, 0.1, seed=3)
    model = load_latency_model(PAPER)
    cluster = ClusterConfig(3, default_instance_config(PAPER))
    sampler = EpisodeSampler(
        sample=lambda seed: requests,
        cluster=cluster,
        latency_model=model,
        predictor=TaskMeanPredictor.fit(requests),
        name="digest",
    )
    env = RouterEnv(sampler)
    obs, _ = env.reset(seed=0)
    rewards, observations = [], [np.asarray(obs, dtype=np.float64)]
    step = 0
    while True:
        mask = env.action_masks()
        allowed = np.flatnonzero(mask)
        action = int(allowed[(step * 7) % len(allowed)])
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        observations.append(np.asarray(obs, dtype=np.float64))
        step += 1
        if terminated or truncated:
            break
    digest = hashlib.sha256(np.asarray(rewards).tobytes())
    digest.update(np.concatenate(observations).tobytes())
    digest.update(_digest([env.last_result]).encode())
    assert (step, digest.hexdigest()) == ENV_DIGEST


def _requests_digest(requests: list[Request]) -> str:
    digest = hashlib.sha256()
    for r in requests:
        digest.update(repr((r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.task)).encode())
        digest.update(repr((r.prefix_hash_ids, r.prompt_text)).encode())
    return digest.hexdigest()


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("name", ["main", "table2", "azure", "prefix"])
def test_every_workload_builds_the_same_requests_as_before(name):
    """What the held-out replays and the training pools are made of: same requests, same order."""
    from training.workloads.catalog import WorkloadOptions, get_workload

    workload = get_workload(name, WorkloadOptions(num_requests=200))
    parts = [workload.sample(0), workload.sample(1), list(workload.train)]
    if workload.sample_train is not None:
        parts.append(workload.sample_train(0))
    assert [_requests_digest(p) for p in parts] == WORKLOAD_DIGESTS[name]


PAPER_DIGEST = "f6206263fe2c706b661bdd6a6bb14941b5efdd2bcd05df91e223652ee041c640"
A100_DIGESTS = {
    "fcfs": "a8e9990776e43a8273161c69c4cb183d69dc0ee8e8934afd6daf9744f1f17c8b",
    "chunked": "bc68ad3772403ac70ab38c1e4c7cfcb8e22c32678f53713fe5f347cddfbf5e53",
    "lwl": "e1c438638327c3c0e6f56fc887e696be47350bc4722e1c465215911e7e3c3f5a",
    "binpack": "15e0cbb44761822814e532420c36c6a6ef7ffd2a885ad85a0fa3ce85484c950f",
}
ENV_DIGEST = (300, "78f62d391e9302952a7c34c74afeb9c42729fbf41df69c117f16fdffca0476e6")
WORKLOAD_DIGESTS = {
    # main changed on purpose in issue 15: its pools follow the warehouse's one prompt split
    "main": [
        "76f1088a16441d8e9a55caf5c1678f3872cae6a8c00a6a9fe4026233a54313e2",
        "f594133868fad74f798597cb44a86f89517e00626bd7dc2bc0acfc54c30fa523",
        "bc8799aeb82f3c8d07fc1282f6f3758924fe57b660b6d61b3d9a5e450fb6975d",
        "32f75cf95fb2ff97fe2e1e0e062057fee930374297ad343bd483c283398e44eb",
    ],
    "table2": [
        "9bc7c89e8d52ca6b8a6eac2ebc9a81de1464ba1d1949f6e4e292e6d997846ec0",
        "690956ca3c2710f3bd5e0059932047fc51c2c16ccc74dbe7611c1a633184075c",
        "2ce032a38ff3ce616fa8f394cf19d1078407dbf8e7d9b14ac4d6262feca9ff19",
    ],
    "azure": [
        "64e7f5e4bb10a527fdb790efdc845c3ef0cf721f35d46c3a2b828ef3f7b9b8f8",
        "64e7f5e4bb10a527fdb790efdc845c3ef0cf721f35d46c3a2b828ef3f7b9b8f8",
        "9da4f951afe40c686ad215f62f935fe90daabda27fd481fb11662cb6ef8eb7e7",
    ],
    "prefix": [
        "7afbc7af12034efc2bdcdf4667fa6c6d052b64a4b8da7cc88ebb7d0f53059be1",
        "c9cb8c9993d905918fd06a6c809f07dc8a6fc84677fb94e003f34fdec6354100",
        "2d6179ad2575f5eab94eaa3f0d665611802c15ca8fd51ff5d3816bd175f294fe",
    ],
}
