"""Load-balancing baselines people deploy, each as one small router class.

Who calls this: the simulator, once per routing decision, through the registry (see
``training.routing.registry``). Every router picks only from ``cluster.accepting`` (``DELAY`` when
none accepts) and draws randomness only from generators seeded in ``reset``.

Each class names the production system it mirrors. Units follow ``training.simulator.interface``:
tokens, KV blocks, seconds of simulated time.
"""

from __future__ import annotations

import numpy as np

from training.routing.estimates import accepting_views, pick_min, seeded_rng
from training.routing.registry import RouterContext, register
from training.simulator.interface import DELAY, ClusterView, InstanceView, RequestView


class _SeededRouter:
    """Shared reset logic: one ``numpy`` generator per replay, derived from the seed."""

    name = "base"
    _salt = 0

    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.num_instances = ctx.num_instances
        self.rng = seeded_rng(0, self._salt)

    def reset(self, num_instances: int, seed: int) -> None:
        self.num_instances = num_instances
        self.rng = seeded_rng(seed, self._salt)


class RoundRobin(_SeededRouter):
    """Cycle through instances in index order, skipping those not accepting.

    Mirrors: Kubernetes Service / Envoy / nginx ``round_robin``; vLLM production-stack
    ``roundrobin`` routing logic. The paper's main baseline.
    """

    name = "round_robin"
    _salt = 1

    def reset(self, num_instances: int, seed: int) -> None:
        super().reset(num_instances, seed)
        self._next = 0

    def __init__(self, ctx: RouterContext) -> None:
        super().__init__(ctx)
        self._next = 0

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        n = len(cluster.instances)
        for step in range(n):
            i = (self._next + step) % n
            if cluster.instances[i].accepting:
                self._next = (i + 1) % n
                return cluster.instances[i].index
        return DELAY


class Random(_SeededRouter):
    """Uniformly random accepting instance. Mirrors: Envoy / nginx ``random`` load balancing."""

    name = "random"
    _salt = 2

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        acc = cluster.accepting
        return acc[int(self.rng.integers(len(acc)))] if acc else DELAY


class PowerOfTwo(_SeededRouter):
    """Two random accepting instances; keep the one with fewer requests (running + waiting).

    Mirrors: Envoy ``LEAST_REQUEST`` (default ``choice_count=2``), nginx ``random two least_conn``;
    Mitzenmacher's power of two choices. Ties go to the first draw.
    """

    name = "power_of_two"
    _salt = 3

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        acc = cluster.accepting
        if not acc:
            return DELAY
        if len(acc) == 1:
            return acc[0]
        a, b = self.rng.choice(len(acc), size=2, replace=False)
        va = _by_index(cluster, acc[a])
        vb = _by_index(cluster, acc[b])
        return va.index if va.num_requests <= vb.num_requests else vb.index


class LeastRequest(_SeededRouter):
    """Fewest requests in flight (running + waiting), random tie-break.

    Mirrors: vLLM production-stack / AIBrix ``least-request``, nginx ``least_conn``, JSQ.
    """

    name = "least_request"
    _salt = 4

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        return pick_min([v.num_requests for v in views], [v.index for v in views], self.rng)


class LeastQueue(_SeededRouter):
    """Fewest waiting requests (``num_requests_waiting``), random tie-break.

    Mirrors: Gateway API Inference Extension ``least-queue`` filter / queue scorer used alone.
    """

    name = "least_queue"
    _salt = 5

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        return pick_min([v.num_waiting for v in views], [v.index for v in views], self.rng)


class LeastKV(_SeededRouter):
    """Lowest KV-cache usage fraction (``kv_cache_usage_perc``), random tie-break.

    Mirrors: Gateway API Inference Extension ``least-kv-cache`` filter; AIBrix ``least-kv-cache``.
    """

    name = "least_kv"
    _salt = 6

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        return pick_min([v.kv_usage for v in views], [v.index for v in views], self.rng)


class MaxFreeCapacity(_SeededRouter):
    """Most free KV-cache blocks (absolute, so it differs from ``least_kv`` on mixed capacities).

    Mirrors: capacity-based balancing (AIBrix ``throughput``/free-memory style; Llumnix's
    freeness metric without migration).
    """

    name = "max_free_capacity"
    _salt = 7

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        return pick_min(
            [-(v.kv_total_blocks - v.kv_used_blocks) for v in views], [v.index for v in views], self.rng
        )


class LeastTokens(_SeededRouter):
    """Fewest outstanding tokens: prompt tokens not yet prefilled + *predicted* decode tokens left.

    Mirrors: least-outstanding-tokens balancing (AIBrix ``least-latency``/token-aware policies;
    Preble/SGLang-style load in tokens). Uses the injected length predictor's outputs.
    """

    name = "least_tokens"
    _salt = 8

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        load = [v.outstanding_prompt_tokens + v.outstanding_decode_tokens for v in views]
        return pick_min(load, [v.index for v in views], self.rng)


