"""Seeded synthetic traces that are not registered workloads: the benchmarks' conversation trace.

Who calls this: the replay and env speed benchmarks (``training.routing.bench``,
``training.rl.bench``) and tests, once per run. Pure numpy; deterministic for a seed. The registered
workloads (``main``, ``table2``, ``prefix``, ``azure``) are in ``catalog``.
"""

from __future__ import annotations

import numpy as np

from training.simulator.request import Request


def conversation_trace(
    num_requests: int = 4000,
    rate_per_s: float = 20.0,
    seed: int = 0,
    prompt_median: float = 1000.0,
    output_median: float = 130.0,
    max_prompt: int = 4096,
    max_output: int = 1024,
) -> list[Request]:
    """A seeded Poisson trace with lognormal conversation-like prompt and output lengths."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, size=num_requests))
    prompts = np.clip(np.round(rng.lognormal(np.log(prompt_median), 0.8, size=num_requests)), 1, max_prompt)
    outputs = np.clip(np.round(rng.lognormal(np.log(output_median), 0.9, size=num_requests)), 1, max_output)
    return [
        Request(f"bench-{i}", float(arrivals[i]), int(prompts[i]), int(outputs[i]), task="conv")
        for i in range(num_requests)
    ]
