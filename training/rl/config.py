"""``RouterTrainConfig``: every setting of one RL-router training run (frozen, strict, saved with it).

Who calls this: ``training.rl.train.train_router`` (reads it), ``training.workloads.episodes`` and
``eval.spec.EvalSpec.for_setting`` (its setting fields) and the CLI / flows (build it, e.g. from
YAML), once per run. The resolved config is written to the policy folder as ``config.json`` and is
what MLflow logs. No side effects in the constructor.

Defaults follow the paper where it says (Jain et al., arXiv 2408.13510: Double DQN, MLP 64-64,
batch 512, exploration off after episode 20, r_w = 60, alpha = 0.5, 2000-request windows at 20 req/s
on 4 instances of the V100 Llama-2-7B profile); the rest was chosen by measurement (docs/rl_router.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.length.config import TIME_EDGES
from training.length.stored import PredictorChoice
from training.rl.policy_serving import ObsSpec
from training.rl.rewards import RewardConfig, Variant
from training.routing.lookahead import LookaheadParams
from training.workloads.episodes import WAREHOUSE_WORKLOAD, EpisodeSampler, episode_sampler

if TYPE_CHECKING:
    from training.rl.env import RouterEnv

MAX_SEED = 2**32 - 1
"""Largest training seed: stable-baselines3 seeds NumPy's legacy global RNG, which takes [0, 2**32)."""


