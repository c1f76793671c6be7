"""A rule policy (``policy_serving.RulePolicy``) routes exactly like its registry router: the same
replay through the learned-router adapter (``training.rl.router``) and with the registry router gives
bit-identical per-request results, with and without ``+hold``; and it survives its folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.rl.samples import tiny_requests
from training.length.baselines import TaskMeanPredictor
from training.rl.policy_serving import RULES, LinearLatency, ObsSpec, RulePolicy, load_policy, policy_kind
from training.rl.router import RULE_ROUTERS, load_router
from training.routing.admission import HEADROOM_OPTION
from training.routing.registry import RouterContext, get_router
from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel, simulate

INSTANCES = 3
BATCH = 6
BLOCK = 16
# The router's estimate (every coefficient non-zero) differs from the replay's true latency model, as
# the impact estimator's fit differs from a GPU profile.
ESTIMATE = {
    "base_s": 0.021,
    "grad1_s_per_prefill_token": 2.9e-4,
    "grad2_s_per_decode_context_token": 1.7e-6,
    "per_decode_seq_s": 3.1e-5,
    "attention2_s_per_token2": 3.0e-9,
}
TRUE = LinearLatencyModel(grad2_s_per_decode_context_token=0.0, per_decode_seq_s=3.3e-5)
CLUSTER = ClusterConfig(
    num_instances=INSTANCES, instance=InstanceConfig(kv_blocks=300, block_size=BLOCK, max_batch_size=BATCH)
)
FIELDS = ("routed_s", "first_token_s", "finish_s", "e2e_s", "router_wait_s", "queue_wait_s",
          "preemptions", "instance", "generated_tokens")  # fmt: skip


def test_every_rule_names_a_registry_router():
    assert set(RULES) == set(RULE_ROUTERS)
    for rule in RULES:
        assert get_router(rule, RouterContext(num_instances=2)).name == rule


@pytest.mark.parametrize("hold", [None, 0.1], ids=["plain", "hold"])
@pytest.mark.parametrize("rule", RULES)
def test_a_rule_policy_replays_bit_for_bit_like_its_registry_router(
    rule: str, hold: float | None, tmp_path: Path
):
    requests = tiny_requests(5, n=160, rate=14.0)
    predictor = TaskMeanPredictor.fit(tiny_requests(6, n=200))
    estimate = LinearLatencyModel(**ESTIMATE)
    name = rule + ("+hold" if hold is not None else "")
    registry_ctx = RouterContext(
        num_instances=INSTANCES, latency_model=estimate, block_size=BLOCK, max_batch_size=BATCH,
        options={HEADROOM_OPTION: hold} if hold is not None else {},
    )  # fmt: skip
    policy = RulePolicy(
        rule, ObsSpec(num_instances=INSTANCES), latency=LinearLatency(**ESTIMATE, source="test"),
        max_batch_size=BATCH, block_size=BLOCK, hold_kv_headroom=hold,
    )  # fmt: skip
    policy.save(tmp_path / "rule")
    assert policy_kind(load_policy(tmp_path / "rule")) == f"rule:{name}"
    # The adapter gets the replay's own latency model: the rule estimates with its artifact's.
    adapter_ctx = RouterContext(
        num_instances=INSTANCES, latency_model=TRUE, block_size=BLOCK, max_batch_size=BATCH
    )
    held = full = 0
    for seed in (0, 1):
        want = simulate(requests, get_router(name, registry_ctx), CLUSTER, TRUE, predictor, seed=seed)
        got = simulate(
            requests, load_router(tmp_path / "rule", adapter_ctx), CLUSTER, TRUE, predictor, seed=seed
        )
        for f in FIELDS:
            np.testing.assert_array_equal(
                getattr(got, f), getattr(want, f), err_msg=f"{name} seed {seed}: {f}"
            )
        held += int((want.router_wait_s > 0).sum())
        full += sum(int((series["batch_size"] >= BATCH).sum()) for series in want.instance_series)
    if hold is not None:
        assert held > 0, "the replay never held a request: the +hold path was not exercised"
    assert full > 0, "no full batch: the replay does not exercise the rule's capacity-wait branch"


def test_serving_breaks_ties_by_the_lowest_index_and_holds_with_delay():
    spec = ObsSpec(num_instances=2)
    policy = RulePolicy(
        "workload_impact_greedy", spec, latency=LinearLatency(**ESTIMATE), hold_kv_headroom=0.1
    )
    from training.rl.policy_serving import INSTANCE_FIELDS, RouterSnapshot

    inst = np.zeros((2, len(INSTANCE_FIELDS)))
    inst[:, 0] = 1.0  # accepting
    inst[:, 4] = 100.0  # kv_total_blocks
    hist = np.zeros((2, spec.n_prompt_buckets, spec.n_decode_buckets))
    snap = RouterSnapshot(100.0, 50.0, 0.0, 0.0, inst, hist, hist.copy())
    assert policy.act(snap) == 0  # both idle: a tie, the lowest index
    busy = inst.copy()
    busy[:, 1] = 1.0  # one running request each, and no KV to spare
    busy[:, 3] = 99.0
    blocked = RouterSnapshot(100.0, 50.0, 0.0, 0.0, busy, hist, hist.copy())
    assert policy.act(blocked) == -1
