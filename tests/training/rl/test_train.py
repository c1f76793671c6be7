"""RL training with tiny nets and a few hundred steps: both algorithms run, export to numpy exactly,
save what the router and serving need, and the learned router replays through the one harness."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from pydantic import ValidationError

from eval.harness import evaluate
from tests.training.rl.samples import TINY, tiny_requests
from training.rl.config import RouterTrainConfig
from training.rl.policy_serving import load_policy, predict_frame, snapshot_columns
from training.rl.router import LearnedRouter, load_router
from training.rl.train import TrainedRouter, export_policy, train_router
from training.routing.registry import RouterContext, get_router, router_names
from training.workloads.catalog import Workload


@pytest.fixture(scope="module", params=["dqn", "maskable-ppo"])
def trained(request, tiny_sampler, tmp_path_factory) -> TrainedRouter:
    cfg = RouterTrainConfig(algo=request.param, variant="guided", **TINY)
    return train_router(cfg, tiny_sampler, tmp_path_factory.mktemp(request.param), progress=False)


def test_outputs_and_stats(trained):
    d = trained.policy_dir
    for name in (
        "policy_weights.npz",
        "obs_spec.json",
        "config.json",
        "train_stats.json",
        "input_example.json",
    ):
        assert (d / name).is_file(), name
    assert RouterTrainConfig.model_validate_json((d / "config.json").read_text()) == trained.config
    s = trained.train_stats
    assert s["steps"] >= TINY["total_timesteps"]
    assert s["steps_per_s"] > 0
    assert s["wall_s"] > 0
    assert np.isfinite(s["best_validation_e2e_s"])
    log = [json.loads(line) for line in (d.parent / "train_log.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "episode" for r in log)
    assert any(r["kind"] == "validation" for r in log)
    assert (d.parent / "checkpoints" / "final_model.zip").is_file()
    assert (d.parent / "policy_final" / "policy_weights.npz").is_file()


def test_checkpoint_loads_and_acts_like_the_export(trained, tiny_sampler):
    from training.rl.env import RouterEnv

    cfg = trained.config
    env = RouterEnv(tiny_sampler, cfg.reward, cfg.obs_spec())
    if cfg.algo == "dqn":
        from training.rl.algos import MaskedDoubleDQN as Algo
    else:
        from sb3_contrib import MaskablePPO as Algo
    model = Algo.load(trained.policy_dir.parent / "checkpoints" / "final_model.zip", device="cpu")
    final = load_policy(trained.policy_dir.parent / "policy_final")
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    np.testing.assert_allclose(export_policy(model, cfg.algo, env).scores(obs), final.scores(obs), rtol=1e-6)
    acts, _ = model.predict(obs, deterministic=True)
    if cfg.algo == "dqn":
        np.testing.assert_array_equal(acts, [final.act_obs(o) % (cfg.num_instances + 1) for o in obs])


def test_guided_discount_rises_as_guidance_decays(trained):
    log = [
        json.loads(line) for line in (trained.policy_dir.parent / "train_log.jsonl").read_text().splitlines()
    ]
    eps = [r for r in log if r["kind"] == "episode"]
    assert eps[0]["mixing_weight"] == 1.0
    assert all(a["gamma"] <= b["gamma"] for a, b in pairwise(eps))
    assert all(a["mixing_weight"] > b["mixing_weight"] for a, b in pairwise(eps))


def test_numpy_export_matches_torch(tiny_sampler):
    import torch as th

    from training.rl.env import RouterEnv
    from training.rl.train import make_model

    for algo, arch in (("dqn", "slots"), ("dqn", "mlp"), ("maskable-ppo", "mlp")):
        cfg = RouterTrainConfig(algo=algo, architecture=arch, **TINY)
        env = RouterEnv(tiny_sampler, cfg.reward, cfg.obs_spec())
        model = make_model(cfg, env)
        policy = export_policy(model, algo, env)
        obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
        with th.no_grad():
            t_obs = th.as_tensor(obs)
            if algo == "dqn" and arch == "slots":  # dueling: the policy's scores are the advantages
                ref = model.q_net.action_scores(t_obs).numpy()
                full = model.q_net(t_obs).numpy()
                np.testing.assert_array_equal(full.argmax(1), ref.argmax(1))
            elif algo == "dqn":
                ref = model.q_net(t_obs).numpy()
            else:
                latent = model.policy.mlp_extractor.forward_actor(model.policy.extract_features(t_obs))
                ref = model.policy.action_net(latent).numpy()
        np.testing.assert_allclose(policy.scores(obs), ref, rtol=1e-5, atol=1e-5)


def test_serving_predicts_the_input_example(trained):
    from training.rl import policy_serving

    frame = trained.input_example()
    assert list(frame.columns) == snapshot_columns(load_policy(trained.policy_dir).spec)
    model = policy_serving.RouterPolicyModel(trained.policy_dir)
    out = model.predict(None, frame)
    assert out.shape == (1,)
    assert out.dtype == np.int64
    assert -1 <= int(out[0]) < trained.config.num_instances
    np.testing.assert_array_equal(
        out, predict_frame(load_policy(trained.policy_dir), frame[frame.columns[::-1]])
    )


def test_learned_router_in_the_harness(trained, tiny_sampler):
    held = tiny_requests(99, n=40)
    wl = Workload(
        name="tiny",
        description="SYNTHETIC tiny",
        synthetic=True,
        sample=lambda seed: tiny_requests(1000 + seed, n=40),
        train=held,
        num_instances=2,
        profile="v100-llama2-7b-paper",
    )
    report = evaluate(
        ["round_robin", "rl"],
        wl,
        tiny_sampler.cluster,
        tiny_sampler.latency_model,
        seeds=(0, 1),
        context_options={"policy_dir": str(trained.policy_dir)},
    )
    rl = report.routers["rl"]
    assert rl.overall.n_requests == 40  # per seed
    assert rl.vs_baseline_pct is not None


def test_registry_entry_is_lazy_and_needs_a_policy(trained, tiny_sampler):
    assert "rl" not in router_names()
    assert "rl" in router_names(include_configured=True)
    with pytest.raises(KeyError, match="policy_dir"):
        get_router("rl", RouterContext(num_instances=2))
    ctx = RouterContext(num_instances=2, options={"policy_dir": str(trained.policy_dir)})
    router = get_router("rl", ctx)
    assert isinstance(router, LearnedRouter)
    assert router.name == "rl"
    assert isinstance(load_router(trained.policy_dir, ctx), LearnedRouter)
    with pytest.raises(ValueError, match="instances"):
        load_router(trained.policy_dir, RouterContext(num_instances=3))


def test_config_is_frozen_strict_and_syncs_the_reward_variant():
    cfg = RouterTrainConfig(variant="aware")
    assert cfg.reward.variant == "aware"
    with pytest.raises(ValidationError, match="unknown"):
        RouterTrainConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
    again = RouterTrainConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
