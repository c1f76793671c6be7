"""``RouterEnv``: the simulator as a gymnasium MDP (one step = one routing decision), registered as
``loadwise/Router-v0``.

Who calls this: stable-baselines3 training (``training.rl.train``), tests, and anyone through
``gymnasium.make("loadwise/Router-v0")`` once this module is imported (``ENV_IDS`` lists every
registered id; the contract tests run over it). With no argument ``make`` gives the default training
run's env (the ``main`` workload's training pool); ``sampler=`` / ``config=`` choose others
(``training.rl.config.make_router_env``, the registered entry point). Episodes come from an
``EpisodeSampler`` (``training.workloads.episodes``). A thin adapter over
``training.simulator.replay``: the replay generator yields a decision point ``(RequestView,
ClusterView)`` whenever a request at the head of the router queue needs placing (at its arrival, and
at every decision tick while it is held after DELAY); ticks with nothing to decide never reach the
agent. The env answers with the chosen instance or DELAY. Jain et al. (arXiv 2408.13510, Section 5).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from training.rl.observation import DecisionState, SnapshotBuilder
from training.rl.policy_serving import OBS_HIGH, ObsSpec, action_mask, encode_observation
from training.rl.rewards import RewardConfig, drain_reward, effective_relief, mixing_weight, step_reward
from training.routing.admission_rule import AdmissionMemo
from training.simulator.engine import replay
from training.simulator.interface import DELAY, ClusterView, RequestView
from training.simulator.result import SimResult
from training.workloads.episodes import EpisodeSampler

if TYPE_CHECKING:
    from training.rl.kernel import CompiledObserver

ROUTER_ENV_ID = "loadwise/Router-v0"
ENV_IDS = (ROUTER_ENV_ID,)
KERNEL_ENV_VAR = "LOADWISE_RL_KERNEL"
"""Set to ``0`` to run every env on the pure-Python observation path (``RouterEnv(compiled=None)``)."""


def use_kernel(compiled: bool | None = None) -> bool:
    """Whether a ``RouterEnv`` builds its observations with the compiled kernel (``training.rl.kernel``):
    ``compiled`` when given, else unless the environment variable ``LOADWISE_RL_KERNEL`` is ``0``."""
    if compiled is not None:
        return compiled
    return os.environ.get(KERNEL_ENV_VAR, "1").strip() != "0"


class RouterEnv(gym.Env[np.ndarray, np.int64]):
    """Route one request per step onto one of m instances, or DELAY it by one decision tick.

    ## Action
    ``Discrete(m + 1)``: ``0..m-1`` = place the request on that instance; ``m`` = DELAY (hold it at
    the router until the next decision tick, ``ClusterConfig.decision_interval_s``, 0.02 s default).
    ``action_masks()`` (MaskablePPO) gives the valid ones: accepting instances, and DELAY while the
    request has waited less than ``spec.max_delay_s`` (always when no instance accepts). An invalid
    action is replaced by the accepting instance with the least predicted completion time (DELAY if
    none) and flagged ``info["invalid_action"]``.

    ## Observation
    ``Box(0, 10, (obs_dim,), float32)``, the paper's state, encoded by
    ``training.rl.policy_serving.encode_observation`` (layout there). Normalised with
    ``log1p(x / scale)``
    or fractions, clipped at 10:

    | part | entries | paper? |
    |---|---|---|
    | action mask | m accepting flags + "DELAY allowed" | addition (masks from the observation) |
    | router queue length | 1, capped at ``spec.queue_cap`` and divided by it | paper |
    | request prompt tokens | bucket one-hot (``spec.prompt_edges``) + squashed length | paper |
    | request predicted decode | bucket one-hot (``spec.decode_edges``) + squashed length | paper |
    | time held at the router | 1, fraction of ``spec.max_delay_s`` | addition |
    | per instance: requests in prefill / in decode per (prompt bucket, decode bucket) | 2 x Bp x Bd | paper |
    | per instance: running, waiting counts | 2 | paper (aggregate) |
    | per instance: KV usage and free capacity fractions | 2 | paper (free capacity) |
    | per instance: outstanding prompt / predicted decode tokens | 2 | addition |
    | per instance: estimated time to its earliest completion | 1 | paper |
    | per instance: predicted E2E of this request there (latency model) | 1 | addition |
    | per instance: mixing penalty of placing it there (alpha 0.5) | 1 | addition (heuristic in the state) |
    | per instance: completion and penalty minus the best instance's, / 10 s | 2 | addition (prior inputs) |

    ## Reward
    ``training.rl.rewards``: in-system penalty shrinking with decode progress, +60 per finished
    request, the mixing penalty (variant ``baseline``: off; ``aware``: on; ``guided``: weight
    ``e^(-0.5 k)`` in episode ``k``), an optional terminal drain term. Components in
    ``info["reward_<name>"]``.

    ## Episode end
    ``terminated`` when the replay of the sampled window has finished (every request served);
    never truncated. An episode = ``sampler.sample(seed)`` with a seed drawn from ``self.np_random``.
    ``reset(options={"requests": [...]})`` replays a given trace instead.

    ## Observation path
    ``compiled`` (default: ``use_kernel``, on unless ``LOADWISE_RL_KERNEL=0``): snapshot, mask and
    observation come from one numba kernel (``training.rl.kernel.CompiledObserver``, issue 16), bit-equal
    to the pure-Python ``SnapshotBuilder`` + ``action_mask`` + ``encode_observation`` (its twin, used when
    ``compiled=False`` or the latency model is not the linear one; ``observation_path`` says which).

    ## Version history
    - v0: initial version (issue 5). ``gymnasium.make`` with no argument (the default training
      run's sampler, reward and spec) since issue 19; the dynamics are unchanged.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium declares it an instance attribute)

    def __init__(
        self,
        sampler: EpisodeSampler,
        reward: RewardConfig | None = None,
        spec: ObsSpec | None = None,
        compiled: bool | None = None,
    ) -> None:
        self.sampler = sampler
        self.cluster = replace(sampler.cluster, request_stats=True)
        self.reward_config = reward or RewardConfig()
        self.obs_spec = spec or ObsSpec(num_instances=self.cluster.num_instances)
        if self.obs_spec.num_instances != self.cluster.num_instances:
            raise ValueError("spec.num_instances must equal the cluster's num_instances")
        icfg = self.cluster.instance
        self.obs_spec.check_block_size(icfg.block_size)
        observer: dict[str, Any] = {
            "block_size": icfg.block_size,
            "max_batch_size": icfg.max_batch_size,
            "alpha": self.reward_config.mixing_alpha,
            "progress_relief": effective_relief(self.reward_config),
        }  # the same settings for both paths
        self.builder = SnapshotBuilder(self.obs_spec, sampler.latency_model, **observer)
        self._compiled: CompiledObserver | None = None
        if use_kernel(compiled):
            from training.rl import kernel  # numba: imported only by envs that use it

            if kernel.supports(sampler.latency_model):
                self._compiled = kernel.CompiledObserver(self.obs_spec, sampler.latency_model, **observer)
        self.observation_path = "python" if self._compiled is None else "compiled"
        """Which observation path this env runs (``compiled``: ``training.rl.kernel``)."""
        self.tick_s = self.cluster.decision_interval_s
        self._hold = (
            None
            if self.obs_spec.hold_kv_headroom is None
            else AdmissionMemo(icfg.block_size, self.obs_spec.hold_kv_headroom)
        )
        self.action_space = spaces.Discrete(self.obs_spec.n_actions)
        self.observation_space = spaces.Box(0.0, OBS_HIGH, (self.obs_spec.obs_dim,), np.float32)
        self.guidance_episode = 0
        """The ``k`` of the guided variant's decay ``e^(-0.5 k)``: set by the trainer (episodes
        finished so far) through ``set_guidance_episode``, never by ``reset``, so that an episode is a
        function of its seed alone (gymnasium's determinism check)."""
        self.last_result: SimResult | None = None
        self._gen: Generator[tuple[RequestView, ClusterView], int, SimResult] | None = None
        self._state: DecisionState | None = None
        self._request: RequestView | None = None
        self._obs = np.zeros(self.obs_spec.obs_dim, dtype=np.float32)
        self._mask = np.ones(self.obs_spec.n_actions, dtype=bool)
        self._placed = 0
        """Requests placed on an instance so far this episode."""
        self._finished = 0
        self._n_requests = 0
        self._now = 0.0

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "requests" in options:
            requests = list(options["requests"])
        else:
            requests = list(self.sampler.sample(int(self.np_random.integers(2**31 - 1))))
        if not requests:
            raise ValueError("an episode needs at least one request")
        if self._gen is not None:
            self._gen.close()
        if self._hold is not None:
            self._hold.clear()
        self._gen = replay(
            requests,
            self.cluster,
            self.sampler.latency_model,
            self.sampler.predictor,
            router_name="RouterEnv",
        )
        self._n_requests = len(requests)
        self._placed = 0
        self._finished = 0
        self.last_result = None
        rv, cv = self._skip_holds(*next(self._gen))
        self._observe(rv, cv)
        return self._obs.copy(), {"now_s": self._now, "guidance_episode": self.guidance_episode}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._gen is None or self._state is None:
            raise RuntimeError("call reset() before step()")
        m = self.obs_spec.num_instances
        a = int(action)
        invalid = not (0 <= a <= m and self._mask[a])
        if invalid:
            a = self._fallback()
        choice = DELAY if a == m else a
        penalty_s = 0.0 if choice == DELAY else float(self._state.snapshot.instances[choice, 9])
        if choice != DELAY:
            self._placed += 1
        t0 = self._now
        cfg = self.reward_config
        info: dict[str, Any] = {"invalid_action": invalid, "action": a}
        info["mixing_weight"] = mixing_weight(cfg, self.guidance_episode)
        try:
            rv, cv = self._skip_holds(*self._gen.send(choice))
        except StopIteration as done:
            result: SimResult = done.value
            self.last_result = result
            self._gen = None
            remaining = float(np.maximum(result.finish_s - t0, 0.0).sum())
            parts = step_reward(
                cfg,
                ticks=0.0,
                pending_weight=0.0,
                completed=self._n_requests - self._finished,
                mixing_penalty_s=penalty_s,
                tick_s=self.tick_s,
                episode=self.guidance_episode,
            )
            parts["drain"] = (
                drain_reward(cfg, remaining_request_s=remaining, tick_s=self.tick_s) if cfg.drain else 0.0
            )
            info.update({f"reward_{k}": v for k, v in parts.items()})
            info["now_s"] = result.sim_time_s
            info["episode_mean_e2e_s"] = float(np.mean(result.e2e_s))
            info["episode_requests"] = self._n_requests
            self._state = None
            return self._obs.copy(), float(sum(parts.values())), True, False, info
        prev_finished = self._finished
        self._observe(rv, cv)
        st = self._state
        assert st is not None
        held = cv.router_queue_len + (1 if rv.waited_s > 0 else 0)
        parts = step_reward(
            cfg,
            ticks=(self._now - t0) / self.tick_s,
            pending_weight=float(np.add.reduce(st.pending_weight)) + held,
            completed=self._finished - prev_finished,
            mixing_penalty_s=penalty_s,
            tick_s=self.tick_s,
            episode=self.guidance_episode,
        )
        parts["drain"] = 0.0
        info.update({f"reward_{k}": v for k, v in parts.items()})
        info["now_s"] = self._now
        return self._obs.copy(), float(sum(parts.values())), False, False, info

    def set_guidance_episode(self, k: int) -> None:
        """Called by the trainer after each finished episode (``k`` = episodes finished)."""
        self.guidance_episode = int(k)

    def action_masks(self) -> np.ndarray:
        """Valid actions now (bool, m + 1): accepting instances, then DELAY (sb3-contrib protocol)."""
        return self._mask.copy()

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        super().close()

    # ------------------------------------------------------------------ internals
    def observation(self, rv: RequestView, cv: ClusterView) -> tuple[DecisionState, np.ndarray, np.ndarray]:
        """The decision's state, action mask (bool, m + 1) and observation (float32) on this env's
        path (``observation_path``: the kernel, else ``SnapshotBuilder`` + ``action_mask`` +
        ``encode_observation``; the same values either way). Who calls this: ``_observe`` at every
        decision, and ``loadwise bench env`` (``observe_us``). State: only the path's caches."""
        if self._compiled is not None:
            return self._compiled.observe(rv, cv)
        st = self.builder.build(rv, cv)
        mask = action_mask(st.snapshot, self.obs_spec)
        return st, mask, encode_observation(st.snapshot, self.obs_spec, mask)

    def _observe(self, rv: RequestView, cv: ClusterView) -> None:
        st, self._mask, self._obs = self.observation(rv, cv)
        self._state = st
        self._request = rv
        self._now = cv.now_s
        self._finished = self._placed - int(np.add.reduce(st.in_system))

    def _skip_holds(self, rv: RequestView, cv: ClusterView) -> tuple[RequestView, ClusterView]:
        """Under admission control (``spec.hold_kv_headroom``) a decision where no instance can start
        the request has DELAY as its only valid action: answer it here, tick after tick, without the
        agent (the time waited counts in the next step's reward). The check reads the views
        (``startable_instances`` through an ``AdmissionMemo``, the rule ``policy_serving.startable``
        applies to the snapshot), so held ticks cost no snapshot."""
        if self._hold is None:
            return rv, cv
        while (hold := self._hold.hold(cv, rv.prompt_tokens)) is not None:
            assert self._gen is not None
            rv, cv = self._gen.send(hold)  # a DELAY the replay re-offers only once some instance has room
        return rv, cv

    def _fallback(self) -> int:
        """The accepting instance with the least predicted completion time, else DELAY."""
        assert self._state is not None
        inst = self._state.snapshot.instances
        ok = np.flatnonzero(inst[:, 0] > 0.5)
        if len(ok) == 0:
            return self.obs_spec.num_instances
        return int(ok[np.argmin(inst[ok, 8])])


if ROUTER_ENV_ID not in gym.registry:  # by import path: config comes after env in the import order
    gym.register(id=ROUTER_ENV_ID, entry_point="training.rl.config:make_router_env")
