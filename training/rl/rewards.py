"""The paper's reward, as named components (Jain et al., arXiv 2408.13510, Section 5).

Who calls this: ``RouterEnv.step``, once per routing decision (``step_reward``) and once at the end
of an episode (``drain_reward``). Pure arithmetic over numbers the env measured.

Components (each reported in the step's ``info`` under ``reward_<name>``, already scaled):

- ``in_system``: ``-in_system_penalty x sum over requests in the system of (1 - progress_relief x
  progress)`` per decision tick elapsed since the previous decision (the paper penalises every
  request in the system each tick, less as its decode progresses; progress = generated / predicted
  output tokens, capped at 1; requests held at the router have progress 0). Ticks with nothing to
  decide are skipped by the simulator, so the elapsed ticks are counted here instead.
- ``completion``: ``+completion_reward`` (the paper's r_w = 60) per request finished since the
  previous decision.
- ``mixing``: ``-mixing_weight(k) x penalty / tick``: the paper's workload-mixing penalty (alpha =
  0.5, ``training.impact.penalty``) of the chosen instance, in request-ticks like ``in_system``
  (the penalty is seconds of latency added to the co-resident requests); 0 for DELAY.
- ``drain`` (terminal only, when ``drain=True``): the ``in_system`` term for the time after the
  last decision, while the cluster drains (from the replay's true finish times; progress taken as
  half way). Off by default: no decision can follow it, and at 20 req/s it is one terminal reward
  as large as a thousand steps' (it destabilised the Q-targets of the last steps).

``reward = scale x (in_system + completion + mixing [+ drain])``.

Objectives (``objective``): ``paper`` is the reward above. ``latency`` is the exact evaluation
objective: ``in_system`` with every request weighing 1 (no progress relief) and no completion
reward, so the undiscounted sum over an episode (with ``drain``) is minus the total request-seconds
in the system = minus the sum of E2E latencies (Little's law), in units of ``scale`` / tick. Meant
for discounts near 1 (0.995-0.999) or n-step returns: a placement's cost plays out over hundreds of
decisions (docs/rl_router.md, "Follow-up").

Variants (``mixing_weight``): ``baseline`` RL has no mixing term; ``aware`` RL has it at full
weight; ``guided`` RL (HuRL-style heuristic guidance, Cheng et al. 2021) weighs it ``e^(-decay x k)``
in episode ``k`` (0-based) and raises the discount accordingly (``guided_gamma``).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Variant = Literal["baseline", "aware", "guided"]
Objective = Literal["paper", "latency"]


class RewardConfig(BaseModel):
    """Reward weights. Defaults: the paper's r_w = 60 and alpha = 0.5; the rest is our choice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: Variant = "guided"
    objective: Objective = Field(
        default="paper",
        description="'paper': the paper's reward; 'latency': minus requests-in-system x time only (the "
        "exact E2E objective; progress_relief and completion_reward are ignored)",
    )
    completion_reward: float = Field(default=60.0, ge=0, description="r_w per finished request")
    in_system_penalty: float = Field(default=1.0, ge=0, description="per request in the system per tick")
    progress_relief: float = Field(
        default=0.5, ge=0, le=1, description="a finished-decoding request pays 1 - relief per tick"
    )
    mixing_alpha: float = Field(
        default=0.5, ge=0, le=1, description="the paper's prefill/decode impact weight"
    )
    mixing_weight: float = Field(
        default=1.0, ge=0, description="weight of the mixing term (aware; guided at k=0)"
    )
    guidance_decay: float = Field(default=0.5, ge=0, description="guided: weight e^(-decay x episode)")
    scale: float = Field(default=1e-3, gt=0, description="every component is multiplied by this")
    drain: bool = Field(
        default=False,
        description="add the terminal drain term (off by default: one spike of ~1000 steps' reward)",
    )


def effective_relief(cfg: RewardConfig) -> float:
    """``progress_relief`` as the reward uses it (0 under the ``latency`` objective)."""
    return 0.0 if cfg.objective == "latency" else cfg.progress_relief


def mixing_weight(cfg: RewardConfig, episode: int) -> float:
    """Weight of the mixing term in episode ``episode`` (0-based) for the config's variant."""
    if cfg.variant == "baseline":
        return 0.0
    if cfg.variant == "aware":
        return cfg.mixing_weight
    return cfg.mixing_weight * math.exp(-cfg.guidance_decay * max(0, episode))


def guided_gamma(gamma: float, gamma_min: float, weight_fraction: float) -> float:
    """HuRL's discount schedule: ``gamma_min`` while the guidance is at full weight, rising to
    ``gamma`` as it decays (``weight_fraction`` = current guidance weight / initial weight)."""
    w = min(1.0, max(0.0, weight_fraction))
    return gamma_min + (gamma - gamma_min) * (1.0 - w)


def step_reward(
    cfg: RewardConfig,
    *,
    ticks: float,
    pending_weight: float,
    completed: int,
    mixing_penalty_s: float,
    tick_s: float,
    episode: int,
) -> dict[str, float]:
    """Scaled components of one transition (see the module docstring)."""
    s = cfg.scale
    return {
        "in_system": -s * cfg.in_system_penalty * pending_weight * ticks,
        "completion": 0.0 if cfg.objective == "latency" else s * cfg.completion_reward * completed,
        "mixing": -s * mixing_weight(cfg, episode) * mixing_penalty_s / tick_s,
    }


def drain_reward(cfg: RewardConfig, *, remaining_request_s: float, tick_s: float) -> float:
    """Scaled ``drain`` component: ``remaining_request_s`` = sum over unfinished requests of the
    seconds from the last decision to their finish."""
    weight = 1.0 - 0.5 * effective_relief(cfg)
    return -cfg.scale * cfg.in_system_penalty * weight * remaining_request_s / tick_s
