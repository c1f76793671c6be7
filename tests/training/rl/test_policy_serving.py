"""The serving module is self-contained (imports nothing from this project), its encoder is the env's,
and snapshot rows round-trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import training.rl.policy_serving as policy_serving
from tests.training.rl.samples import tiny_requests
from training.rl import env as env_module
from training.rl.env import RouterEnv
from training.rl.policy_serving import (
    ObsSpec,
    PolicyNet,
    encode_observation,
    snapshot_columns,
    snapshot_from_row,
    snapshot_to_row,
)

SERVING = Path(policy_serving.__file__)


def test_serving_imports_nothing_from_the_project():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('standalone_serving', {str(SERVING)!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('training', 'eval', 'features', 'warehouse', 'flows', 'torch', 'stable_baselines3')]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_env_uses_the_serving_encoder():
    assert env_module.encode_observation is policy_serving.encode_observation
    assert env_module.action_mask is policy_serving.action_mask


def test_snapshot_row_round_trip_and_encoding(tiny_sampler):
    env = RouterEnv(tiny_sampler, spec=ObsSpec(num_instances=2))
    env.reset(options={"requests": tiny_requests(3)})
    for _ in range(10):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
    snap = env._state.snapshot
    row = np.array(snapshot_to_row(snap))
    assert len(row) == len(snapshot_columns(env.obs_spec))
    back = snapshot_from_row(row, env.obs_spec)
    np.testing.assert_array_equal(encode_observation(back, env.obs_spec), env._obs)


def test_slots_policy_is_equivariant_to_instance_order():
    spec = ObsSpec(num_instances=3)
    rng = np.random.default_rng(0)
    d = spec.slot_dim
    policy = PolicyNet(
        [(rng.normal(size=(d, 8)), rng.normal(size=8)), (rng.normal(size=(8, 1)), rng.normal(size=1))],
        "relu",
        spec,
        "slots",
    )
    obs = rng.random(spec.obs_dim).astype(np.float32)
    obs[: spec.n_actions] = 1.0
    perm = [2, 0, 1]
    head = spec.n_actions + spec.request_dim
    per = obs[head:].reshape(3, spec.per_instance_dim)
    permuted = np.concatenate([obs[:head], per[perm].ravel()])
    s, sp = policy.scores(obs), policy.scores(permuted)
    np.testing.assert_allclose(sp[:3], s[perm], rtol=1e-5)
    np.testing.assert_allclose(sp[3], s[3], rtol=1e-5)
