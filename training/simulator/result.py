"""What a replay returns (``SimResult``): per-request timings and per-instance time series.

Who uses this: the eval harness (reports, confidence intervals), the RL env (rewards), tests
(``check_invariants``). Arrays are indexed by the request's position in the replayed input.
Units: seconds of simulated time, tokens, KV blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class SimResult:
    """Per-request arrays (input order) and per-instance series.

    Attributes:
        arrival_s / routed_s / first_token_s / finish_s: event times per request.
        ttft_s: first_token - arrival. e2e_s: finish - arrival.
        tbt_s: mean time between output tokens after the first, (finish - first_token) /
            (output_tokens - 1); 0 for 1-token outputs.
        router_wait_s: routed - arrival (time held at the router by DELAY).
        queue_wait_s: first scheduled at the instance - routed.
        preemptions: times each request was preempted (recompute). instance: where it ran.
        prompt_tokens / output_tokens: the true lengths replayed; generated_tokens: tokens the replay
            produced (equals output_tokens for a completed replay).
        tasks, request_ids: labels, in input order.
        instance_series: one dict per instance with arrays ``time_s, batch_size, queue_len,
            kv_used_blocks``, sampled whenever the instance forms a batch (every iteration in
            step-by-step mode; every stretch boundary with fast-forward).
        kv_total_blocks: capacity of each instance. num_iterations: engine iterations over all
            instances. sim_time_s: time of the last event. wall_s: wall-clock seconds of the replay.
    """

    arrival_s: np.ndarray
    routed_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    tbt_s: np.ndarray
    router_wait_s: np.ndarray
    queue_wait_s: np.ndarray
    preemptions: np.ndarray
    instance: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    generated_tokens: np.ndarray
    tasks: list[str]
    request_ids: list[str]
    instance_series: list[dict[str, np.ndarray]]
    kv_total_blocks: int
    num_iterations: int
    sim_time_s: float
    wall_s: float
    meta: dict = field(default_factory=dict)

    @property
    def num_requests(self) -> int:
        return len(self.arrival_s)

    def check_invariants(self) -> None:
        """Raise AssertionError when the replay broke a rule (used by tests; cheap)."""
        n = self.num_requests
        for name in ("routed_s", "first_token_s", "finish_s", "preemptions", "instance", "generated_tokens"):
            arr = getattr(self, name)
            assert len(arr) == n, f"{name} has {len(arr)} entries for {n} requests"
        assert np.all(np.isfinite(self.finish_s)), "some requests never finished"
        assert np.array_equal(self.generated_tokens, self.output_tokens), "a request produced the wrong count"
        tol = 1e-9 * max(1.0, float(np.max(self.finish_s, initial=0.0)))
        assert np.all(self.routed_s >= self.arrival_s - tol), "routed before arrival"
        assert np.all(self.first_token_s >= self.routed_s - tol), "first token before routing"
        assert np.all(self.finish_s >= self.first_token_s - tol), "finished before first token"
        assert np.all(self.ttft_s <= self.e2e_s + tol), "TTFT > E2E"
        assert np.all(self.queue_wait_s >= -tol), "negative queue wait"
        assert np.all(self.tbt_s >= -tol), "negative TBT"
        assert np.all(self.preemptions >= 0)
        assert np.all((self.instance >= 0) & (self.instance < len(self.instance_series))), "bad instance"
        for i, s in enumerate(self.instance_series):
            t = s["time_s"]
            assert np.all(np.diff(t) >= 0), f"instance {i}: time went back"
            assert np.all(s["kv_used_blocks"] <= self.kv_total_blocks), f"instance {i}: KV over capacity"
            assert np.all(s["kv_used_blocks"] >= 0), f"instance {i}: negative KV use"
        assert self.sim_time_s >= float(np.max(self.finish_s, initial=0.0)) - tol
