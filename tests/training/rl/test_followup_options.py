"""The follow-up options (docs/rl_router.md, "Follow-up"): the ``latency`` reward objective, n-step
DQN returns and a frozen heuristic prior. Tiny nets, a few hundred steps."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.rl.samples import TINY
from training.rl.config import RouterTrainConfig
from training.rl.env import RouterEnv
from training.rl.policy_serving import load_policy
from training.rl.rewards import RewardConfig, drain_reward, effective_relief, step_reward
from training.rl.train import train_router


def test_latency_objective_is_requests_in_system_times_time():
    paper = RewardConfig(variant="baseline")
    lat = RewardConfig(variant="baseline", objective="latency")
    assert effective_relief(paper) == 0.5
    assert effective_relief(lat) == 0.0
    args = {"ticks": 2.5, "pending_weight": 7.0, "completed": 3, "mixing_penalty_s": 0.4, "tick_s": 0.02}
    parts = step_reward(lat, episode=0, **args)
    assert parts == {"in_system": pytest.approx(-1e-3 * 7.0 * 2.5), "completion": 0.0, "mixing": 0.0}
    assert step_reward(paper, episode=0, **args)["completion"] == pytest.approx(1e-3 * 60 * 3)
    # drain: every remaining request-second counts in full
    assert drain_reward(lat, remaining_request_s=2.0, tick_s=0.02) == pytest.approx(-1e-3 * 100.0)
    # aware + latency keeps the mixing shaping term
    aware = RewardConfig(variant="aware", objective="latency")
    assert step_reward(aware, episode=0, **args)["mixing"] == pytest.approx(-1e-3 * 0.4 / 0.02)


def test_latency_episode_return_tracks_total_latency(tiny_sampler):
    """Sum of the latency reward (with drain) ~ -(sum of E2E) / tick x scale: Little's law, up to the
    per-interval sampling of the in-system count."""
    cfg = RewardConfig(variant="baseline", objective="latency", drain=True)
    env = RouterEnv(tiny_sampler, cfg)
    env.reset(seed=3)
    total, done, k = 0.0, False, 0
    while not done:
        valid = np.flatnonzero(env.action_masks()[:-1])
        _obs, r, done, _, _ = env.step(int(valid[k % len(valid)]))
        total += r
        k += 1
    assert env.last_result is not None
    exact = -1e-3 * float(np.sum(env.last_result.e2e_s)) / env.tick_s
    assert total == pytest.approx(exact, rel=0.25)


def test_frozen_prior_and_n_step_returns_train(tiny_sampler, tmp_path):
    cfg = RouterTrainConfig(
        variant="baseline",
        reward=RewardConfig(objective="latency"),
        freeze_prior=True,
        n_step_returns=5,
        gamma=0.995,
        **TINY,
    )
    assert cfg.reward.variant == "baseline"
    assert cfg.reward.objective == "latency"
    trained = train_router(cfg, tiny_sampler, tmp_path, progress=False)
    final = load_policy(trained.policy_dir.parent / "policy_final")
    assert final.prior == pytest.approx(cfg.heuristic_prior)
    assert RouterTrainConfig.model_validate_json((trained.policy_dir / "config.json").read_text()) == cfg
