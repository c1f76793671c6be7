"""The paper's workload-mixing penalty: what placing a request on an instance costs the others there.

Who calls this: routers that weigh mixing (``workload_impact_greedy``-style heuristics), the RL
environment's reward (once per routing decision), and the registered impact estimator's pyfunc.
Pure Python over the frozen router views and a ``LatencyModel``; no allocation beyond the result.

Jain et al. (arXiv 2408.13510, Section 4) split the latency impact of adding request ``r`` (prompt
``p``, predicted output ``o``) to instance ``i`` into two parts, mixed with ``alpha = 0.5``:

- **prefill impact**: the iteration that prefills ``r`` also carries the instance's ``d`` decoding
  requests (vLLM mixes them in one batch), so each of them waits for the extra time that prefill
  adds to its iteration: ``d x [T(p, p^2, d, C) - T(0, 0, d, C)]``, with ``T`` the latency model's
  ``iteration_time`` and ``C`` the instance's KV-resident context.
- **decode impact**: while ``r`` decodes, every iteration of the ``m`` requests already there costs
  ``delta = step(n + 1, C + p + o / 2) - step(n, C)`` more (``n`` = sequences in the batch, capped
  by ``max_batch_size``), for the iterations they overlap with ``r``: about ``min(o, D / m)`` each,
  ``D`` = outstanding predicted decode tokens on the instance. Total ``m x overlap x delta``.

``penalty = alpha x prefill impact + (1 - alpha) x decode impact``, in seconds of latency added to
other requests (summed over them). Both parts are 0 on an idle instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.simulator.interface import InstanceView, RequestView
from training.simulator.latency import LatencyModel

DEFAULT_ALPHA = 0.5
"""The paper's weight between prefill impact and decode impact."""


@dataclass(frozen=True, slots=True)
class MixingImpact:
    """Seconds of latency that placing one request adds to the requests already on an instance."""

    prefill_s: float
    decode_s: float

    def penalty(self, alpha: float = DEFAULT_ALPHA) -> float:
        """``alpha x prefill_s + (1 - alpha) x decode_s`` (the paper's mixing penalty)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        return alpha * self.prefill_s + (1.0 - alpha) * self.decode_s


def mixing_impact(
    request: RequestView,
    view: InstanceView,
    latency_model: LatencyModel,
    *,
    block_size: int,
    max_batch_size: int,
) -> MixingImpact:
    """Prefill and decode impact of placing ``request`` on the instance seen as ``view``.

    ``block_size`` turns ``kv_used_blocks`` into context tokens (an upper estimate: blocks are
    padded); ``max_batch_size`` caps how many co-resident requests share a decode iteration.
    Predicted output lengths only (``predicted_output_tokens``, ``outstanding_decode_tokens``).
    """
    m = view.num_running + view.num_waiting
    if m == 0:
        return MixingImpact(0.0, 0.0)
    p = max(0, int(request.prompt_tokens))
    o = max(1.0, float(request.predicted_output_tokens))
    ctx = float(view.kv_used_blocks * block_size)
    d = view.num_decode_requests
    prefill_s = 0.0
    if d and p:
        c = int(ctx)
        with_r = latency_model.iteration_time(p, float(p) * p, d, c)
        prefill_s = d * max(0.0, with_r - latency_model.iteration_time(0, 0.0, d, c))
    n = min(m, max_batch_size)
    a0, b0 = latency_model.decode_coeffs(n)
    a1, b1 = latency_model.decode_coeffs(min(n + 1, max_batch_size))
    ctx_all = ctx + view.outstanding_prompt_tokens
    delta = (a1 + b1 * (ctx_all + p + o / 2.0)) - (a0 + b0 * ctx_all)
    overlap = min(o, view.outstanding_decode_tokens / m)
    return MixingImpact(prefill_s, m * overlap * max(0.0, delta))


def mixing_penalty_s(
    request: RequestView,
    view: InstanceView,
    latency_model: LatencyModel,
    *,
    block_size: int,
    max_batch_size: int,
    alpha: float = DEFAULT_ALPHA,
) -> float:
    """The paper's mixing penalty in seconds: ``mixing_impact(...).penalty(alpha)``."""
    return mixing_impact(
        request, view, latency_model, block_size=block_size, max_batch_size=max_batch_size
    ).penalty(alpha)
