"""Gymnasium environments over the simulator (the RL router's MDP), registered with versioned ids.

``gymnasium.make("loadwise/Router-v0", sampler=EpisodeSampler(...), reward=..., spec=...)`` builds
``RouterEnv``; ``ENV_IDS`` lists every registered id (the contract tests run over it).
"""

from __future__ import annotations

import gymnasium as gym

from training.envs.rewards import RewardConfig, Variant
from training.envs.router_env import EpisodeSampler, RouterEnv

ROUTER_ENV_ID = "loadwise/Router-v0"
ENV_IDS = (ROUTER_ENV_ID,)

if ROUTER_ENV_ID not in gym.registry:
    gym.register(id=ROUTER_ENV_ID, entry_point="training.envs.router_env:RouterEnv")

__all__ = ["ENV_IDS", "ROUTER_ENV_ID", "EpisodeSampler", "RewardConfig", "RouterEnv", "Variant"]
