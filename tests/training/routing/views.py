"""Builders of frozen router views for tests (hand-built and random)."""

from __future__ import annotations

import dataclasses

import numpy as np

from training.simulator.interface import ClusterView, InstanceView, RequestView


def inst(index: int, **kw) -> InstanceView:
    fields = {
        "num_running": 0,
        "num_waiting": 0,
        "kv_used_blocks": 0,
        "kv_total_blocks": 1000,
        "outstanding_prompt_tokens": 0,
        "outstanding_decode_tokens": 0.0,
        "num_prefill_requests": 0,
        "num_decode_requests": 0,
    }
    fields.update(kw)
    return InstanceView(index=index, **fields)


def cluster(*instances: InstanceView, now: float = 0.0) -> ClusterView:
    return ClusterView(now_s=now, instances=tuple(instances))


def req(
    prompt: int = 100, predicted: float = 100.0, task: str = "t", prefix=None, rid: str = "r"
) -> RequestView:
    return RequestView(rid, 0.0, 0.0, prompt, task, predicted, prefix)


def with_request_stats(v: InstanceView) -> InstanceView:
    """``v`` with per-request stats consistent with its counts (waiting and prefilling requests, then
    decoding ones), as the replay gives routers with ``needs_request_stats``. Deterministic: it draws
    no random numbers, so the views of a seed stay the same with or without it."""
    prefilling = v.num_running + v.num_waiting - v.num_decode_requests
    stats = [(64 * (i + 1), 50.0 * (i + 1), 0, False) for i in range(prefilling)]
    stats += [(32 * (i + 1), 300.0, 10 * i, True) for i in range(v.num_decode_requests)]
    return dataclasses.replace(v, request_stats=tuple(stats))


def random_view(
    rng: np.random.Generator, n: int | None = None, p_accept: float = 0.8, request_stats: bool = False
):
    """A random (request, cluster) pair with consistent fields (``request_stats``: with
    ``with_request_stats`` on every instance)."""
    n = n or int(rng.integers(1, 9))
    views = []
    for i in range(n):
        total = int(rng.integers(50, 5000))
        running = int(rng.integers(0, 40))
        waiting = int(rng.integers(0, 20))
        decode = int(rng.integers(0, running + 1))
        views.append(
            InstanceView(
                index=i,
                num_running=running,
                num_waiting=waiting,
                kv_used_blocks=int(rng.integers(0, total + 1)),
                kv_total_blocks=total,
                outstanding_prompt_tokens=int(rng.integers(0, 20000)),
                outstanding_decode_tokens=float(rng.uniform(0, 20000)),
                num_prefill_requests=running - decode + waiting,
                num_decode_requests=decode,
                cached_prefix_blocks=int(rng.integers(0, 4)),
                accepting=bool(rng.random() < p_accept),
            )
        )
    prefix = (
        tuple(int(x) for x in rng.integers(0, 100, size=int(rng.integers(1, 4))))
        if rng.random() < 0.5
        else None
    )
    request = RequestView(
        f"r{int(rng.integers(1 << 30))}",
        0.0,
        float(rng.uniform(0, 0.5)),
        int(rng.integers(1, 4000)),
        str(rng.choice(["a", "b", "c"])),
        float(rng.uniform(1, 2000)),
        prefix,
    )
    if request_stats:
        views = [with_request_stats(v) for v in views]
    return request, ClusterView(
        now_s=request.now_s, instances=tuple(views), router_queue_len=int(rng.integers(0, 5))
    )
