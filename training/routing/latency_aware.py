"""Routers that estimate latency with the profile's latency model: min-min, TTFT-aware, workload impact.

Who calls this: the simulator through the registry, once per routing decision. All three read only
the frozen views plus ``RouterContext`` (latency model, block size, batch limit); output lengths
are the injected predictor's (``predicted_output_tokens`` / ``outstanding_decode_tokens``), never
the true ones. Costs are in seconds of simulated time, from ``LatencyModel``
(``iteration_time`` / ``decode_coeffs``; the paper's linear V100 model when the context has none).

Shared estimates, per instance ``i`` and the request ``r`` (prompt ``p``, predicted output ``o``):

- ``n_i``: sequences that will share the batch with ``r``: ``min(running + waiting, max_batch)``.
- ``ctx_i``: KV-resident context tokens (``kv_used_blocks x block_size``) plus prompts not yet
  prefilled.
- ``c``: prefill seconds per prompt token, from ``r``'s own prefill: ``prefill(p) / p``.
- ``step_i``: one decode iteration with ``r`` in the batch:
  ``a(n_i + 1) + b(n_i + 1) x (ctx_i + p + o / 2)``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from training.routing.estimates import (
    accepting_views,
    context_tokens,
    decode_step_s,
    isolated_decode_s,
    latency_model_of,
    pick_min,
    prefill_s,
    seeded_rng,
)
from training.routing.registry import RouterContext, register
from training.simulator.interface import DELAY, ClusterView, InstanceView, RequestView


@dataclass(frozen=True, slots=True)
class _Shared:
    n: int
    ctx_tokens: float
    prefill_per_token_s: float
    own_prefill_s: float
    step_s: float


class _LatencyRouter:
    name = "latency"
    _salt = 200

    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx
        self.lm = latency_model_of(ctx)
        self.rng = seeded_rng(0, self._salt)

    def reset(self, num_instances: int, seed: int) -> None:
        self.rng = seeded_rng(seed, self._salt)

    def _shared(self, request: RequestView, v: InstanceView) -> _Shared:
        p = float(request.prompt_tokens)
        o = max(1.0, float(request.predicted_output_tokens))
        own_prefill = prefill_s(self.lm, p)
        n = min(v.num_running + v.num_waiting, self.ctx.max_batch_size)
        ctx_tokens = context_tokens(v, self.ctx.block_size) + v.outstanding_prompt_tokens
        step = decode_step_s(self.lm, n + 1, ctx_tokens + p + o / 2.0)
        return _Shared(n, ctx_tokens, own_prefill / p if p > 0 else 0.0, own_prefill, step)

    def _capacity_wait_s(self, v: InstanceView, sh: _Shared) -> float:
        """Seconds until a batch slot frees when the instance is full (else 0).

        Requests beyond ``max_batch`` wait for running ones to finish; with ``D`` predicted decode
        tokens outstanding over ``n`` sequences, one finishes about every ``D / n^2`` iterations.
        """
        excess = v.num_running + v.num_waiting + 1 - self.ctx.max_batch_size
        if excess <= 0 or sh.n <= 0:
            return 0.0
        per_seq_iters = v.outstanding_decode_tokens / sh.n
        return excess * per_seq_iters / sh.n * sh.step_s

    def completion_s(self, request: RequestView, v: InstanceView) -> float:
        """Predicted E2E latency of ``request`` if placed on ``v`` now."""
        sh = self._shared(request, v)
        o = max(1.0, float(request.predicted_output_tokens))
        prefill_wait = sh.prefill_per_token_s * v.outstanding_prompt_tokens
        return self._capacity_wait_s(v, sh) + prefill_wait + sh.own_prefill_s + o * sh.step_s


class MinMin(_LatencyRouter):
    """Minimum predicted completion time of this job (the Min-Min / MCT rule of grid scheduling).

    Min-Min schedules the shortest predicted job first, each on the machine that completes it
    earliest. A router places one request per decision, so only the second half applies here: the
    instance minimising ``capacity wait + prefill of prompts ahead + own prefill + o x step_i``
    (see the module docstring). The "shortest first" ordering belongs to the router queue (the
    simulator's) and to instance queue policies (``lwl``), not to this placement rule.

    Mirrors: Min-Min / minimum-completion-time heuristics (Braun et al. 2001), used as LLM routing
    baselines (e.g. Llumnix/INFaaS-style completion-time estimates).
    """

    name = "min_min"
    _salt = 201

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        if not views:
            return DELAY
        return pick_min([self.completion_s(request, v) for v in views], [v.index for v in views], self.rng)


class MinExpectedLatency(_LatencyRouter):
    """TTFT-aware: minimise estimated queueing delay + prefill cost of the prompt.

    ``score_i = waiting_i x s_i / max(1, running_i) + prefill_i``, where ``prefill_i`` is the time of
    the iteration that prefills the prompt behind the prompts already queued there, mixed with the
    instance's running decodes (their KV context makes it slower on a busy instance), and ``s_i`` is
    the mean per-task expected service time of the requests this router recently sent to ``i`` (a
    running request frees a slot about every ``s_i / running_i`` seconds). The
    per-task expected service time is learned online from what the router sees: for each task, the
    running mean of ``prefill(p) + isolated decode(p, predicted o)``. Ignores how the request's own
    decode would be slowed (that is ``workload_impact_greedy``'s job).

    Mirrors: TTFT-predicting routers (llm-d predicted-latency / SLO-aware scorer, AIBrix
    ``least-latency``), with the latency model in place of a learned TTFT predictor.
    """

    name = "min_expected_latency"
    _salt = 202
    window = 64

    def reset(self, num_instances: int, seed: int) -> None:
        super().reset(num_instances, seed)
        self._task_sum: dict[str, float] = {}
        self._task_n: dict[str, int] = {}
        self._sent: list[deque[str]] = [deque(maxlen=self.window) for _ in range(num_instances)]

    def __init__(self, ctx: RouterContext) -> None:
        super().__init__(ctx)
        self.reset(ctx.num_instances, 0)

    def prefill_cost_s(self, request: RequestView, v: InstanceView) -> float:
        """The iteration that prefills the prompt behind the prompts already queued, sharing the batch
        with the instance's running decodes (vLLM mixes them): its time under the latency model."""
        p = int(request.prompt_tokens)
        ahead = int(v.outstanding_prompt_tokens)
        decode_seqs = v.num_decode_requests
        ctx = context_tokens(v, self.ctx.block_size) if decode_seqs else 0.0
        return float(
            self.lm.iteration_time(ahead + p, float(p) * p + float(ahead) * p, decode_seqs, int(ctx))
        )

    def task_service_s(self, task: str) -> float:
        n = self._task_n.get(task, 0)
        if n:
            return self._task_sum[task] / n
        total = sum(self._task_n.values())
        return sum(self._task_sum.values()) / total if total else 0.0

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        if not views:
            return DELAY
        p = float(request.prompt_tokens)
        service = prefill_s(self.lm, p) + isolated_decode_s(self.lm, p, request.predicted_output_tokens)
        self._task_sum[request.task] = self._task_sum.get(request.task, 0.0) + service
        self._task_n[request.task] = self._task_n.get(request.task, 0) + 1
        while len(self._sent) < len(cluster.instances):
            self._sent.append(deque(maxlen=self.window))
        scores = []
        for v in views:
            sent = self._sent[v.index]
            s_i = float(np.mean([self.task_service_s(t) for t in sent])) if sent else service
            queue_s = v.num_waiting * s_i / max(1, v.num_running)
            scores.append(queue_s + self.prefill_cost_s(request, v))
        choice = pick_min(scores, [v.index for v in views], self.rng)
        self._sent[choice].append(request.task)
        return choice


class WorkloadImpactGreedy(_LatencyRouter):
    """The paper's mixing penalty, greedy and non-learned: least (own latency + impact on others).

    For instance ``i`` with ``m_i = running + waiting`` co-resident requests:

    - own latency: ``completion_s`` (as ``min_min``);
    - prefill impact: every decoding request stalls for ``r``'s prefill iteration:
      ``num_decode_requests x prefill(p)``;
    - decode impact: while ``r`` decodes, each iteration of the others costs
      ``delta = step(n+1 with r) - step(n without r)`` more, for the iterations they overlap
      (``min(o, D_i / m_i)``, ``D_i`` = outstanding predicted decode tokens): ``m_i x overlap x delta``.

    Mirrors: the workload impact estimator / heuristic guidance of Jain et al. (arXiv 2408.13510,
    Section 4: the latency impact of mixing prefill- and decode-heavy requests), without RL.
    """

    name = "workload_impact_greedy"
    _salt = 203

    def impact_s(self, request: RequestView, v: InstanceView) -> float:
        sh = self._shared(request, v)
        p = float(request.prompt_tokens)
        o = max(1.0, float(request.predicted_output_tokens))
        own = self.completion_s(request, v)
        prefill_impact = v.num_decode_requests * sh.own_prefill_s
        m = v.num_running + v.num_waiting
        if m == 0:
            return own
        without = decode_step_s(self.lm, sh.n, sh.ctx_tokens) if sh.n else 0.0
        with_r = decode_step_s(self.lm, sh.n + 1, sh.ctx_tokens + p + o / 2.0)
        overlap = min(o, v.outstanding_decode_tokens / m)
        decode_impact = m * overlap * max(0.0, with_r - without)
        return own + prefill_impact + decode_impact

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        views = accepting_views(cluster)
        if not views:
            return DELAY
        return pick_min([self.impact_s(request, v) for v in views], [v.index for v in views], self.rng)


register(
    "min_min",
    MinMin,
    description="minimum predicted completion time of this request (Min-Min / MCT)",
    needs_predictions=True,
    needs_latency_model=True,
    mirrors="Min-Min / minimum completion time (grid scheduling)",
)
register(
    "min_expected_latency",
    MinExpectedLatency,
    description="TTFT-aware: queue x per-task service time + prompt prefill cost",
    needs_predictions=True,
    needs_latency_model=True,
    mirrors="llm-d predicted-latency scorer / AIBrix least-latency",
)
register(
    "workload_impact_greedy",
    WorkloadImpactGreedy,
    description="least own latency + prefill/decode impact on co-running requests (paper's penalty)",
    needs_predictions=True,
    needs_latency_model=True,
    mirrors="paper's workload impact estimator, greedy (arXiv 2408.13510)",
)
