"""RL-environment speed benchmark: routing decisions per wall-clock second through ``RouterEnv``, next
to the same replay driven by ``simulate`` (the same-run baseline).

Who calls this: ``loadwise bench env`` (the CLI, in ``flows.cli.bench``), ``make bench`` and
BENCHMARKS.md ("RL environment"). Each call replays one fixed seeded trace
(``training.workloads.synthetic.conversation_trace``: Poisson arrivals, conversation-like lengths) on
4 instances of the paper's V100 profile (no data files needed) with the oracle length predictor, twice
per repeat:

- env: ``RouterEnv.reset(options={"requests": trace})`` then one ``step`` per decision, answered by a
  deterministic round-robin agent over ``env.action_masks()`` (the next valid instance in cyclic
  order; DELAY only when no instance is valid). Timed from ``reset`` to the terminal ``step``; the
  env's per-decision work (snapshot, observation, mask, reward) is what it costs over the replay.
- replay: ``simulate`` on the same trace with the registry's ``round_robin`` (wrapped in
  ``HoldForHeadroom`` when ``hold_kv_headroom`` is set), which makes the same choices, with
  ``ClusterConfig(request_stats=True)`` as in the env.

The two must be the same replay: ``identical_results`` compares their per-request E2E arrays exactly.
A third pass replays the trace once more with the same choices and times, per decision the agent
sees, the env's observation on its path (``observe_us``: the numba kernel unless
``LOADWISE_RL_KERNEL=0``) and the pure-Python snapshot builder (``SnapshotBuilder.build``) and encoder
(``encode_observation``) apart (``snapshot_us``, ``encode_us``, wall): what of the env's overhead is
the observation (issue 16).
Both modes are timed in wall and in CPU seconds of this process (``overhead_cpu``): on the shared
2-core machine the wall ratio moves by up to ~2x from one minute to the next, the CPU one by ~10 %.
Under admission control the env answers the held ticks itself (they never reach the agent) and
``HoldForHeadroom`` returns DELAY without asking the inner round robin, so the cyclic pointers of the
agent and of the inner router move on the same decisions. Pure apart from the wall clock.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.length.baselines import OraclePredictor
from training.rl.env import RouterEnv
from training.rl.policy_serving import ObsSpec, action_mask, encode_observation
from training.routing.admission import HoldForHeadroom
from training.routing.admission_rule import AdmissionMemo
from training.routing.registry import RouterContext, get_router
from training.simulator.config import ClusterConfig
from training.simulator.engine import replay, simulate
from training.simulator.interface import DELAY, Router
from training.simulator.profiles import PAPER_PROFILE, default_instance_config, load_latency_model
from training.simulator.request import Request
from training.simulator.result import SimResult
from training.workloads.episodes import EpisodeSampler
from training.workloads.synthetic import conversation_trace

NUM_INSTANCES = 4
"""Instances of the benchmark cluster (the paper's setting)."""


class EnvBenchResult(BaseModel):
    """Speed of one env episode next to the same replay through ``simulate`` (best of ``repeats``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_requests: int = Field(description="requests in the trace")
    num_instances: int = Field(description="instances of the simulated cluster")
    rate_per_s: float = Field(description="Poisson arrival rate of the trace, requests per simulated second")
    hold_kv_headroom: float | None = Field(
        description="admission control's KV headroom (fraction of an instance's cache); None = off"
    )
    repeats: int = Field(description="episodes timed per mode; the walls are the fastest of them")
    decisions: int = Field(description="env steps in one episode (agent decisions; held ticks excluded)")
    env_wall_s: float = Field(description="wall seconds of one env episode, reset to terminal step")
    replay_wall_s: float = Field(description="wall seconds of one simulate call on the same trace")
    env_decisions_per_s: float = Field(description="decisions / env_wall_s")
    replay_requests_per_s: float = Field(description="num_requests / replay_wall_s")
    overhead: float = Field(description="env_wall_s / replay_wall_s: the env is this many times slower")
    overhead_cpu: float = Field(
        description="the same ratio in CPU seconds of this process (steadier than wall on a shared machine)"
    )
    observation_path: str = Field(
        description="the env's observation path: compiled (training.rl.kernel) or python"
    )
    observe_us: float = Field(
        description="mean microseconds per decision of the env's observation on its path (RouterEnv."
        "observation: snapshot, mask and observation)"
    )
    snapshot_us: float = Field(
        description="mean microseconds per decision in the pure-Python SnapshotBuilder.build (the twin)"
    )
    encode_us: float = Field(
        description="mean microseconds per decision in the pure-Python encode_observation"
    )
    held_requests: int = Field(description="requests held at the router at least one decision tick")
    mean_router_wait_s: float = Field(description="mean simulated seconds a request waited at the router")
    mean_e2e_s: float = Field(description="mean simulated end-to-end latency, seconds (env episode)")
    identical_results: bool = Field(description="the env's per-request E2E equals simulate's exactly")
    max_rel_diff_e2e: float = Field(description="max |env - simulate| / simulate over per-request E2E")


def next_valid(mask: np.ndarray, start: int) -> int:
    """The first valid instance at or after ``start`` in cyclic order; ``m`` (DELAY) when none is.

    ``mask`` is ``RouterEnv.action_masks()`` (m instances, then DELAY). The same choice as the
    registry's ``round_robin`` (``training.routing.baselines.RoundRobin.route``) when its pointer is at
    ``start`` and ``accepting`` is the valid instances.
    """
    m = len(mask) - 1
    for k in range(m):
        i = (start + k) % m
        if mask[i]:
            return i
    return m


def _run_env(env: RouterEnv, trace: list[Request]) -> tuple[SimResult, int]:
    """One episode of the round-robin agent: the replay's result and the number of steps."""
    m = env.obs_spec.num_instances
    env.reset(options={"requests": trace})
    pointer, steps, done = 0, 0, False
    while not done:
        action = next_valid(env.action_masks(), pointer)
        if action < m:
            pointer = (action + 1) % m
        _, _, done, _, _ = env.step(action)
        steps += 1
    assert env.last_result is not None  # set by the terminal step
    return env.last_result, steps


def _time_observation(env: RouterEnv, trace: list[Request]) -> tuple[float, float, float, int]:
    """Wall seconds spent in the env's observation on its path (``RouterEnv.observation``), and in the
    pure-Python snapshot builder and encoder apart, over one replay of ``trace`` answered like
    ``_run_env`` (decisions the env would skip under admission control skipped too), and the number
    of decisions timed. Uses the env's cluster, latency model and predictor; the timer costs ~0.1 us
    per call."""
    m, spec = env.obs_spec.num_instances, env.obs_spec
    hold = None if spec.hold_kv_headroom is None else AdmissionMemo(spec.block_size, spec.hold_kv_headroom)
    gen = replay(trace, env.cluster, env.sampler.latency_model, env.sampler.predictor, router_name="bench")
    clock = time.perf_counter
    observe_s = build_s = encode_s = 0.0
    pointer = n = 0
    try:
        rv, cv = next(gen)
        while True:
            held = None if hold is None else hold.hold(cv, rv.prompt_tokens)
            if held is not None:  # answered by the env itself (``RouterEnv._skip_holds``), untimed
                rv, cv = gen.send(held)
                continue
            t0 = clock()
            env.observation(rv, cv)
            t1 = clock()
            snap = env.builder.build(rv, cv).snapshot
            t2 = clock()
            encode_observation(snap, spec)
            t3 = clock()
            observe_s += t1 - t0
            build_s += t2 - t1
            encode_s += t3 - t2
            n += 1
            action = next_valid(action_mask(snap, spec), pointer)
            if action < m:
                pointer = (action + 1) % m
            rv, cv = gen.send(DELAY if action == m else action)
    except StopIteration:
        pass
    return observe_s, build_s, encode_s, n


def run_env_benchmark(
    num_requests: int = 2000,
    rate_per_s: float = 20.0,
    seed: int = 0,
    hold_kv_headroom: float | None = None,
    repeats: int = 1,
) -> EnvBenchResult:
    """Time ``RouterEnv`` and ``simulate`` on the same trace with the same round-robin choices.

    Args:
        num_requests: requests in the seeded trace.
        rate_per_s: their Poisson arrival rate (20 req/s overloads 4 V100s: queues grow throughout).
        seed: the trace's seed.
        hold_kv_headroom: admission control in both modes (``ObsSpec.hold_kv_headroom`` for the env,
            ``HoldForHeadroom`` for the baseline), a fraction in [0, 1); None = off.
        repeats: episodes per mode; the fastest wall of each mode is reported.

    Raises:
        ValueError: ``num_requests`` or ``repeats`` below 1, or a headroom outside [0, 1).
    """
    if num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if hold_kv_headroom is not None and not 0.0 <= hold_kv_headroom < 1.0:
        raise ValueError(f"hold_kv_headroom must be in [0, 1) or None, got {hold_kv_headroom}")
    trace = conversation_trace(num_requests, rate_per_s, seed)
    cluster = ClusterConfig(
        num_instances=NUM_INSTANCES, instance=default_instance_config(PAPER_PROFILE), request_stats=True
    )
    latency = load_latency_model(PAPER_PROFILE)
    predictor = OraclePredictor()
    env = RouterEnv(
        EpisodeSampler(sample=lambda s: trace, cluster=cluster, latency_model=latency, predictor=predictor),
        spec=ObsSpec(num_instances=NUM_INSTANCES, hold_kv_headroom=hold_kv_headroom),
    )

    def baseline() -> Router:
        round_robin = get_router("round_robin", RouterContext(num_instances=NUM_INSTANCES))
        if hold_kv_headroom is None:
            return round_robin
        return HoldForHeadroom(round_robin, cluster.instance.block_size, hold_kv_headroom)

    _run_env(env, trace[: min(len(trace), 50)])  # untimed: loads (or compiles) the numba kernel once
    env_wall = replay_wall = env_cpu = replay_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        env_result, decisions = _run_env(env, trace)
        env_wall = min(env_wall, time.perf_counter() - t0)
        env_cpu = min(env_cpu, time.process_time() - c0)
        router = baseline()
        t0, c0 = time.perf_counter(), time.process_time()
        ref = simulate(trace, router, cluster, latency, predictor, seed=seed)
        replay_wall = min(replay_wall, time.perf_counter() - t0)
        replay_cpu = min(replay_cpu, time.process_time() - c0)
    observe_s, build_s, encode_s, timed = _time_observation(env, trace)
    env.close()

    rel = np.abs(env_result.e2e_s - ref.e2e_s) / np.maximum(ref.e2e_s, 1e-12)
    return EnvBenchResult(
        num_requests=num_requests,
        num_instances=NUM_INSTANCES,
        rate_per_s=rate_per_s,
        hold_kv_headroom=hold_kv_headroom,
        repeats=repeats,
        decisions=decisions,
        env_wall_s=env_wall,
        replay_wall_s=replay_wall,
        env_decisions_per_s=decisions / env_wall,
        replay_requests_per_s=num_requests / replay_wall,
        overhead=env_wall / replay_wall,
        overhead_cpu=env_cpu / replay_cpu,
        observation_path=env.observation_path,
        observe_us=observe_s / timed * 1e6,
        snapshot_us=build_s / timed * 1e6,
        encode_us=encode_s / timed * 1e6,
        held_requests=int(np.count_nonzero(env_result.router_wait_s > 0)),
        mean_router_wait_s=float(np.mean(env_result.router_wait_s)),
        mean_e2e_s=float(np.mean(env_result.e2e_s)),
        identical_results=bool(np.array_equal(env_result.e2e_s, ref.e2e_s)),
        max_rel_diff_e2e=float(np.max(rel)),
    )
