"""The admission rule: may an instance start a request now and keep KV headroom (``can_start``)?

Who calls this: the ``<router>+hold`` wrappers (``training.routing.admission``), the RL env
(``training.rl.env``) and the learned router (``training.rl.router``), once per routing decision and
per decision tick while a request is held. Pure; reads only the frozen views.

Why a module of its own: ``admission`` registers the ``+hold`` routers when it is imported, which
loads the built-in routers of the registry. The env and the learned router apply the same rule
without building any registered router, so they import the rule from here, and importing them
leaves the registry as it is. The rule and its headroom default are explained in ``admission``.
"""

from __future__ import annotations

import math

from training.simulator.interface import ClusterView, Hold, InstanceView


def can_start(view: InstanceView, prompt_tokens: int, block_size: int, headroom: float) -> bool:
    """Whether ``view``'s instance can take a ``prompt_tokens`` request now and keep ``headroom`` of its
    KV cache free once every prompt already sent there (``outstanding_prompt_tokens``) has its blocks.
    An empty instance always can (so a held request starts eventually, whatever its size)."""
    if not view.accepting:
        return False
    if view.num_requests == 0:
        return True
    queued = math.ceil(view.outstanding_prompt_tokens / block_size)
    free = view.kv_total_blocks - view.kv_used_blocks - queued
    return free >= math.ceil(prompt_tokens / block_size) + headroom * view.kv_total_blocks


def room_needed(prompt_tokens: int, block_size: int, headroom: float, kv_total_blocks: int) -> float:
    """The room (``interface.Hold.room_blocks``) an instance needs to start the request under
    ``can_start``: ``ceil(prompt / block_size) + headroom x kv_total_blocks`` free blocks beyond its
    committed ones.

    ``can_start(view, ...)`` is exactly: ``view.accepting`` and (``view.num_requests == 0`` or
    ``kv_total_blocks - (kv_used_blocks + ceil(outstanding_prompt_tokens / block_size)) >=
    room_needed(...)``), the form ``Hold`` promises in (tests/training/routing/test_admission_rule_hold.py).
    So a router applying the rule may answer ``Hold(room_needed(...))`` when no instance can start the
    request, and the replay skips re-offering it until an instance has that room."""
    return math.ceil(prompt_tokens / block_size) + headroom * kv_total_blocks


def startable_instances(
    cluster: ClusterView, prompt_tokens: int, block_size: int, headroom: float
) -> list[bool]:
    """``can_start`` for every instance of ``cluster``, in index order."""
    return [can_start(v, prompt_tokens, block_size, headroom) for v in cluster.instances]


class AdmissionMemo:
    """``startable_instances`` for one block size and headroom, remembering where nothing could start.

    A decision tick offers every held request against the same frozen tuple of instance views (the
    simulator reuses it until a request is placed), and ``can_start`` only gets harder as the prompt
    grows once no instance is empty. So after a prompt of ``p`` tokens found no instance, any prompt
    of at least ``p`` tokens against the *same* tuple (checked by identity; the memo keeps a reference,
    so the tuple cannot be freed and its id reused) is refused without looking at the views. Exact:
    the answers are the ones ``startable_instances`` gives. On an overloaded cluster with many held
    requests this turns the per-tick cost from one check per held request and instance into about one
    per distinct smaller prompt.
    """

    def __init__(self, block_size: int, headroom: float) -> None:
        self.block_size = block_size
        self.headroom = headroom
        self._views: tuple[InstanceView, ...] | None = None
        self._blocked_from = 0

    def startable(self, cluster: ClusterView, prompt_tokens: int) -> list[bool] | None:
        """``startable_instances`` of ``cluster``, or None when no instance can start the request."""
        views = cluster.instances
        same = views is self._views
        if same and prompt_tokens >= self._blocked_from:
            return None
        ok = startable_instances(cluster, prompt_tokens, self.block_size, self.headroom)
        if any(ok):
            return ok
        if not same or prompt_tokens < self._blocked_from:
            self._views, self._blocked_from = views, prompt_tokens
        return None

    def hold(self, cluster: ClusterView, prompt_tokens: int) -> Hold | None:
        """None when some instance can start the request; else the answer that holds it:
        ``Hold(room_needed(...))``, a DELAY that lets the replay skip re-offering the request until an
        instance has that room (``interface.Hold``). Who calls this: the ``+hold`` routers and the RL
        env, once per decision where the rule applies."""
        if self.startable(cluster, prompt_tokens) is not None:
            return None
        views = cluster.instances
        total = views[0].kv_total_blocks if views else 0  # one InstanceConfig: every instance the same
        return Hold(room_needed(prompt_tokens, self.block_size, self.headroom, total))

    def clear(self) -> None:
        self._views = None
        self._blocked_from = 0
