"""Small helpers shared by the built-in routers: seeded tie-breaking, latency estimates and the
admission rule (``can_start``; the ``+hold`` routers, the RL env and the learned router use it).

Pure numpy; called on every routing decision, so kept allocation-light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.routing.base import DELAY, ClusterView, InstanceView
from training.routing.registry import RouterContext
from training.simulator.latency import LatencyModel
from training.simulator.profiles import PAPER_PROFILE, load_latency_model


def latency_model_of(ctx: RouterContext) -> LatencyModel:
    """The context's latency model, else the paper's linear V100 profile (needs no files)."""
    return ctx.latency_model if ctx.latency_model is not None else load_latency_model(PAPER_PROFILE)


def prefill_s(lm: LatencyModel, prompt_tokens: float) -> float:
    """Seconds to prefill one prompt alone (one iteration, no decodes in the batch)."""
    p = max(0, round(prompt_tokens))
    return float(lm.iteration_time(p, float(p) * p, 0, 0)) if p else 0.0


def decode_step_s(lm: LatencyModel, decode_seqs: int, context_tokens: float) -> float:
    """Seconds for one decode-only iteration of ``decode_seqs`` sequences over ``context_tokens``."""
    if decode_seqs <= 0:
        return 0.0
    a, b = lm.decode_coeffs(decode_seqs)
    return float(a + b * max(0.0, context_tokens))


def isolated_decode_s(lm: LatencyModel, prompt_tokens: float, output_tokens: float) -> float:
    """Seconds to decode ``output_tokens`` alone on an idle instance (context grows by one per token)."""
    n = max(0.0, output_tokens)
    a, b = lm.decode_coeffs(1)
    return float(n * a + b * (n * prompt_tokens + n * (n - 1) / 2.0))


def context_tokens(view: InstanceView, block_size: int) -> float:
    """KV-resident tokens on an instance, from its used blocks (an upper estimate: blocks are padded)."""
    return float(view.kv_used_blocks * block_size)


def pick_min(
    scores: Sequence[float] | np.ndarray, candidates: Sequence[int], rng: np.random.Generator | None
) -> int:
    """The candidate with the lowest score; ties broken uniformly at random with ``rng`` (else lowest)."""
    if not candidates:
        return DELAY
    s = np.asarray(scores, dtype=np.float64)
    best = np.flatnonzero(s <= s.min() + 1e-12 * max(1.0, abs(float(s.min()))))
    k = int(best[0]) if rng is None or len(best) == 1 else int(best[rng.integers(len(best))])
    return candidates[k]


def accepting_views(cluster: ClusterView) -> tuple[InstanceView, ...]:
    return tuple(v for v in cluster.instances if v.accepting)


def seeded_rng(seed: int, salt: int) -> np.random.Generator:
    """A generator derived from the replay seed and a per-router salt (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, salt]))


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

    def clear(self) -> None:
        self._views = None
        self._blocked_from = 0
