"""The m instances behind the router, and the frozen snapshot (``ClusterView``) a router decides on.

Who calls this: ``engine.simulate`` once per routing decision (``view``) and per routed request
(``route``). Views are built from the instances' state at their last iteration boundary (decode
stretches are synced first), never handing out live objects.
"""

from __future__ import annotations

from dataclasses import replace

from training.simulator.config import ClusterConfig
from training.simulator.instance import Instance
from training.simulator.interface import ClusterView, InstanceView
from training.simulator.latency import IterationObserver, LatencyModel
from training.simulator.state import ReqState


class Cluster:
    def __init__(
        self,
        config: ClusterConfig,
        latency: LatencyModel,
        fast_forward: bool,
        observer: IterationObserver | None = None,
    ) -> None:
        self.config = config
        self.instances = [
            Instance(i, config.instance, latency, fast_forward, observer) for i in range(config.num_instances)
        ]
        # Snapshots are reused between decisions at the same instant until a request is placed
        # (a tick offering many held requests); ``placements`` counts placements for that key.
        self.placements = 0
        self._cache_key: tuple[float, int] | None = None
        self._cache: tuple[InstanceView, ...] = ()

    def _base_views(self, now: float) -> tuple[InstanceView, ...]:
        key = (now, self.placements)
        if key == self._cache_key:
            return self._cache
        views = []
        stats = self.config.request_stats
        for inst in self.instances:
            inst.sync(now)
            prompt, n_prefill, n_decode, decode = inst.load()
            views.append(
                InstanceView(
                    index=inst.index,
                    num_running=len(inst.running),
                    num_waiting=len(inst.waiting) + len(inst.preempted),
                    kv_used_blocks=inst.used_private + inst.pinned_cached_blocks,
                    kv_total_blocks=inst.total_blocks,
                    outstanding_prompt_tokens=prompt,
                    outstanding_decode_tokens=decode,
                    num_prefill_requests=n_prefill,
                    num_decode_requests=n_decode,
                    cached_prefix_blocks=0,
                    accepting=inst.accepting,
                    request_stats=inst.request_stats() if stats else None,
                )
            )
        self._cache_key = key
        self._cache = tuple(views)
        return self._cache

    def view(self, now: float, r: ReqState, router_queue_len: int) -> ClusterView:
        views = self._base_views(now)
        if r.cacheable:
            views = tuple(
                replace(v, cached_prefix_blocks=hits) if (hits := inst.prefix_hits(r.cacheable)) else v
                for v, inst in zip(views, self.instances, strict=True)
            )
        return ClusterView(now_s=now, instances=views, router_queue_len=router_queue_len)

    def fallback_instance(self) -> int | None:
        """The accepting instance with the fewest requests (lowest index on ties), or None."""
        best = None
        best_load = None
        for inst in self.instances:
            if not inst.accepting:
                continue
            load = len(inst.running) + inst.num_waiting
            if best_load is None or load < best_load:
                best, best_load = inst.index, load
        return best