class DistillConfig(BaseModel):
    """Settings of ``method = "distill"`` (issue 17): the lookahead teacher imitated by the student.

    Units: requests, episodes (training-pool windows), DAgger rounds, gradient epochs. The run's
    ``seed`` seeds everything (episode windows, the teacher's samples, the beta-mixture draws, torch);
    ``training.rl.distill`` says what each field does."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    teacher: LookaheadParams = Field(
        default=LookaheadParams(samples=4, horizon_s=5.0),
        description="the teacher's settings (training.routing.lookahead.LookaheadParams; its seed is "
        "replaced by one derived from the run's seed and the episode)",
    )
    rounds: int = Field(default=2, ge=0, description="DAgger rounds after the behaviour-cloning round")
    episodes_per_round: int = Field(default=2, ge=1, description="training-pool windows labelled per round")
    episode_requests: int | None = Field(
        default=300,
        ge=1,
        description="requests per labelled window (teacher labels cost ~0.05-2 s each); None = the run's "
        "episode_requests",
    )
    label_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="fraction of the decisions (with a choice) that the teacher labels; the others "
        "only move the replay",
    )
    aware_beta: float = Field(
        default=0.5, ge=0, le=1, description="variant 'aware': the teacher's constant share of the acting"
    )
    epochs: int = Field(default=100, ge=1, description="passes over the aggregated set after each round")
    batch_size: int = Field(default=64, ge=1)
    workers: int = Field(default=1, ge=1, le=2, description="processes labelling windows (at most 2)")


class RouterTrainConfig(BaseModel):
    """One training run. Units: requests, req/s, seconds, environment steps (= routing decisions)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    variant: Variant = "guided"
    method: Literal["rl", "distill"] = Field(
        default="rl",
        description="rl: stable-baselines3 on the variant's reward (training.rl.train); distill: "
        "behaviour cloning of the lookahead teacher then DAgger rounds (training.rl.distill, issue 17)",
    )
    algo: Literal["dqn", "maskable-ppo"] = "dqn"
    total_timesteps: int = Field(default=100_000, ge=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    # setting (episodes are windows of the workload's TRAINING pool)
    workload: str = "main"
    profile: str = "v100-llama2-7b-paper"
    num_instances: int = Field(default=4, ge=1)
    rate_rps: float = Field(default=20.0, gt=0)
    episode_requests: int = Field(default=2000, ge=1)
    chunked_prefill_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Sarathi-Serve chunk size of every instance (training and held-out replays), "
        "training.simulator.InstanceConfig; None = no chunked prefill",
    )
    warehouse: str | None = Field(
        default=None,
        description="workload 'warehouse' only: the DuckDB file to read (None = the default warehouse, "
        "warehouse.settings.default_warehouse_path())",
    )
    where: str = Field(
        default="format = 'azure'",
        description="workload 'warehouse' only: SQL filter over marts.requests (episodes and held-out "
        "replays are seeded windows of the matching rows, "
        "training.workloads.catalog.windowed_trace_workload)",
    )
    predictor: PredictorChoice = Field(
        default=PredictorChoice(),
        description="the length predictor of the episodes and the held-out replays (task mean, a "
        "registered version's stored predictions, a predictor folder, the oracle): "
        "training.length.stored.PredictorChoice; recorded on every registered version",
    )

    # observation (training.rl.policy_serving.ObsSpec)
    prompt_edges: tuple[float, ...] = (256.0, 1500.0)
    decode_edges: tuple[float, ...] = (128.0, 256.0, 512.0)
    queue_cap: int = Field(default=64, ge=1)
    predicted_bucket_edges: tuple[float, ...] | None = Field(
        default=tuple(float(e) for e in TIME_EDGES),
        description="the observation reads the length predictor's bucket probabilities over these edges "
        "(tokens; the default predictor's time buckets); a predictor that gives only a length puts all "
        "the probability on its bucket; None = the expected length only (policies before issue 15)",
    )
    allow_delay: bool = Field(
        default=False,
        description="DELAY as an action; off by default: one step = one decision, so a DELAY step is "
        "shorter than a placement and per-step discounting favours it (measured: docs/rl_router.md)",
    )
    max_delay_s: float = Field(default=0.5, ge=0)
    hold_kv_headroom: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="admission control: the policy only chooses among instances that can start the "
        "request with this fraction of their KV cache to spare, and requests wait at the router while "
        "none can (training.routing.admission; the +hold baselines use 0.1); None = off",
    )

    reward: RewardConfig = RewardConfig()
    distill: DistillConfig = DistillConfig()

    heuristic_prior: tuple[float, float] | None = Field(
        default=(0.5, 2.0),
        description="dqn 'slots': learnable (beta, w) of the prior -beta x (d_completion + w x d_penalty) "
        "added to each instance's Q (w = 2: the paper's greedy heuristic, own latency + prefill + decode "
        "impact); None = no prior",
    )

    freeze_prior: bool = Field(
        default=False,
        description="dqn 'slots': keep the prior's (beta, w) fixed and learn only the residual MLP",
    )

    residual_bound: float | None = Field(
        default=None,
        gt=0,
        description="dqn 'slots': bound c on the residual MLP's per-action score, c x tanh(r / c), a trust "
        "region towards the prior (the value head stays free); None = unbounded",
    )

    # learner (shared)
    net_arch: tuple[int, ...] = (64, 64)
    architecture: Literal["mlp", "slots"] = Field(
        default="slots",
        description="dqn: 'mlp' = the paper's MLP over the whole state; 'slots' = one MLP scoring each "
        "instance's slot (equivariant to instance order; chosen by measurement). PPO: always 'mlp'",
    )
    learning_rate: float = Field(default=5e-4, gt=0)
    gamma: float = Field(default=0.9, gt=0, le=1, description="0.9 measured better than 0.99 here")
    gamma_min: float = Field(default=0.5, gt=0, le=1, description="guided: discount while guidance is full")

    # DQN (paper: batch 512, exploration off after episode 20)
    batch_size: int = Field(default=512, ge=1)
    buffer_size: int = Field(default=200_000, ge=1)
    learning_starts: int = Field(default=2_000, ge=0)
    train_freq: int = Field(default=4, ge=1)
    gradient_steps: int = Field(default=1, ge=1)
    target_update_interval: int = Field(default=2_000, ge=1)
    n_step_returns: int = Field(
        default=1, ge=1, description="dqn: n-step TD targets (SB3 DQN's n_steps); 1 = one-step"
    )
    exploration_episodes: float = Field(default=20.0, ge=0)
    exploration_initial_eps: float = Field(default=0.3, ge=0, le=1)
    exploration_final_eps: float = Field(default=0.0, ge=0, le=1)

    # MaskablePPO
    n_steps: int = Field(default=2048, ge=2)
    ppo_batch_size: int = Field(default=256, ge=2)
    n_epochs: int = Field(default=5, ge=1)
    ent_coef: float = Field(default=0.01, ge=0)

    # bookkeeping
    eval_every_episodes: int = Field(default=10, ge=1, description="validation on training-pool windows")
    eval_episodes: int = Field(default=2, ge=1)
    selection_p99_tolerance_pct: float | None = Field(
        default=None,
        ge=0,
        description="keep a validated checkpoint only if its validation p99 E2E (pooled over the "
        "validation windows' requests) is <= the step-0 policy's x (1 + tol / 100), and its mean E2E is "
        "the best among such checkpoints (training.rl.train.keeps_checkpoint); None = best mean only",
    )
    checkpoint_every_steps: int = Field(default=50_000, ge=1)
    torch_threads: int = Field(default=1, ge=1, description="STACK.md: 1 avoids a collapse on a loaded box")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        from training.simulator.profiles import PROFILE_NAMES

        if profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILE_NAMES)}")
        return profile

    @model_validator(mode="after")
    def _warehouse_filter(self) -> RouterTrainConfig:
        """The warehouse workload's ``where`` must be one condition over ``marts.requests``
        (``warehouse.filters.check_where``: bound against the schema, no warehouse needed)."""
        if self.workload == WAREHOUSE_WORKLOAD:
            from warehouse.filters import check_where

            try:
                check_where(self.where)
            except ValueError as exc:
                raise ValueError(f"where: {exc}") from None
        return self

    @model_validator(mode="before")
    @classmethod
    def _reward_variant(cls, data: Any) -> Any:
        """The run's ``variant`` is the reward's variant (one source of truth)."""
        if isinstance(data, dict):
            data = dict(data)
            variant = data.get("variant", "guided")
            reward = data.get("reward")
            if reward is None:
                data["reward"] = RewardConfig(variant=variant)
            elif isinstance(reward, RewardConfig):
                data["reward"] = reward.model_copy(update={"variant": variant})
            elif isinstance(reward, dict):
                data["reward"] = {**reward, "variant": variant}
        return data

    def obs_spec(self) -> ObsSpec:
        return ObsSpec(
            num_instances=self.num_instances,
            prompt_edges=tuple(self.prompt_edges),
            decode_edges=tuple(self.decode_edges),
            queue_cap=self.queue_cap,
            allow_delay=self.allow_delay,
            max_delay_s=self.max_delay_s,
            hold_kv_headroom=self.hold_kv_headroom,
            predicted_bucket_edges=(
                None if self.predicted_bucket_edges is None else tuple(self.predicted_bucket_edges)
            ),
        )


