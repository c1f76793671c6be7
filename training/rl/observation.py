"""Router views -> the serving snapshot (``policy_serving.RouterSnapshot``), plus reward inputs.

Who calls this: the RL env and the learned-router adapter (``training.rl.router``), once per routing
decision each. The request's length prediction enters as its expected length and, for policies whose
``ObsSpec.predicted_bucket_edges`` is set, the predictor's bucket probabilities
(``policy_serving.length_bucket_probs``: one-hot on the expected length's bucket for a predictor that
gives only a length). Both build the snapshot here and encode it with THE encoder in
``training.rl.policy_serving``, so what the policy sees in training, in the harness and behind MLflow
is the same function.

The views must carry ``request_stats`` (``ClusterConfig.request_stats``; the env sets it, and the
simulator turns it on for routers with ``needs_request_stats``): per-bucket prefill/decode counts,
the earliest-completion estimate and the reward's progress term are computed from them.

Estimates use the profile's latency model: ``completion_s`` is ``min_min``'s predicted E2E of the
request on the instance and ``mixing_penalty_s`` the paper's mixing penalty (alpha = 0.5; Jain et
al., arXiv 2408.13510, Section 4), both additions to the paper's state (its heuristic guidance enters
the state this way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.impact.penalty import DEFAULT_ALPHA, mixing_penalty_s
from training.rl.policy_serving import INSTANCE_FIELDS, ObsSpec, RouterSnapshot, length_bucket_probs
from training.routing.estimates import decode_step_s, prefill_s
from training.routing.latency_aware import MinMin
from training.routing.registry import RouterContext
from training.simulator.interface import ClusterView, InstanceView, RequestView
from training.simulator.latency import LatencyModel


@dataclass(frozen=True)
class DecisionState:
    """A snapshot plus what the reward needs at the same decision (not shown to the policy).

    ``in_system``: requests on each instance (running + waiting); ``pending_weight``: per instance,
    the sum over its requests of ``1 - progress_relief x progress`` (progress = generated / predicted
    tokens, capped at 1).
    """

    snapshot: RouterSnapshot
    in_system: np.ndarray
    pending_weight: np.ndarray


class SnapshotBuilder:
    """Builds snapshots for one cluster shape and latency model (no mutable state between calls)."""

    def __init__(
        self,
        spec: ObsSpec,
        latency_model: LatencyModel,
        *,
        block_size: int,
        max_batch_size: int,
        alpha: float = DEFAULT_ALPHA,
        progress_relief: float = 0.5,
    ) -> None:
        self.spec = spec
        self.lm = latency_model
        self.block_size = block_size
        self.max_batch = max_batch_size
        self.alpha = alpha
        self.progress_relief = progress_relief
        self._minmin = MinMin(
            RouterContext(
                num_instances=spec.num_instances,
                latency_model=latency_model,
                block_size=block_size,
                max_batch_size=max_batch_size,
            )
        )
        self._pedges = np.asarray(spec.prompt_edges, dtype=np.float64)
        self._dedges = np.asarray(spec.decode_edges, dtype=np.float64)

    def _instance(self, request: RequestView, v: InstanceView) -> tuple[list[float], np.ndarray, float]:
        """(scalar fields, 2 x Bp x Bd histogram, pending weight) of one instance."""
        spec = self.spec
        bp, bd = spec.n_prompt_buckets, spec.n_decode_buckets
        stats = v.request_stats
        if stats is None:
            raise ValueError(
                "the views carry no request_stats: replay with ClusterConfig(request_stats=True) "
                "(routers with needs_request_stats=True get it from simulate)"
            )
        hist = np.zeros(2 * bp * bd)
        earliest = 0.0
        weight = 0.0
        if stats:
            arr = np.asarray(stats, dtype=np.float64)
            prompt, pred, gen, dec = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            a = np.searchsorted(self._pedges, prompt, side="right")
            b = np.searchsorted(self._dedges, pred, side="right")
            idx = (dec > 0.5).astype(np.int64) * (bp * bd) + a * bd + b
            hist = np.bincount(idx, minlength=2 * bp * bd).astype(np.float64)
            progress = np.minimum(gen / np.maximum(pred, 1.0), 1.0)
            weight = float(len(stats) - self.progress_relief * progress.sum())
            remaining = np.maximum(pred - gen, 1.0)
            n = min(v.num_running, self.max_batch) or 1
            step = decode_step_s(self.lm, n, float(v.kv_used_blocks * self.block_size))
            if (dec > 0.5).any():
                earliest = float(remaining[dec > 0.5].min()) * step
            else:
                earliest = prefill_s(self.lm, v.outstanding_prompt_tokens) + float(remaining.min()) * step
        completion = self._minmin.completion_s(request, v)
        penalty = mixing_penalty_s(
            request, v, self.lm, block_size=self.block_size, max_batch_size=self.max_batch, alpha=self.alpha
        )
        fields = [
            1.0 if v.accepting else 0.0,
            float(v.num_running),
            float(v.num_waiting),
            float(v.kv_used_blocks),
            float(v.kv_total_blocks),
            float(v.outstanding_prompt_tokens),
            float(v.outstanding_decode_tokens),
            earliest,
            completion,
            penalty,
        ]
        return fields, hist, weight

    def build(self, request: RequestView, cluster: ClusterView) -> DecisionState:
        spec = self.spec
        m = spec.num_instances
        if len(cluster.instances) != m:
            raise ValueError(f"cluster has {len(cluster.instances)} instances, the spec expects {m}")
        bp, bd = spec.n_prompt_buckets, spec.n_decode_buckets
        inst = np.zeros((m, len(INSTANCE_FIELDS)))
        hists = np.zeros((m, 2 * bp * bd))
        weights = np.zeros(m)
        in_system = np.zeros(m, dtype=np.int64)
        for k, v in enumerate(cluster.instances):
            fields, hist, w = self._instance(request, v)
            inst[k] = fields
            hists[k] = hist
            weights[k] = w
            in_system[k] = v.num_running + v.num_waiting
        snap = RouterSnapshot(
            prompt_tokens=float(request.prompt_tokens),
            predicted_output_tokens=float(request.predicted_output_tokens),
            router_queue_len=float(cluster.router_queue_len),
            waited_s=float(request.waited_s),
            instances=inst,
            prefill_hist=hists[:, : bp * bd].reshape(m, bp, bd),
            decode_hist=hists[:, bp * bd :].reshape(m, bp, bd),
            predicted_bucket_probs=length_bucket_probs(
                spec,
                float(request.predicted_output_tokens),
                request.predicted_bucket_probs,
                request.predicted_bucket_edges,
            ),
        )
        return DecisionState(snap, in_system, weights)
