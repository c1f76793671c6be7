"""The learned router behind the ``Router`` protocol, so the one harness evaluates it like any baseline.

Who calls this: the router registry (``get_router("rl", ctx)`` -> ``make_router``, lazily: this module
is imported only when the name is asked for) and ``load_router`` callers, once per replay; ``route``
once per routing decision. Pure numpy at decision time (the exported ``PolicyNet`` or ``RulePolicy``;
no torch, no SB3).

``ctx.options["policy_dir"]`` names a policy folder: one written by ``training.rl.train`` (weights,
``obs_spec.json``) or a rule policy's (``rule_policy.json``, ``obs_spec.json``: a registry router's
rule as the ``llm-router`` pyfunc serves it). The snapshot is built by
``training.rl.observation.SnapshotBuilder`` with the context's latency model, block size and batch
limit, and encoded by THE encoder of ``training.rl.policy_serving``: the same path as in training and
behind MLflow. A rule policy breaks ties with the generator its registry router would use
(``seeded_rng(seed, <router>._salt)``), so its replay is bit-for-bit the registry router's given the
same latency model (``tests/training/rl/test_rule_policy.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.rl.observation import SnapshotBuilder
from training.rl.policy_serving import DELAY_OUTPUT, Policy, RulePolicy, load_policy
from training.routing.admission_rule import AdmissionMemo
from training.routing.baselines import LeastTokens
from training.routing.estimates import latency_model_of, seeded_rng
from training.routing.latency_aware import WorkloadImpactGreedy
from training.routing.registry import RouterContext
from training.simulator.interface import DELAY, ClusterView, RequestView, Router

POLICY_DIR_OPTION = "policy_dir"

RULE_ROUTERS: dict[str, type] = {"least_tokens": LeastTokens, "workload_impact_greedy": WorkloadImpactGreedy}
"""The registry router each rule of ``policy_serving.RULES`` routes like (its tie-break salt)."""


class LearnedRouter:
    """Routes with an exported policy; DELAY only where the policy's mask (or rule) allows it.

    ``needs_request_stats`` asks ``simulate`` for per-request stats in the views (per-bucket counts
    and progress come from them). A network policy is deterministic (masked argmax), so ``reset`` only
    checks the cluster size; a rule policy's tie-break generator is reseeded there.
    """

    name = "rl"
    needs_request_stats = True

    def __init__(self, policy: Policy, ctx: RouterContext) -> None:
        if policy.spec.num_instances != ctx.num_instances:
            raise ValueError(
                f"the policy was trained for {policy.spec.num_instances} instances, the cluster has "
                f"{ctx.num_instances}"
            )
        spec = policy.spec
        self.policy = policy
        self.builder = SnapshotBuilder(
            spec,
            latency_model_of(ctx),
            block_size=ctx.block_size,
            max_batch_size=ctx.max_batch_size,
        )
        self.salt: int | None = None
        self.rng: np.random.Generator | None = None
        if isinstance(policy, RulePolicy):
            self.salt = int(RULE_ROUTERS[policy.rule]._salt)  # type: ignore[attr-defined]
            self.rng = seeded_rng(0, self.salt)
            headroom, block_size = policy.hold_kv_headroom, policy.block_size
        else:
            spec.check_block_size(ctx.block_size)
            headroom, block_size = spec.hold_kv_headroom, spec.block_size
        self.hold = None if headroom is None else AdmissionMemo(block_size, headroom)

    def reset(self, num_instances: int, seed: int) -> None:
        if num_instances != self.policy.spec.num_instances:
            raise ValueError(
                f"policy expects {self.policy.spec.num_instances} instances, got {num_instances}"
            )
        if self.hold is not None:
            self.hold.clear()
        if self.salt is not None:
            self.rng = seeded_rng(seed, self.salt)

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        if not cluster.accepting:
            return DELAY
        if self.hold is not None and (hold := self.hold.hold(cluster, request.prompt_tokens)) is not None:
            return hold  # DELAY, what the policy's mask would leave; the replay re-offers once there is room
        snapshot = self.builder.build(request, cluster).snapshot
        if isinstance(self.policy, RulePolicy):
            a = self.policy.act(snapshot, self.rng)
        else:
            a = self.policy.act(snapshot)
        return DELAY if a == DELAY_OUTPUT else a


def load_router(policy_dir: Path, ctx: RouterContext) -> Router:
    """The learned router from a policy folder (``TrainedRouter.policy_dir``, or a rule policy's)."""
    return LearnedRouter(load_policy(policy_dir), ctx)


def make_router(ctx: RouterContext) -> Router:
    """Registry factory: ``ctx.options["policy_dir"]`` is required."""
    policy_dir = ctx.options.get(POLICY_DIR_OPTION)
    if not policy_dir:
        raise KeyError(
            f"router 'rl' needs RouterContext.options[{POLICY_DIR_OPTION!r}] = a policy folder written by "
            "training.rl.train (e.g. evaluate(..., context_options={'policy_dir': path}))"
        )
    return load_router(Path(str(policy_dir)), ctx)
