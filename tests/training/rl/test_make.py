"""``gymnasium.make("loadwise/Router-v0")`` with no argument: the default training run's env (issue 19).

Before: ``RouterEnv.__init__() missing 1 required positional argument: 'sampler'``; every registered
gymnasium env makes with its id alone. The entry point is ``training.rl.config.make_router_env``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import training.rl.env  # noqa: F401  (registers loadwise/Router-v0)
from training.rl.config import RouterTrainConfig
from training.rl.env import ROUTER_ENV_ID, RouterEnv
from training.rl.policy_serving import ObsSpec
from training.rl.rewards import RewardConfig


def test_make_with_no_argument_is_the_default_training_runs_env():
    """The one-liner: episodes from the main workload's TRAINING pool, with the reward and observation
    spec ``training.rl.train.train_router`` uses for ``RouterTrainConfig()``."""
    env = gym.make(ROUTER_ENV_ID)
    inner = env.unwrapped
    assert isinstance(inner, RouterEnv)
    default = RouterTrainConfig()
    assert inner.sampler.name == "main:train"  # never the held-out pool
    assert inner.cluster.num_instances == default.num_instances
    assert inner.obs_spec == default.obs_spec()
    assert inner.reward_config == default.reward
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(int(np.flatnonzero(inner.action_masks())[0]))
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        assert not terminated
        assert not truncated
    check_env(inner, skip_render_check=True)


def test_make_with_a_config_builds_that_setting(tiny_sampler):
    """``config=`` gives a training setting's env; ``sampler=`` still works as before, alone or with a
    config (which then gives the reward and spec)."""
    config = RouterTrainConfig(num_instances=2, episode_requests=30, rate_rps=5.0, variant="aware")
    env = gym.make(ROUTER_ENV_ID, config=config).unwrapped
    assert (env.sampler.name, env.cluster.num_instances) == ("main:train", 2)
    assert env.reward_config.variant == "aware"
    assert len(env.sampler.sample(0)) == 30

    plain = gym.make(ROUTER_ENV_ID, sampler=tiny_sampler).unwrapped
    assert plain.sampler is tiny_sampler
    assert plain.reward_config == RewardConfig()
    assert plain.obs_spec == ObsSpec(num_instances=2)
    both = gym.make(ROUTER_ENV_ID, sampler=tiny_sampler, config=config).unwrapped
    assert both.sampler is tiny_sampler
    assert both.obs_spec == config.obs_spec()