class DedicatedSmallLarge(_SeededRouter):
    """Dedicated pools: the first half of the instances serves short predicted outputs, the rest long.

    A request is "long" when ``predicted_output_tokens >= ctx.length_threshold_tokens``. Within its
    pool the router picks the fewest requests in flight (``least_request``). With one instance both
    pools are that instance; with an odd count the long pool gets the extra one. When no instance of
    the pool accepts, the request waits at the router (``DELAY``): dedicated pools do not spill.

    Mirrors: the paper's "small-large" baseline (Jain et al., arXiv 2408.13510, Table 2) and
    size-based pool splitting in production (separate deployments for long generations).
    """

    name = "dedicated_small_large"
    _salt = 9

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        n = len(cluster.instances)
        n_small = max(1, n // 2) if n > 1 else 1
        long = request.predicted_output_tokens >= self.ctx.length_threshold_tokens
        if n == 1:
            pool = {cluster.instances[0].index}
        elif long:
            pool = {v.index for v in cluster.instances[n_small:]}
        else:
            pool = {v.index for v in cluster.instances[:n_small]}
        views = [v for v in cluster.instances if v.accepting and v.index in pool]
        return pick_min([v.num_requests for v in views], [v.index for v in views], self.rng)


class DecodeBalancer(_SeededRouter):
    """ORACLE. Fewest outstanding decode tokens, computed from the *true* output lengths.

    The harness replays this router with ``OraclePredictor``, so ``outstanding_decode_tokens`` is the
    true number of tokens left to generate on each instance: an upper bound on what decode-length
    balancing can achieve, not a deployable router. Ties go to fewer outstanding prompt tokens, then
    at random.

    Mirrors: the paper's "decode balancer" baseline (arXiv 2408.13510, Table 2).
    """

    name = "decode_balancer"
    _salt = 10

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        if not views:
            return DELAY
        # lexicographic: decode tokens, then prompt tokens (scaled far below one decode token)
        keys = np.array([v.outstanding_decode_tokens for v in views], dtype=np.float64)
        prompts = np.array([v.outstanding_prompt_tokens for v in views], dtype=np.float64)
        keys = keys + prompts / (1.0 + prompts.max()) * 0.5
        return pick_min(keys, [v.index for v in views], self.rng)


def _by_index(cluster: ClusterView, index: int) -> InstanceView:
    view = cluster.instances[index] if index < len(cluster.instances) else None
    if view is not None and view.index == index:
        return view
    return next(v for v in cluster.instances if v.index == index)


register(
    "round_robin",
    RoundRobin,
    description="cycle through accepting instances in order",
    mirrors="Kubernetes Service / Envoy round robin; vLLM production-stack roundrobin",
)
register("random", Random, description="uniformly random accepting instance", mirrors="Envoy/nginx random")
register(
    "power_of_two",
    PowerOfTwo,
    description="two random choices, fewer running+waiting requests",
    mirrors="Envoy LEAST_REQUEST (choice_count=2); nginx random two least_conn",
)
register(
    "least_request",
    LeastRequest,
    description="fewest running+waiting requests, random tie-break",
    mirrors="vLLM production-stack / AIBrix least-request; JSQ",
)
register(
    "least_queue",
    LeastQueue,
    description="fewest waiting requests",
    mirrors="Gateway API Inference Extension least-queue filter",
)
register(
    "least_kv",
    LeastKV,
    description="lowest KV-cache usage fraction",
    mirrors="Gateway API Inference Extension least-kv-cache filter; AIBrix least-kv-cache",
)
register(
    "least_tokens",
    LeastTokens,
    description="fewest outstanding prompt + predicted decode tokens",
    needs_predictions=True,
    mirrors="least-outstanding-tokens balancing (AIBrix / SGLang token load)",
)
register(
    "max_free_capacity",
    MaxFreeCapacity,
    description="most free KV-cache blocks",
    mirrors="free-KV-capacity balancing (Llumnix freeness without migration)",
)
register(
    "dedicated_small_large",
    DedicatedSmallLarge,
    description="half the instances for short predicted outputs, half for long; least_request within",
    needs_predictions=True,
    mirrors="paper's small-large baseline (arXiv 2408.13510 Table 2)",
)
register(
    "decode_balancer",
    DecodeBalancer,
    description="ORACLE: fewest outstanding true decode tokens",
    oracle=True,
    mirrors="paper's decode balancer (arXiv 2408.13510 Table 2)",
)
