"""What the RL tests share: a seeded synthetic request mix and the tiny training settings.

Imported by the RL tests, the evaluation builder's tests and the nightly flow's tests (a few hundred
steps of a tiny net: seconds, not minutes)."""

from __future__ import annotations

import numpy as np

from training.simulator import Request


def tiny_requests(seed: int, n: int = 30, rate: float = 8.0) -> list[Request]:
    """A mix of short/long prompts and outputs, Poisson arrivals (deterministic for a seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    out = []
    for k in range(n):
        heavy = bool(rng.random() < 0.3)
        prompt = int(rng.integers(1200, 2000)) if heavy else int(rng.integers(20, 300))
        output = int(rng.integers(5, 40)) if heavy else int(rng.integers(50, 400))
        out.append(Request(f"r{k}", float(t[k]), prompt, output, "heavy" if heavy else "light"))
    return out


TINY = {
    "total_timesteps": 300,
    "num_instances": 2,
    "episode_requests": 30,
    "net_arch": (8,),
    "batch_size": 32,
    "learning_starts": 50,
    "target_update_interval": 100,
    "n_steps": 64,
    "ppo_batch_size": 32,
    "n_epochs": 1,
    "eval_every_episodes": 3,
    "eval_episodes": 1,
    "checkpoint_every_steps": 200,
}
"""``RouterTrainConfig`` settings of a tiny router: 300 steps of an 8-unit net."""
