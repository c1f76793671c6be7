"""``RouterEnv``: the simulator as a gymnasium MDP (one step = one routing decision), registered as
``loadwise/Router-v0``.

Who calls this: stable-baselines3 training (``training.rl.train``), tests, and anyone through
``gymnasium.make("loadwise/Router-v0")`` once this module is imported (``ENV_IDS`` lists every
registered id; the contract tests run over it). With no argument ``make`` gives the default training
run's env (the ``main`` workload's training pool); ``sampler=`` / ``config=`` choose others
(``training.rl.config.make_router_env``, the registered entry point). Episodes come from an
``EpisodeSampler`` (``training.workloads.episodes``). A thin adapter over the simulator's
``ReplayState`` (what ``training.simulator.replay`` drives as a generator; called directly, issue 16):
``next_decision`` gives a decision point ``(RequestView, ClusterView)`` whenever a request at the head
of the router queue needs placing (at its arrival, and at every decision tick while it is held after
DELAY), ``decide`` answers it with the chosen instance or DELAY; ticks with nothing to decide never
reach the agent. Jain et al. (arXiv 2408.13510, Section 5).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from training.rl.observation import DecisionState, SnapshotBuilder
from training.rl.policy_serving import OBS_HIGH, ObsSpec, action_mask, encode_observation
from training.rl.rewards import RewardConfig, drain_reward, effective_relief, mixing_weight, step_reward
from training.routing.admission_rule import AdmissionMemo
from training.simulator.engine import ReplayState
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
        self._replay: ReplayState | None = None
        """The episode's replay, driven one decision at a time (``next_decision`` / ``decide``)."""
        self._state: DecisionState | None = None
        self._request: RequestView | None = None
        self._obs = np.zeros(self.obs_spec.obs_dim, dtype=np.float32)
        self._mask = np.ones(self.obs_spec.n_actions, dtype=bool)
        self._m = self.obs_spec.num_instances
        cfg = self.reward_config
        self._c_in = -cfg.scale * cfg.in_system_penalty
        """``step_reward``'s in-system factor before the weight and the ticks (the same product)."""
        self._c_done = None if cfg.objective == "latency" else cfg.scale * cfg.completion_reward
        """``step_reward``'s completion factor before the count (None: the term is 0.0)."""
        self._mix_episode: int | None = None
        self._mix_terms = (0.0, 0.0)
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
        if self._hold is not None:
            self._hold.clear()
        self._replay = ReplayState(
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
        decision = self._next_decision()
        if decision is None:  # every request answered by the held ticks: cannot happen (one must be placed)
            raise RuntimeError("the replay ended before its first decision")
        self._observe(*decision)
        return self._obs.copy(), {"now_s": self._now, "guidance_episode": self.guidance_episode}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One routing decision (the class docstring): apply ``action``, run the replay to the next
        decision, return (observation, reward, terminated, False, info). The hot path of training:
        the reward's constants are cached per guidance episode (``_reward_terms``) and the info is
        one dict literal, with the values and the key order ``step_reward`` gives."""
        st = self._state
        state = self._replay
        if state is None or st is None:
            raise RuntimeError("call reset() before step()")
        m = self._m
        a = int(action)
        invalid = not (0 <= a <= m and self._mask[a])
        if invalid:
            a = self._fallback()
        if a == m:
            choice, penalty_s = DELAY, 0.0
        else:
            choice, penalty_s = a, float(st.snapshot.instances[a, 9])
            self._placed += 1
        t0 = self._now
        weight, c_mix = self._reward_terms()
        state.decide(choice)
        decision = self._next_decision()
        if decision is None:
            return self._end(a, invalid, weight, penalty_s, t0)
        rv, cv = decision
        prev_finished = self._finished
        pending = self._observe(rv, cv) + (cv.router_queue_len + (1 if rv.waited_s > 0 else 0))
        # step_reward's three terms, its operations in its order (tests/training/rl/test_env_reward.py)
        r_in = self._c_in * pending * ((self._now - t0) / self.tick_s)
        r_done = self._c_done * (self._finished - prev_finished) if self._c_done is not None else 0.0
        r_mix = c_mix * penalty_s / self.tick_s
        info = {
            "invalid_action": invalid,
            "action": a,
            "mixing_weight": weight,
            "reward_in_system": r_in,
            "reward_completion": r_done,
            "reward_mixing": r_mix,
            "reward_drain": 0.0,
            "now_s": self._now,
        }
        return self._obs.copy(), float(sum((r_in, r_done, r_mix, 0.0))), False, False, info

    def set_guidance_episode(self, k: int) -> None:
        """Called by the trainer after each finished episode (``k`` = episodes finished)."""
        self.guidance_episode = int(k)

    def action_masks(self) -> np.ndarray:
        """Valid actions now (bool, m + 1): accepting instances, then DELAY (sb3-contrib protocol)."""
        return self._mask.copy()

    def close(self) -> None:
        self._replay = None
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

    def _observe(self, rv: RequestView, cv: ClusterView) -> float:
        """Make the decision at ``(rv, cv)`` the current one (state, mask, observation, clock, requests
        finished) and return its pending weight summed over the instances (``np.add.reduce`` of
        ``DecisionState.pending_weight``, for the reward; the kernel sums it in the same order)."""
        c = self._compiled
        if c is not None:
            st, self._mask, self._obs = c.observe(rv, cv)
            weight, in_system = c.weight_sum, c.in_system_sum
        else:
            st, self._mask, self._obs = self.observation(rv, cv)
            weight, in_system = float(np.add.reduce(st.pending_weight)), int(np.add.reduce(st.in_system))
        self._state = st
        self._request = rv
        self._now = cv.now_s
        self._finished = self._placed - in_system
        return weight

    def _next_decision(self) -> tuple[RequestView, ClusterView] | None:
        """The replay's next decision for the agent (None when the replay is over). Under admission
        control (``spec.hold_kv_headroom``) a decision where no instance can start the request has
        DELAY as its only valid action: answered here, tick after tick, without the agent (the time
        waited counts in the next step's reward). The check reads the views (``startable_instances``
        through an ``AdmissionMemo``, the rule ``policy_serving.startable`` applies to the snapshot),
        so held ticks cost no snapshot."""
        state = self._replay
        assert state is not None
        decision = state.next_decision()
        memo = self._hold
        if memo is None:
            return decision
        while (
            decision is not None and (hold := memo.hold(decision[1], decision[0].prompt_tokens)) is not None
        ):
            state.decide(hold)  # a DELAY the replay re-offers only once some instance has room
            decision = state.next_decision()
        return decision

    def _reward_terms(self) -> tuple[float, float]:
        """(the mixing weight of the current guidance episode, ``-scale x`` that weight): computed
        once per guidance episode (``rewards.mixing_weight``)."""
        k = self.guidance_episode
        if k != self._mix_episode:
            w = mixing_weight(self.reward_config, k)
            self._mix_terms = (w, -self.reward_config.scale * w)
            self._mix_episode = k
        return self._mix_terms

    def _end(
        self, a: int, invalid: bool, weight: float, penalty_s: float, t0: float
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The terminal step: the replay is over after action ``a``. Reward from ``step_reward`` (no
        ticks, the requests still in the system count as completed) and the drain term; info adds
        the episode's mean E2E and size."""
        state = self._replay
        assert state is not None
        cfg = self.reward_config
        result = state.result
        self.last_result = result
        self._replay = None
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
        info: dict[str, Any] = {"invalid_action": invalid, "action": a, "mixing_weight": weight}
        info.update({f"reward_{k}": v for k, v in parts.items()})
        info["now_s"] = result.sim_time_s
        info["episode_mean_e2e_s"] = float(np.mean(result.e2e_s))
        info["episode_requests"] = self._n_requests
        self._state = None
        return self._obs.copy(), float(sum(parts.values())), True, False, info

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