def make_router_env(
    sampler: EpisodeSampler | None = None,
    reward: RewardConfig | None = None,
    spec: ObsSpec | None = None,
    *,
    config: RouterTrainConfig | None = None,
) -> RouterEnv:
    """The entry point of ``gymnasium.make("loadwise/Router-v0", **kwargs)``: a ``RouterEnv``.

    Who calls this: gymnasium, once per ``make`` (``training.rl.env`` registers the id with this
    function's import path, a string: ``env`` sits before ``config`` in the package's import order).

    - No argument: the default training run's environment, ``config = RouterTrainConfig()``: episodes
      from the ``main`` workload's TRAINING pool (``training.workloads.episodes.episode_sampler``: 2000
      requests at 20 req/s on 4 instances of the paper's V100 Llama-2-7B profile, task-mean length
      predictor), its reward and observation spec. What ``training.rl.train.train_router`` trains on.
    - ``config=``: that training setting's environment (workload, cluster, reward, observation).
    - ``sampler=`` (``reward=``, ``spec=``): episodes from that sampler, as ``RouterEnv(sampler, ...)``;
      with ``config`` too, the config gives the reward and spec that are not given.

    Building the default sampler reads the workload (the main one: the CASTILLO and AlpacaEval
    files of the shared data folder, seconds; a synthetic mix where they are absent).
    """
    from training.rl.env import RouterEnv  # gymnasium: only when an env is made

    if config is None and sampler is None:
        config = RouterTrainConfig()
    if config is not None:
        sampler = sampler or episode_sampler(config)
        reward = reward or config.reward
        spec = spec or config.obs_spec()
    assert sampler is not None
    return RouterEnv(sampler, reward, spec)
