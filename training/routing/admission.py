"""Admission control at the router: hold a request while no instance can start it with KV headroom.

Who calls this: the simulator through the registry (the ``<router>+hold`` entries), once per routing
decision and once per decision tick while a request is held. Pure, deterministic; reads only the
frozen views and ``RouterContext``.

Why. An instance that admits a request whenever its *prompt* fits in the free KV blocks (vLLM's
scheduler) over-commits memory when the batch's outputs are long: the decodes grow, blocks run out,
and the newest requests are preempted and later recomputed. On the paper's setting (4 x V100,
Llama-2-7B, 20 req/s) every placement router preempts about one request per request served, and the
recomputation is what the queues wait for. Holding the request at the router until some instance
has headroom (late binding, as a gateway's saturation detector / flow control does) avoids that;
the routing rule then picks among the instances that can start it now. Measured in
docs/evaluation.md ("Admission control").

The rule (``training.routing.admission_rule.can_start``, shared with the RL env and the learned router),
per instance: accepting, and either empty (nothing running or waiting, so
a held request always starts eventually, whatever its size) or such that once every prompt already
sent there has its KV blocks, this one still fits with ``headroom`` of the cache to spare:
``free - ceil(outstanding prompt tokens / block_size) >= ceil(prompt / block_size) + headroom x
total``. ``headroom`` is a fraction of the instance's KV capacity kept free for the batch's growth
(default 0.10, picked on the ``main`` workload's training-pool windows: docs/evaluation.md). Where
memory is ample the rule never holds, so the wrapped router behaves exactly as without it. The
learned router applies the same rule to its snapshot when its policy was trained with it
(``training.rl.policy_serving.startable``).
"""

from __future__ import annotations

from dataclasses import replace

from training.routing.admission_rule import AdmissionMemo
from training.routing.registry import RouterContext, RouterFactory, get_entry, get_router, register
from training.simulator.interface import ClusterView, RequestView, Router

DEFAULT_HEADROOM = 0.10
"""Fraction of an instance's KV blocks kept free beyond the prompt before it may start a request."""

HEADROOM_OPTION = "hold_kv_headroom"
"""``RouterContext.options`` key overriding ``DEFAULT_HEADROOM`` for the ``+hold`` routers."""

HOLD_SUFFIX = "+hold"

HOLD_BASES = ("round_robin", "least_tokens", "workload_impact_greedy")
"""Routers registered with admission control as ``<name>+hold``: the simplest, the best load-only and
the best latency-aware placement rule (docs/evaluation.md)."""


class HoldForHeadroom:
    """``inner`` placement among the instances that can start the request (``startable_instances``,
    through an ``AdmissionMemo``); while none can, ``Hold(room_needed(...))``, a ``DELAY`` that tells
    the replay which room would change the answer (``interface.Hold``).

    The promise holds: the answer is DELAY exactly when no instance satisfies ``can_start``, which is
    ``accepting`` and (empty or ``room_needed`` blocks free beyond the committed ones:
    ``admission_rule.room_needed``), and the inner router is not asked then, so its state plays no
    part. ``block_size`` must be the replay's ``InstanceConfig.block_size`` (the registry passes
    ``RouterContext.block_size``, taken from the same config).

    The inner router sees the cluster with every other instance marked not accepting, so any router
    that honours ``accepting`` (every registered one does) works unchanged.
    """

    def __init__(self, inner: Router, block_size: int, headroom: float = DEFAULT_HEADROOM) -> None:
        if not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be in [0, 1), got {headroom}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.inner = inner
        self.memo = AdmissionMemo(block_size, headroom)
        self.name = f"{inner.name}{HOLD_SUFFIX}"
        self.needs_request_stats = bool(getattr(inner, "needs_request_stats", False))

    @property
    def headroom(self) -> float:
        """The KV headroom of the rule (held by ``memo``, which applies it)."""
        return self.memo.headroom

    def reset(self, num_instances: int, seed: int) -> None:
        self.inner.reset(num_instances, seed)
        self.memo.clear()

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        startable = self.memo.startable(cluster, request.prompt_tokens)
        if startable is None:
            hold = self.memo.hold(cluster, request.prompt_tokens)  # memoised: no second check
            assert hold is not None
            return hold
        restricted = ClusterView(
            now_s=cluster.now_s,
            instances=tuple(
                v if ok else replace(v, accepting=False)
                for v, ok in zip(cluster.instances, startable, strict=True)
            ),
            router_queue_len=cluster.router_queue_len,
        )
        return self.inner.route(request, restricted)


def _hold_factory(base: str) -> RouterFactory:
    def make(ctx: RouterContext) -> Router:
        headroom = float(ctx.options.get(HEADROOM_OPTION, DEFAULT_HEADROOM))  # type: ignore[arg-type]
        return HoldForHeadroom(get_router(base, ctx), ctx.block_size, headroom)

    return make


for _base in HOLD_BASES:
    _entry = get_entry(_base)
    register(
        f"{_base}{HOLD_SUFFIX}",
        _hold_factory(_base),
        description=f"admission control: hold at the router until an instance has "
        f"{DEFAULT_HEADROOM:.0%} KV headroom, then {_base}",
        oracle=_entry.oracle,
        needs_predictions=_entry.needs_predictions,
        needs_latency_model=_entry.needs_latency_model,
        mirrors="late binding with a saturation check (llm-d flow control, Llumnix-style central queue)",
        admission=True,
    )
