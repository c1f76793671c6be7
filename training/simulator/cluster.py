"""The m instances behind the router, and the frozen snapshot (``ClusterView``) a router decides on.

Who calls this: ``engine.simulate`` once per routing decision (``view``) and per routed request
(``route``). Views are built from the instances' state at their last iteration boundary (decode
stretches are synced first), never handing out live objects. An instance's view is rebuilt only when
the instance changed since the previous snapshot (its ``mut`` counter); otherwise the frozen view is
reused (tests/training/simulator/test_batch_steps.py::test_reused_instance_views_equal_fresh_ones).
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
        # The latest view of each instance and the instance's ``mut`` when it was built.
        self._views: list[InstanceView | None] = [None] * len(self.instances)
        self._muts: list[int] = [-1] * len(self.instances)

    def fork(self, memo: dict[int, ReqState] | None = None) -> Cluster:
        """An independent copy of every instance's mutable state (``Instance.fork``, one shared
        ``memo`` mapping ``id(original ReqState)`` to its copy, for the caller to remap its own
        references); config and latency model are shared. The cached views are frozen, so shared.
        Who calls this: a replay fork (lookahead rollouts)."""
        if memo is None:
            memo = {}
        new = Cluster.__new__(Cluster)
        new.__dict__.update(self.__dict__)
        new.instances = [inst.fork(memo) for inst in self.instances]
        new._views = list(self._views)
        new._muts = list(self._muts)
        return new

    def _base_views(self, now: float) -> tuple[InstanceView, ...]:
        key = (now, self.placements)
        if key == self._cache_key:
            return self._cache
        stats = self.config.request_stats
        views = self._views
        muts = self._muts
        for i, inst in enumerate(self.instances):
            st = inst.stretch
            if st is not None and inst.busy and st.ends[st.applied] <= now:
                inst.sync(now)  # an iteration of its decode stretch ended since the last sync
            if inst.mut == muts[i] and views[i] is not None:
                continue  # unchanged since its last view (views are frozen: reuse it)
            muts[i] = inst.mut
            n_wait = len(inst.waiting) + len(inst.preempted)
            n_run = inst.num_running
            n_pre = inst.run_prefilling
            views[i] = InstanceView(
                index=inst.index,
                num_running=n_run,
                num_waiting=n_wait,
                kv_used_blocks=inst.used_private + inst.pinned_cached_blocks,
                kv_total_blocks=inst.total_blocks,
                outstanding_prompt_tokens=inst.wait_prompt_sum + inst.run_prefill_left,
                outstanding_decode_tokens=inst.wait_decode_sum + inst.run_decode_left,
                num_prefill_requests=n_wait + n_pre,
                num_decode_requests=n_run - n_pre,
                cached_prefix_blocks=0,
                accepting=inst.max_waiting is None or n_wait < inst.max_waiting,
                request_stats=inst.request_stats() if stats else None,
            )
        self._cache_key = key
        self._cache = tuple(views)  # type: ignore[arg-type]
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
            load = inst.num_running + inst.num_waiting
            if best_load is None or load < best_load:
                best, best_load = inst.index, load
        return best
