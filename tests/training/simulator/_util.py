"""Small routers, a constant length predictor and a load recount shared by the simulator tests (no
routing or length package needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.simulator.instance import Instance
from training.simulator.interface import DELAY, ClusterView, RequestView
from training.simulator.request import Request, RequestStatus

__all__ = [
    "DELAY",
    "AlwaysDelay",
    "ConstantPredictor",
    "DelayThenFirst",
    "Fixed",
    "Recording",
    "RoundRobin",
    "SeededRandom",
    "recount_load",
]


class RoundRobin:
    """Round robin over accepting instances (the registry's ``round_robin`` makes the same choices)."""

    name = "round_robin_local"

    def __init__(self) -> None:
        self._next = 0
        self._m = 1

    def reset(self, num_instances: int, seed: int) -> None:
        self._m = num_instances
        self._next = 0

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        accepting = set(cluster.accepting)
        for _ in range(self._m):
            i = self._next
            self._next = (self._next + 1) % self._m
            if i in accepting:
                return i
        return DELAY


class ConstantPredictor:
    """Predicts the same length for every request (a length-blind router's implicit assumption)."""

    is_oracle = False

    def __init__(self, tokens: float = 256.0) -> None:
        if tokens <= 0:
            raise ValueError(f"constant prediction must be > 0 tokens, got {tokens}")
        self.tokens = float(tokens)
        self.name = f"constant({self.tokens:g})"

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return np.full(len(requests), self.tokens, dtype=np.float64)


def recount_load(inst: Instance) -> tuple[int, int, int, float]:
    """``Instance.load`` recomputed from scratch over its requests (the incremental sums must match it)."""
    prompt = 0
    decode = 0.0
    n_prefill = 0
    n_decode = 0
    waiting = [t[2] for t in inst.waiting] + list(inst.preempted)
    for r in waiting:
        n_prefill += 1
        prompt += r.target - r.computed
        decode += max(r.pred - r.generated, 0.0)
    for r in inst.running:
        if r.status is RequestStatus.DECODING:
            n_decode += 1
        else:
            n_prefill += 1
            prompt += r.target - r.computed
        decode += max(r.pred - r.generated, 0.0)
    return prompt, n_prefill, n_decode, decode


class Fixed:
    """Always picks one instance."""

    name = "fixed"

    def __init__(self, index: int = 0) -> None:
        self.index = index

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        return self.index


class Recording(Fixed):
    """Fixed placement that records the (request, cluster) views it was shown."""

    name = "recording"

    def __init__(self, index: int = 0) -> None:
        super().__init__(index)
        self.seen: list[tuple[RequestView, ClusterView]] = []

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        self.seen.append((request, cluster))
        return self.index


class DelayThenFirst:
    """Returns DELAY ``n`` times per request, then the first accepting instance."""

    name = "delay_then_first"

    def __init__(self, n: int) -> None:
        self.n = n
        self.counts: dict[str, int] = {}

    def reset(self, num_instances: int, seed: int) -> None:
        self.counts = {}

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        c = self.counts.get(request.request_id, 0)
        self.counts[request.request_id] = c + 1
        if c < self.n:
            return DELAY
        return cluster.accepting[0]


class AlwaysDelay:
    name = "always_delay"

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        return DELAY


class SeededRandom:
    """Uniform over accepting instances, or DELAY with probability ``p_delay``; seeded by reset."""

    name = "seeded_random"

    def __init__(self, p_delay: float = 0.0) -> None:
        import numpy as np

        self.p_delay = p_delay
        self.rng = np.random.default_rng(0)

    def reset(self, num_instances: int, seed: int) -> None:
        import numpy as np

        self.rng = np.random.default_rng(np.random.SeedSequence(seed))

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        acc = cluster.accepting
        if not acc or self.rng.random() < self.p_delay:
            return DELAY
        return int(acc[int(self.rng.integers(len(acc)))])


class LeastLoaded:
    """Picks the accepting instance with the least (outstanding predicted decode + prompt tokens,
    KV use, requests), lowest index on ties: sensitive to every load figure of the snapshot, so
    fast-forward and step-by-step replays only agree if their snapshots agree exactly."""

    name = "least_loaded"

    def reset(self, num_instances: int, seed: int) -> None:
        pass

    def route(self, request: RequestView, cluster: ClusterView) -> int:
        acc = set(cluster.accepting)
        best = None
        for v in cluster.instances:
            if v.index not in acc:
                continue
            key = (
                v.outstanding_decode_tokens + v.outstanding_prompt_tokens - 30 * v.cached_prefix_blocks,
                v.kv_used_blocks,
                v.num_requests,
                v.num_decode_requests,
                v.index,
            )
            if best is None or key < best[0]:
                best = (key, v.index)
        return DELAY if best is None else best[1]
