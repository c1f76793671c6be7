"""Small helpers shared by the built-in routers: seeded tie-breaking and latency estimates.

Pure numpy; called on every routing decision, so kept allocation-light. The admission rule the
``+hold`` routers, the RL env and the learned router share is ``admission_rule``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.routing.registry import RouterContext
from training.simulator.interface import DELAY, ClusterView, InstanceView
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
