"""The request noun of the replay: what arrives (``Request``) and where it is in its life (``RequestStatus``).

A ``Request`` is the simulator's view of one row of the warehouse's canonical request table
(``marts.requests``): immutable input, never mutated by the replay. Per-request timings are recorded
by the simulator in its own result arrays, indexed by the request's position in the replayed list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RequestStatus(enum.IntEnum):
    """A request's life, in the order it normally goes through (vLLM ``RequestStatus`` style).

    ``PREEMPTED`` requests lost their KV cache and go back to the front of the instance queue; they
    recompute their prompt plus the tokens generated so far when readmitted.
    """

    QUEUED_AT_ROUTER = 0
    WAITING_AT_INSTANCE = 1
    PREFILLING = 2
    DECODING = 3
    PREEMPTED = 4
    FINISHED = 5

    @property
    def is_finished(self) -> bool:
        """The request has produced its last token (the replay's end-of-life test; one place, so a
        second terminal status would be added here only)."""
        return self is RequestStatus.FINISHED


@dataclass(frozen=True, slots=True)
class Request:
    """One LLM request to replay.

    Attributes:
        request_id: unique within one replay.
        arrival_s: seconds from trace start when the request reaches the router.
        prompt_tokens: prompt length in tokens (> 0).
        output_tokens: true number of output tokens (>= 1). Only the simulator and the explicitly
            oracle routers/predictors may read it; routers see predictions.
        task: task label (e.g. ``code``, ``conv``, ``summarization``); ``""`` when unknown.
        prefix_hash_ids: ids of the prompt's leading prefix blocks (Mooncake: 512 tokens each), or
            ``None`` when the trace carries none.
        prompt_text: the prompt, when known (length predictors may use it).
        row_id: the warehouse row (``marts.requests.request_id``) this request replays, when it was
            read from one (stored length predictions are looked up by it); ``None`` for synthetic
            requests. A sampled workload (``main``) replays a row several times under different
            ``request_id`` values, all with the row's ``row_id``.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    task: str = ""
    prefix_hash_ids: tuple[int, ...] | None = None
    prompt_text: str | None = None
    row_id: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_tokens <= 0:
            raise ValueError(
                f"request {self.request_id}: prompt_tokens must be > 0, got {self.prompt_tokens}"
            )
        if self.output_tokens <= 0:
            raise ValueError(
                f"request {self.request_id}: output_tokens must be > 0, got {self.output_tokens}"
            )
        if not self.arrival_s >= 0.0:
            raise ValueError(f"request {self.request_id}: arrival_s must be >= 0, got {self.arrival_s}")
