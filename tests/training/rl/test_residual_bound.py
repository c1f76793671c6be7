"""``RouterTrainConfig.residual_bound``: the slots Q-network's residual is squashed to c x tanh(r / c), a
trust region towards the heuristic prior (docs/rl_router.md, "Next steps"). Tiny nets, few steps."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tests.training.rl.samples import TINY
from training.rl.config import RouterTrainConfig
from training.rl.env import RouterEnv
from training.rl.policy_serving import PolicyNet, load_policy
from training.rl.train import export_policy, train_router

BOUND = 0.05


def _model_and_obs(tiny_sampler, bound):
    import torch as th

    from training.rl.train import make_model

    cfg = RouterTrainConfig(residual_bound=bound, **TINY)
    env = RouterEnv(tiny_sampler, cfg.reward, cfg.obs_spec())
    model = make_model(cfg, env)
    last = model.q_net.q_net[-1]
    with th.no_grad():  # a residual far larger than the bound, so the squashing is what is tested
        last.weight.mul_(1e4)
        last.bias.fill_(3.0)
    obs = np.stack([env.reset(seed=s)[0] for s in range(6)])
    return model, env, obs


def _scores(model, obs):
    """The Q-net's action scores with its bound, and the same net's scores without it."""
    import torch as th

    q_net = model.q_net
    with th.no_grad():
        t_obs = th.as_tensor(obs)
        bounded = q_net.action_scores(t_obs).numpy()
        bound, q_net.residual_bound = q_net.residual_bound, None
        unbounded = q_net.action_scores(t_obs).numpy()
        q_net.residual_bound = bound
    return bounded, unbounded


def test_bounded_residual_stays_within_bound(tiny_sampler):
    model, env, obs = _model_and_obs(tiny_sampler, BOUND)
    scores, unbounded = _scores(model, obs)
    prior = export_policy(model, "dqn", env)._prior_term(obs)
    assert np.all(np.abs(scores + prior) < BOUND + 1e-6)
    assert np.max(np.abs(unbounded + prior)) > 10 * BOUND  # the same net without the bound exceeds it


def test_numpy_export_matches_torch_with_bound(tiny_sampler, tmp_path):
    import torch as th

    model, env, obs = _model_and_obs(tiny_sampler, BOUND)
    policy = export_policy(model, "dqn", env)
    assert policy.residual_bound == BOUND
    with th.no_grad():
        t_obs = th.as_tensor(obs)
        ref = model.q_net.action_scores(t_obs).numpy()
        full = model.q_net(t_obs).numpy()
    np.testing.assert_allclose(policy.scores(obs), ref, rtol=1e-5, atol=1e-6)
    mask = obs[:, : env.obs_spec.n_actions] > 0.5
    np.testing.assert_array_equal(  # the dueling Q-net (what training acts on) and the export agree
        np.where(mask, full, -np.inf).argmax(1), np.where(mask, policy.scores(obs), -np.inf).argmax(1)
    )
    policy.save(tmp_path)
    loaded = load_policy(tmp_path)
    assert loaded.residual_bound == BOUND
    np.testing.assert_array_equal(loaded.scores(obs), policy.scores(obs))


def test_config_round_trip_and_validation():
    assert RouterTrainConfig().residual_bound is None
    cfg = RouterTrainConfig(residual_bound=0.2)
    assert RouterTrainConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValidationError):
        RouterTrainConfig(residual_bound=0.0)
    spec = cfg.obs_spec()
    layers = [(np.zeros((spec.obs_dim, spec.n_actions)), np.zeros(spec.n_actions))]
    with pytest.raises(ValueError, match="residual_bound"):
        PolicyNet(layers, "relu", spec, "mlp", residual_bound=0.2)


def test_training_with_bound_exports_it(tiny_sampler, tmp_path):
    cfg = RouterTrainConfig(residual_bound=BOUND, freeze_prior=True, **TINY)
    trained = train_router(cfg, tiny_sampler, tmp_path, progress=False)
    final = load_policy(trained.policy_dir.parent / "policy_final")
    assert final.residual_bound == BOUND
    assert RouterTrainConfig.model_validate_json((trained.policy_dir / "config.json").read_text()) == cfg
