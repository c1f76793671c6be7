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
        "cacheable",
        "computed",
        "finish_s",
        "first_sched_s",
        "first_token_s",
        "generated",
        "idx",
        "instance",
        "output",
        "pinned",
        "pred",
        "preemptions",
        "prompt",
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
        nan = float("nan")
        self.routed_s = nan
        self.first_sched_s = nan
        self.first_token_s = nan
        self.finish_s = nan
