"""Distillation of the lookahead teacher (training/rl/distill.py, issue 17): the labels are the teacher's
decisions at states observed exactly as the env observes them, DAgger rounds are seeded and reproducible
bit for bit, the student learns the labels, and ``train-router --method distill`` registers a policy
the ``rl`` router routes with. Tiny: a 2-instance cluster, 30-request windows, 2 samples, 1 s horizon."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from tests.training.rl.samples import TINY, tiny_requests
from training.length.baselines import TaskMeanPredictor
from training.rl.config import RouterTrainConfig
from training.rl.distill import (
    DATA_FILE,
    LabelledSet,
    distill_router,
    label_accuracy,
    label_episode,
    teacher_beta,
    teacher_context,
)
from training.rl.env import RouterEnv
from training.rl.policy_serving import PolicyNet, load_policy
from training.routing.lookahead import LookaheadParams, simulate_with_lookahead
from training.routing.registry import RouterContext, get_router
from training.simulator.engine import simulate
from training.simulator.profiles import load_latency_model
from training.workloads.episodes import cluster_for

TEACHER = LookaheadParams(samples=2, horizon_s=1.0, seed=3)
DISTILL = {"teacher": TEACHER, "rounds": 1, "episodes_per_round": 2, "episode_requests": 30, "epochs": 40,
           "batch_size": 32}  # fmt: skip


def _cfg(**over: object) -> RouterTrainConfig:
    return RouterTrainConfig.model_validate(
        {"method": "distill", **TINY, "net_arch": (32,), "distill": DISTILL, **over}
    )


@pytest.fixture(scope="module")
def runs(tiny_sampler, tmp_path_factory):
    """The same config twice (the second in 2 labelling processes) and another seed."""
    out = {}
    for name, cfg in {
        "a": _cfg(),
        "b": _cfg(distill={**DISTILL, "workers": 2}),
        "seed1": _cfg(seed=1),
    }.items():
        out[name] = distill_router(cfg, tiny_sampler, tmp_path_factory.mktemp(name), progress=False)
    return out


def test_labels_are_the_teachers_decisions_at_the_envs_observations(tiny_sampler):
    env = RouterEnv(tiny_sampler, spec=_cfg().obs_spec())
    requests = tiny_requests(5, n=30)
    got = label_episode(env, requests, TEACHER)
    teacher = simulate_with_lookahead(
        requests,
        env.cluster,
        tiny_sampler.latency_model,
        tiny_sampler.predictor,
        teacher_context(env),
        TEACHER,
    )
    # the teacher's own replay: the same decisions, the same result
    assert got.mean_e2e_s == float(np.mean(teacher.result.e2e_s))
    # the env stepped with the teacher's choices observes what the data set holds, bit for bit
    m = env.obs_spec.num_instances
    obs, _ = env.reset(options={"requests": requests})
    seen_obs, seen_labels = [], []
    for choice in teacher.choices:
        mask = env.action_masks()
        a = m if choice < 0 else choice
        if mask.sum() > 1:
            seen_obs.append(obs)
            seen_labels.append(a)
        obs, _, done, _, _ = env.step(a)
    assert done
    assert len(got.data) == len(seen_labels) > 10
    np.testing.assert_array_equal(got.data.obs, np.array(seen_obs))
    np.testing.assert_array_equal(got.data.label, np.array(seen_labels))
    assert len(set(seen_labels)) > 1  # the teacher does not always pick the same instance


def test_dagger_rounds_are_seeded_and_reproducible(runs):
    a, b, other = runs["a"], runs["b"], runs["seed1"]
    sa, sb = a.train_stats, b.train_stats
    assert [r["round"] for r in sa["rounds"]] == [0, 1]
    assert sa["rounds"][1]["beta"] == pytest.approx(np.exp(-0.5))  # guided: the teacher's share decays
    assert sa["rounds"][1]["student_agreement_before_fit"] is not None  # round 1 rolled out the student
    assert sa["dataset_digest"] == sb["dataset_digest"]  # 1 or 2 labelling processes alike
    assert sa["dataset_digest"] != other.train_stats["dataset_digest"]
    for name in ("policy", "policy_final"):
        with (
            np.load(a.policy_dir.parent / name / "policy_weights.npz") as za,
            np.load(b.policy_dir.parent / name / "policy_weights.npz") as zb,
        ):
            assert za.files == zb.files
            for k in za.files:
                np.testing.assert_array_equal(za[k], zb[k])
    assert [v["mean_e2e_s"] for v in sa["validation"]] == [v["mean_e2e_s"] for v in sb["validation"]]


def test_the_student_reproduces_the_teachers_labels_well_above_chance(runs):
    run = runs["a"]
    with np.load(run.policy_dir.parent / DATA_FILE) as z:
        data = LabelledSet(z["obs"], z["mask"], z["label"], z["round"])
    assert data.digest() == run.train_stats["dataset_digest"]
    student = load_policy(run.policy_dir.parent / "policy_final")
    assert isinstance(student, PolicyNet)
    chance = float(np.mean(1.0 / data.mask.sum(axis=1)))
    accuracy = label_accuracy(student, data)
    assert accuracy == pytest.approx(run.train_stats["rounds"][-1]["fit_accuracy"])
    assert accuracy >= chance + 0.25, (accuracy, chance)


def test_the_variants_map_to_the_teachers_share():
    cfg = _cfg()
    assert [teacher_beta(replace_variant(cfg, "baseline"), k) for k in (0, 1, 2)] == [1.0, 0.0, 0.0]
    assert [teacher_beta(replace_variant(cfg, "aware"), k) for k in (0, 3)] == [1.0, 0.5]
    guided = [teacher_beta(cfg, k) for k in range(4)]
    assert guided[0] == 1.0
    assert all(x > y for x, y in pairwise(guided))


def test_train_router_refuses_the_distill_method(tiny_sampler, tmp_path: Path):
    from training.rl.train import train_router

    with pytest.raises(ValueError, match="method 'rl'"):
        train_router(_cfg(), tiny_sampler, tmp_path)


def replace_variant(cfg: RouterTrainConfig, variant: str) -> RouterTrainConfig:
    return RouterTrainConfig.model_validate({**cfg.model_dump(), "variant": variant})


def test_train_router_method_distill_registers_a_policy_the_rl_router_routes_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.registry import ModelRegistry

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "router.json"
    settings = {"num_instances": 2, "rate_rps": 8.0, "net_arch": [16], "eval_episodes": 1,
                "distill": {**DISTILL, "teacher": {"samples": 2, "horizon_s": 1.0}, "rounds": 1,
                            "episodes_per_round": 1, "episode_requests": 20, "epochs": 5}}  # fmt: skip
    config.write_text(json.dumps(settings))
    args = ["--method", "distill", "--config", str(config), "--requests", "20", "--eval-seeds", "0", "--json"]
    out = CliRunner().invoke(app, ["train-router", *args])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["model"]["name"] == "llm-router"
    recorded = json.loads(ModelRegistry().get("llm-router", "challenger").tags["loadwise.config"])
    assert recorded["method"] == "distill"
    policy_dir = tmp_path / "home" / "rl" / "distill-guided-dqn-seed0" / "policy"
    stats = json.loads((policy_dir / "train_stats.json").read_text())
    assert stats["method"] == "distill"
    assert stats["teacher_decisions"] > 0
    cfg = RouterTrainConfig.model_validate_json((policy_dir / "config.json").read_text())
    env_cfg = replace(cluster_for(cfg), request_stats=True)
    lm = load_latency_model(cfg.profile)
    ctx = RouterContext(2, lm, block_size=env_cfg.instance.block_size,
                        max_batch_size=env_cfg.instance.max_batch_size,
                        options={"policy_dir": str(policy_dir)})  # fmt: skip
    router = get_router("rl", ctx)
    reqs = tiny_requests(9, n=25)
    res = simulate(reqs, router, env_cfg, lm, TaskMeanPredictor.fit(reqs), seed=0)
    assert len(res.e2e_s) == 25
    assert np.all(np.isfinite(res.e2e_s))


def test_distillation_refuses_the_oracle_teacher(tiny_sampler, monkeypatch):
    """The diagnostic that reads the trace's truth (eval.lookahead_oracle) can never label data: with
    it in place of the teacher class, ``label_episode`` refuses before replaying anything."""
    import training.rl.distill as distill
    from eval.lookahead_oracle import OracleLookaheadTeacher

    env = RouterEnv(tiny_sampler, spec=_cfg().obs_spec())
    monkeypatch.setattr(distill, "LookaheadTeacher", OracleLookaheadTeacher)
    with pytest.raises(ValueError, match="refuses an oracle"):
        label_episode(env, tiny_requests(5, n=30), TEACHER)
