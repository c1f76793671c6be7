"""The replay's event kinds and their one tie-break order.

Who uses this: ``engine.ReplayState``'s event loop. Events are tuples ``(time_s, kind, key, version)``
compared left to right (one heap, merged by the same comparison with the sorted list of arrivals),
so simultaneous events are processed:

1. ``ITERATION_END`` (by instance index): iterations that end at t complete first, so finished
   requests free their KV cache and routers deciding at t see the post-iteration state.
2. ``ROUTER_TICK``: requests held at the router (``DELAY``) are offered again, in arrival order.
3. ``ARRIVAL`` (by request position in the input): new requests are offered to the router; held
   ones go first because they arrived earlier.
4. ``SCHEDULE`` (by instance index): an idle instance (or one whose iteration just ended) forms its
   next batch, after every routing decision at t, so requests routed at t can join that batch.

``version`` implements lazy invalidation: an instance bumps its version when it cuts a decode stretch
short, and heap entries with an old version are skipped.
"""

from __future__ import annotations

import enum


class EventKind(enum.IntEnum):
    """Event kinds; the integer value is the tie-break rank at equal times (lower first)."""

    ITERATION_END = 0
    ROUTER_TICK = 1
    ARRIVAL = 2
    SCHEDULE = 3


ITERATION_END = int(EventKind.ITERATION_END)
ROUTER_TICK = int(EventKind.ROUTER_TICK)
ARRIVAL = int(EventKind.ARRIVAL)
SCHEDULE = int(EventKind.SCHEDULE)
