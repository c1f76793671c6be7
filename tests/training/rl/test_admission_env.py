"""Admission control in the RL env and the serving policy: held ticks never reach the agent, the env
under a hold is the same replay as ``simulate`` with the ``+hold`` wrapper, and the serving-side rule
(``serving.startable``) agrees with ``training.routing.estimates.can_start``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.rl.samples import tiny_requests
from tests.training.routing.views import inst
from training.rl.config import RouterTrainConfig
from training.rl.env import RouterEnv
from training.rl.policy_serving import INSTANCE_FIELDS, ObsSpec, RouterSnapshot, startable
from training.rl.rewards import RewardConfig
from training.routing.admission import HoldForHeadroom
from training.routing.admission_rule import can_start
from training.simulator import simulate
from training.simulator.interface import DELAY
from warehouse.settings import PROJECT_ROOT

HEADROOM = 0.3


class _FirstAccepting:
    """The lowest-index accepting instance (what the test agent picks among the valid actions)."""

    name = "first"

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request, cluster) -> int:
        return cluster.accepting[0] if cluster.accepting else DELAY


def _hold_env(sampler) -> RouterEnv:
    return RouterEnv(sampler, RewardConfig(), ObsSpec(num_instances=2, hold_kv_headroom=HEADROOM))


def test_env_under_a_hold_is_the_replay_of_the_hold_wrapper(tiny_sampler):
    requests = tiny_requests(8, n=60, rate=20.0)
    env = _hold_env(tiny_sampler)
    env.reset(options={"requests": requests})
    done, steps = False, 0
    while not done:
        mask = env.action_masks()
        assert mask[:2].any(), "a decision where only DELAY is valid must not reach the agent"
        _, _, done, _, _ = env.step(int(np.flatnonzero(mask[:2])[0]))
        steps += 1
    assert steps == len(requests)  # one agent step per request: the held ticks were skipped
    router = HoldForHeadroom(_FirstAccepting(), tiny_sampler.cluster.instance.block_size, HEADROOM)
    ref = simulate(requests, router, tiny_sampler.cluster, tiny_sampler.latency_model, tiny_sampler.predictor)
    assert env.last_result is not None
    np.testing.assert_array_equal(env.last_result.e2e_s, ref.e2e_s)
    np.testing.assert_array_equal(env.last_result.instance, ref.instance)
    assert float(np.sum(ref.router_wait_s)) > 0, "the case must make requests wait at the router"


def test_env_refuses_a_block_size_other_than_the_clusters(tiny_sampler):
    spec = ObsSpec(num_instances=2, hold_kv_headroom=0.1, block_size=32)
    with pytest.raises(ValueError, match="block_size"):
        RouterEnv(tiny_sampler, RewardConfig(), spec)


def test_train_config_carries_the_hold_into_the_policy_spec():
    assert RouterTrainConfig(hold_kv_headroom=0.1).obs_spec().hold_kv_headroom == 0.1
    assert RouterTrainConfig().obs_spec().hold_kv_headroom is None
    with pytest.raises(ValueError, match="hold_kv_headroom"):
        RouterTrainConfig(hold_kv_headroom=1.0)


def _snapshot(views, prompt: int) -> RouterSnapshot:
    rows = []
    for v in views:
        row = dict.fromkeys(INSTANCE_FIELDS, 0.0)
        row.update(
            accepting=float(v.accepting), num_running=v.num_running, num_waiting=v.num_waiting,
            kv_used_blocks=v.kv_used_blocks, kv_total_blocks=v.kv_total_blocks,
            outstanding_prompt_tokens=v.outstanding_prompt_tokens,
        )  # fmt: skip
        rows.append([row[f] for f in INSTANCE_FIELDS])
    m = len(views)
    return RouterSnapshot(prompt, 100.0, 0.0, 0.0, np.array(rows), np.zeros((m, 3, 4)), np.zeros((m, 3, 4)))


@pytest.mark.parametrize("headroom", [0.0, 0.1, 0.5])
def test_serving_rule_agrees_with_the_routers(headroom):
    rng = np.random.default_rng(4)
    spec = ObsSpec(num_instances=4, hold_kv_headroom=headroom)
    for _ in range(300):
        total = int(rng.integers(50, 2000))
        views = [
            inst(
                k,
                accepting=bool(rng.random() < 0.8),
                num_running=int(rng.integers(0, 3)),
                num_waiting=int(rng.random() < 0.3),
                kv_used_blocks=int(rng.integers(0, total + 1)),
                kv_total_blocks=total,
                outstanding_prompt_tokens=int(rng.integers(0, 4000)) if rng.random() < 0.5 else 0,
            )
            for k in range(4)
        ]
        prompt = int(rng.integers(1, 4000))
        expected = [can_start(v, prompt, spec.block_size, headroom) for v in views]
        assert startable(_snapshot(views, prompt), spec).tolist() == expected
    no_hold = ObsSpec(num_instances=4)
    assert startable(_snapshot(views, prompt), no_hold).tolist() == [v.accepting for v in views]


def test_the_shipped_followup_router_config_is_valid():

    from flows.config_files import read_config_file

    path = PROJECT_ROOT / "configs" / "router-followup.toml"
    cfg = RouterTrainConfig.model_validate(read_config_file(path))
    assert (cfg.variant, cfg.reward.objective, cfg.residual_bound) == ("baseline", "latency", 0.2)
    assert cfg.freeze_prior
