"""Mutable per-request replay state (the simulator's private side of a ``Request``).

Who uses this: ``instance`` and ``engine`` only; routers never see it (they get frozen views).
"""

from __future__ import annotations

from training.simulator.request import RequestStatus


class ReqState:
    """One request during a replay. Token counts in tokens, times in simulated seconds (NaN = unset).

    ``target``: tokens the next (re)prefill must cover (prompt, or prompt + generated after a
    preemption); ``computed``: tokens whose KV is stored; ``alloc``: KV blocks held (shared prefix
    blocks included); ``shared``: how many of those are prefix-cache blocks pinned by this request.
    """

    __slots__ = (
        "alloc",
        "anchor",
        "cacheable",
        "computed",
        "finish_s",
        "first_sched_s",
        "first_token_s",
        "generated",
        "idx",
        "instance",
        "order",
        "output",
        "pinned",
        "pred",
        "preemptions",
        "prompt",
        "qstat",
        "routed_s",
        "seq",
        "shared",
        "status",
        "target",
    )

    def __init__(self, idx: int, prompt: int, output: int, pred: float, cacheable: tuple[int, ...]) -> None:
        self.idx = idx
        self.prompt = prompt
        self.output = output
        self.pred = pred
        self.cacheable = cacheable
        self.target = prompt
        self.computed = 0
        self.generated = 0
        self.alloc = 0
        self.shared = 0
        self.pinned: list[int] = []
        self.status = RequestStatus.QUEUED_AT_ROUTER
        self.seq = -1
        self.instance = -1
        self.preemptions = 0
        self.order = -1
        self.anchor = 0
        nan = float("nan")
        self.routed_s = nan
        self.first_sched_s = nan
        self.first_token_s = nan
        self.finish_s = nan
        self.qstat: tuple[int, float, int, bool] | None = None
        """``Instance.request_stats`` entry while waiting (set when it joins a waiting queue)."""

    def copy(self) -> ReqState:
        """An independent copy (``pinned`` copied; ``cacheable`` is an immutable tuple, shared).

        Who calls this: ``Instance.fork`` / ``Cluster.fork`` through ``fork_state``, and a caller that
        forks a replay (its requests still at the router). O(1): one object, no per-token data."""
        new = _new(ReqState)
        new.alloc = self.alloc
        new.anchor = self.anchor
        new.cacheable = self.cacheable
        new.computed = self.computed
        new.finish_s = self.finish_s
        new.first_sched_s = self.first_sched_s
        new.first_token_s = self.first_token_s
        new.generated = self.generated
        new.idx = self.idx
        new.instance = self.instance
        new.order = self.order
        new.output = self.output
        new.pinned = list(self.pinned) if self.pinned else []
        new.pred = self.pred
        new.preemptions = self.preemptions
        new.prompt = self.prompt
        new.qstat = self.qstat
        new.routed_s = self.routed_s
        new.seq = self.seq
        new.shared = self.shared
        new.status = self.status
        new.target = self.target
        return new


_new = object.__new__


def fork_state(r: ReqState, memo: dict[int, ReqState]) -> ReqState:
    """The copy of ``r`` in one fork: made once per fork and looked up by ``id(r)`` in ``memo``, so
    every structure that holds ``r`` (an instance's queues, the caller's request list) gets the same
    copy. Who calls this: ``Instance.fork``; a replay fork remaps its own references with the same
    ``memo``."""
    new = memo.get(id(r))
    if new is None:
        new = memo[id(r)] = r.copy()
    return new
