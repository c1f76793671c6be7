"""The llm-d / Gateway API Inference Extension (GIE) default weighted-scorer router.

Who calls this: the simulator through the registry, once per routing decision.

The endpoint picker (EPP) of GIE scores every candidate pod with a set of scorers, each returning a
value in [0, 1], sums ``weight x score`` and the max-score picker takes the best (ties broken at
random: the picker shuffles candidates first). llm-d's default profile weights, as configured in
its "intelligent inference scheduling" well-lit path: queue scorer 2, KV-cache-utilization
scorer 2, prefix-cache scorer 3. Scorer semantics, as in GIE's
``pkg/epp/scheduling/framework/plugins/scorer``:

- queue: ``(max_q - q) / (max_q - min_q)`` over the candidates' waiting-queue sizes; 1.0 for all
  when they are equal.
- kv-cache-utilization: ``1 - kv_cache_usage_perc``.
- prefix-cache: ``matched leading prefix blocks / request prefix blocks`` (0 when the request has
  no prefix hashes). Scored only when the request carries prefix ids, as the brief's setting asks;
  without them it would add 0 to every candidate anyway.
"""

from __future__ import annotations

import numpy as np

from training.routing.estimates import accepting_views, seeded_rng
from training.routing.registry import RouterContext, register
from training.simulator.interface import DELAY, ClusterView, RequestView

DEFAULT_WEIGHTS = {"queue": 2.0, "kv_cache": 2.0, "prefix_cache": 3.0}


class GIEDefault:
    """Weighted sum of GIE's queue, KV-utilisation and prefix-cache scorers; pick the max.

    Options (``RouterContext.options["gie_weights"]``): override any of ``queue``, ``kv_cache``,
    ``prefix_cache``.
    """

    name = "gie_default"

    def __init__(self, ctx: RouterContext) -> None:
        weights = dict(DEFAULT_WEIGHTS)
        override = ctx.options.get("gie_weights")
        if isinstance(override, dict):
            unknown = set(override) - set(weights)
            if unknown:
                raise ValueError(f"unknown gie_default weights {sorted(unknown)}")
            weights.update({k: float(v) for k, v in override.items()})
        self.weights = weights
        self.rng = seeded_rng(0, 101)

    def reset(self, num_instances: int, seed: int) -> None:
        self.rng = seeded_rng(seed, 101)

    def scores(self, request: RequestView, cluster: ClusterView) -> dict[int, float]:
        """Weighted score per accepting instance index (higher is better)."""
        views = accepting_views(cluster)
        if not views:
            return {}
        q = np.array([v.num_waiting for v in views], dtype=np.float64)
        qmin, qmax = q.min(), q.max()
        queue = np.ones_like(q) if qmax == qmin else (qmax - q) / (qmax - qmin)
        kv = np.array([1.0 - v.kv_usage for v in views])
        total = self.weights["queue"] * queue + self.weights["kv_cache"] * kv
        prefix = request.prefix_hash_ids
        if prefix:
            hit = np.array([min(v.cached_prefix_blocks, len(prefix)) / len(prefix) for v in views])
            total = total + self.weights["prefix_cache"] * hit
        return {v.index: float(s) for v, s in zip(views, total, strict=True)}

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        scores = self.scores(request, cluster)
        if not scores:
            return DELAY
        idx = list(scores)
        s = np.array([scores[i] for i in idx])
        best = np.flatnonzero(s >= s.max() - 1e-12)
        return idx[int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])]


register(
    "gie_default",
    GIEDefault,
    description="llm-d default weighted scorers: queue x2, KV utilisation x2, prefix cache x3",
    mirrors="llm-d inference scheduler / Gateway API Inference Extension EPP",
)
