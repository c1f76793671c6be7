"""The learned router behind the ``Router`` protocol, so the one harness evaluates it like any baseline.

Who calls this: the router registry (``get_router("rl", ctx)`` -> ``make_router``, lazily: this module
is imported only when the name is asked for) and ``load_router`` callers, once per replay; ``route``
once per routing decision. Pure numpy at decision time (the exported ``PolicyNet``; no torch, no SB3).

``ctx.options["policy_dir"]`` names the policy folder written by ``training.rl.train`` (weights,
``obs_spec.json``). The snapshot is built by ``training.rl.observation.SnapshotBuilder`` with the
context's latency model, block size and batch limit, and encoded by THE encoder of
``training.rl.policy_serving``: the same path as in training.
"""

from __future__ import annotations

from pathlib import Path

from training.rl.observation import SnapshotBuilder
from training.rl.policy_serving import DELAY_OUTPUT, PolicyNet, load_policy
from training.routing.admission_rule import AdmissionMemo
from training.routing.estimates import latency_model_of
from training.routing.registry import RouterContext
from training.simulator.interface import DELAY, ClusterView, RequestView, Router

POLICY_DIR_OPTION = "policy_dir"


class LearnedRouter:
    """Routes with an exported policy; DELAY only where the policy's mask allows it.

    ``needs_request_stats`` asks ``simulate`` for per-request stats in the views (per-bucket counts
    and progress come from them). The policy is deterministic (masked argmax), so ``reset`` only
    checks the cluster size.
    """

    name = "rl"
    needs_request_stats = True

    def __init__(self, policy: PolicyNet, ctx: RouterContext) -> None:
        if policy.spec.num_instances != ctx.num_instances:
            raise ValueError(
                f"the policy was trained for {policy.spec.num_instances} instances, the cluster has "
                f"{ctx.num_instances}"
            )
        policy.spec.check_block_size(ctx.block_size)
        self.policy = policy
        self.builder = SnapshotBuilder(
            policy.spec,
            latency_model_of(ctx),
            block_size=ctx.block_size,
            max_batch_size=ctx.max_batch_size,
        )
        spec = policy.spec
        self.hold = (
            None if spec.hold_kv_headroom is None else AdmissionMemo(spec.block_size, spec.hold_kv_headroom)
        )

    def reset(self, num_instances: int, seed: int) -> None:
        if num_instances != self.policy.spec.num_instances:
            raise ValueError(
                f"policy expects {self.policy.spec.num_instances} instances, got {num_instances}"
            )
        if self.hold is not None:
            self.hold.clear()

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        if not cluster.accepting:
            return DELAY
        if self.hold is not None and self.hold.startable(cluster, request.prompt_tokens) is None:
            return DELAY  # what the policy's mask would leave, without building a snapshot per tick
        a = self.policy.act(self.builder.build(request, cluster).snapshot)
        return DELAY if a == DELAY_OUTPUT else a


def load_router(policy_dir: Path, ctx: RouterContext) -> Router:
    """The learned router from a policy folder (``TrainedRouter.policy_dir``)."""
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
