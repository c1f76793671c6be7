"""RouterEnv: checkers, determinism over every registered env id, masks, reward components, and that
driving the env is the same replay as ``simulate`` with a router."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest

from tests.training.rl.samples import tiny_requests
from training.rl.env import ENV_IDS, ROUTER_ENV_ID, RouterEnv
from training.rl.policy_serving import ObsSpec
from training.rl.rewards import RewardConfig, guided_gamma, mixing_weight
from training.simulator import simulate
from training.simulator.interface import DELAY


def _env(sampler, **reward):
    return RouterEnv(sampler, RewardConfig(**reward), ObsSpec(num_instances=2, allow_delay=True))


def test_gymnasium_check_env_passes_without_warnings(tiny_sampler):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(_env(tiny_sampler), skip_render_check=True)


def test_sb3_check_env_passes_without_warnings(tiny_sampler):
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(_env(tiny_sampler), warn=True)


def _rollout(env, seed: int, n: int = 60) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    seen, rewards = [obs], []
    for _ in range(n):
        valid = np.flatnonzero(env.unwrapped.action_masks())
        obs, r, term, trunc, _ = env.step(int(rng.choice(valid)))
        seen.append(obs)
        rewards.append(r)
        if term or trunc:
            obs, _ = env.reset()
    return seen, rewards


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_is_deterministic_for_a_seed(env_id, tiny_sampler):
    a = gym.make(env_id, sampler=tiny_sampler)
    b = gym.make(env_id, sampler=tiny_sampler)
    oa, ra = _rollout(a, 3)
    ob, rb = _rollout(b, 3)
    assert ra == rb
    assert all(np.array_equal(x, y) for x, y in zip(oa, ob, strict=True))
    _, rc = _rollout(a, 4)
    assert rc != ra  # another seed samples another window


def test_obs_in_space_and_mask_first(tiny_sampler):
    env = _env(tiny_sampler)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs.shape == (env.obs_spec.obs_dim,)
    np.testing.assert_array_equal(obs[: env.obs_spec.n_actions] > 0.5, env.action_masks())


class _Alternate:
    """Instance 0, 1, 0, 1, ... (the same answers whether the env or ``simulate`` asks)."""

    name = "alternate"

    def __init__(self) -> None:
        self.k = 0

    def reset(self, num_instances: int, seed: int) -> None:
        self.k = 0

    def route(self, request, cluster) -> int:
        self.k += 1
        return (self.k - 1) % 2


def test_env_replay_equals_simulate_with_same_router(tiny_sampler):
    requests = tiny_requests(5)
    env = _env(tiny_sampler)
    env.reset(options={"requests": requests})
    router = _Alternate()
    done = False
    while not done:
        _, _, done, _, _ = env.step(router.route(None, None))
    ref = simulate(
        requests, _Alternate(), tiny_sampler.cluster, tiny_sampler.latency_model, tiny_sampler.predictor
    )
    assert env.last_result is not None
    np.testing.assert_array_equal(env.last_result.e2e_s, ref.e2e_s)
    np.testing.assert_array_equal(env.last_result.instance, ref.instance)


def test_reward_components_and_completion_total(tiny_sampler):
    requests = tiny_requests(6)
    env = _env(tiny_sampler, variant="aware", scale=1.0)
    env.reset(options={"requests": requests})
    totals: dict[str, float] = {}
    done = False
    k = 0
    while not done:
        _, r, done, _, info = env.step(k % 2)
        k += 1
        parts = {key: v for key, v in info.items() if key.startswith("reward_")}
        assert set(parts) == {"reward_in_system", "reward_completion", "reward_mixing", "reward_drain"}
        assert math.isclose(r, sum(parts.values()), rel_tol=1e-9, abs_tol=1e-9)
        for key, v in parts.items():
            totals[key] = totals.get(key, 0.0) + v
    assert totals["reward_completion"] == pytest.approx(60.0 * len(requests))
    assert totals["reward_in_system"] < 0
    assert totals["reward_mixing"] < 0
    assert totals["reward_drain"] == 0.0


def test_baseline_variant_has_no_mixing_term(tiny_sampler):
    env = _env(tiny_sampler, variant="baseline")
    env.reset(seed=1)
    for _ in range(20):
        _, _, done, _, info = env.step(0)
        assert info["reward_mixing"] == 0.0
        if done:
            break


def test_guided_weight_decays_per_episode_and_gamma_rises():
    cfg = RewardConfig(variant="guided")
    assert mixing_weight(cfg, 0) == 1.0
    assert mixing_weight(cfg, 4) == pytest.approx(math.exp(-2.0))
    assert mixing_weight(RewardConfig(variant="aware"), 50) == 1.0
    assert mixing_weight(RewardConfig(variant="baseline"), 0) == 0.0
    assert guided_gamma(0.99, 0.9, 1.0) == pytest.approx(0.9)
    assert guided_gamma(0.99, 0.9, 0.0) == pytest.approx(0.99)


def test_guided_decay_follows_the_trainers_episode_count(tiny_sampler):
    env = _env(tiny_sampler, variant="guided")
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["mixing_weight"] == 1.0
    env.set_guidance_episode(1)
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["mixing_weight"] == pytest.approx(math.exp(-0.5))


def test_delay_masked_after_max_delay_and_invalid_actions_replaced(tiny_sampler):
    env = RouterEnv(
        tiny_sampler, RewardConfig(), ObsSpec(num_instances=2, allow_delay=True, max_delay_s=0.05)
    )
    env.reset(seed=2)
    first = env._request.request_id
    assert env.action_masks()[2]
    delays = 0
    for _ in range(200):  # hold the first request; place every other one on instance 0
        if env._request.request_id != first:
            env.step(0)
        elif env.action_masks()[2]:
            env.step(2)
            delays += 1
        else:
            break
    assert delays >= 2  # 0.05 s of 0.02 s ticks
    assert env._request.request_id == first
    assert env._request.waited_s >= 0.05
    _, _, _, _, info = env.step(2)  # DELAY no longer valid: replaced by an instance
    assert info["invalid_action"]
    assert info["action"] in (0, 1)


def test_no_delay_action_when_disabled(tiny_sampler):
    env = RouterEnv(tiny_sampler, RewardConfig(), ObsSpec(num_instances=2, allow_delay=False))
    env.reset(seed=0)
    assert not env.action_masks()[2]
    assert DELAY == -1


def test_registered_id():
    assert ROUTER_ENV_ID in gym.registry
    assert ROUTER_ENV_ID.endswith("-v0")
