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


EDGES = (250.0, 1000.0, 4000.0)


class _BucketPredictor:
    """Gives bucket probabilities (a length predictor with a full distribution): 0.5 / 0.3 / 0.2 / 0
    over ``EDGES``, expected 300 tokens."""

    name = "buckets"
    is_oracle = False

    def predict_lengths(self, requests):
        from training.simulator.interface import LengthPrediction

        n = len(requests)
        return LengthPrediction(np.full(n, 300.0), np.tile([0.5, 0.3, 0.2, 0.0], (n, 1)), EDGES)

    def predict_output_tokens(self, requests):
        return self.predict_lengths(requests).expected_tokens


def _env_with(sampler, predictor, edges):
    from dataclasses import replace

    env = RouterEnv(
        replace(sampler, predictor=predictor), spec=ObsSpec(num_instances=2, predicted_bucket_edges=edges)
    )
    env.reset(options={"requests": tiny_requests(3)})
    for _ in range(5):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
    return env


def test_the_observation_reads_the_predictors_bucket_probabilities(tiny_sampler):
    """A spec with ``predicted_bucket_edges``: the snapshot has ``predicted_p_bucket_{j}`` columns after
    the request fields, the observation the probabilities after the request scalars; rows round-trip."""
    env = _env_with(tiny_sampler, _BucketPredictor(), EDGES)
    spec, snap = env.obs_spec, env._state.snapshot
    cols = snapshot_columns(spec)
    assert cols[4:8] == [f"predicted_p_bucket_{j}" for j in range(4)]
    np.testing.assert_array_equal(snap.predicted_bucket_probs, [0.5, 0.3, 0.2, 0.0])
    row = np.array(snapshot_to_row(snap))
    assert len(row) == len(cols)
    assert list(row[4:8]) == [0.5, 0.3, 0.2, 0.0]
    np.testing.assert_array_equal(encode_observation(snapshot_from_row(row, spec), spec), env._obs)
    start = spec.n_actions + spec.n_prompt_buckets + spec.n_decode_buckets + 4
    np.testing.assert_allclose(env._obs[start : start + 4], [0.5, 0.3, 0.2, 0.0])
    assert spec.obs_dim == ObsSpec(num_instances=2).obs_dim + 4


def test_a_predictor_without_probabilities_gives_its_buckets_one_hot(tiny_sampler):
    """Task mean (and the oracle) give a length only: all the probability on that length's bucket."""
    env = _env_with(tiny_sampler, tiny_sampler.predictor, EDGES)
    snap = env._state.snapshot
    expected = np.zeros(4)
    expected[int(np.searchsorted(EDGES, snap.predicted_output_tokens, side="left"))] = 1.0
    np.testing.assert_array_equal(snap.predicted_bucket_probs, expected)


def test_other_buckets_than_the_policys_are_refused(tiny_sampler):
    import pytest

    with pytest.raises(ValueError, match="edges"):
        _env_with(tiny_sampler, _BucketPredictor(), (32.0, 64.0, 128.0))


def test_policies_exported_before_load_and_encode_as_before(tiny_sampler, tmp_path):
    """A spec without edges writes the obs_spec.json it wrote before issue 15 (no new key), an old file
    loads without them, and its observation has no bucket probabilities even from a predictor that
    gives them."""
    import json

    spec = ObsSpec(num_instances=2)
    assert "predicted_bucket_edges" not in json.loads(spec.to_json())
    assert ObsSpec.from_dict(json.loads(spec.to_json())) == spec
    plain = _env_with(tiny_sampler, tiny_sampler.predictor, None)
    rich = _env_with(tiny_sampler, _BucketPredictor(), None)
    assert plain._state.snapshot.predicted_bucket_probs is None
    assert len(rich._obs) == spec.obs_dim
    assert snapshot_columns(spec)[4] == "i0_accepting"
