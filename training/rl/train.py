"""Train the RL router with stable-baselines3 / sb3-contrib and export it as a numpy policy folder.

Who calls this: the training jobs of the flows (``flows.models.router.train_router_policy``: ``loadwise
train-router`` and the nightly's candidates) and tests, once per run. Side effects only under ``out_dir``:

- ``policy/``: the exported policy (``policy_weights.npz``, ``obs_spec.json``), the resolved
  ``config.json``, ``train_stats.json`` and ``input_example.json``: everything ``load_router`` and
  ``policy_serving.RouterPolicyModel`` need. It holds the checkpoint with the best validation
  mean E2E (validation = fixed windows of the TRAINING pool, never the held-out one); with
  ``selection_p99_tolerance_pct`` set, the best among those whose validation p99 E2E is within that
  tolerance of the step-0 policy's (``keeps_checkpoint``).
- ``policy_final/``: the policy at the end of training (same files but the stats), for comparisons.
- ``checkpoints/``: SB3 checkpoints (``checkpoint_every_steps``), ``final_model.zip``.
- ``train_log.jsonl``: one line per episode (return, mean E2E, mixing weight, discount) and per
  validation (mean and p99 E2E, whether the checkpoint was kept).

Algorithms: ``dqn`` = masked Double DQN (``training.rl.algos``; the paper's), ``maskable-ppo`` =
sb3-contrib MaskablePPO with ``action_masks()``. Seeds: the run's ``seed`` seeds the env's episode
sampling (``reset(seed=)``) and SB3 (which, by its own design, seeds the global random / numpy /
torch generators it samples from); results are reproducible for a seed on one machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.rl.config import RouterTrainConfig
from training.rl.env import RouterEnv
from training.rl.policy_serving import PolicyNet, load_policy, snapshot_columns, snapshot_to_row
from training.rl.rewards import guided_gamma, mixing_weight
from training.workloads.episodes import EpisodeSampler

VALIDATION_SEED_BASE = 1_000_000
"""Validation windows use sampler seeds from here (training episodes draw theirs from the env's RNG)."""


@dataclass
class TrainedRouter:
    """The result of ``train_router``.

    Attributes:
        config: the resolved training config.
        policy_dir: folder with the exported (best-validation) policy, its spec, config and stats.
        train_stats: ``steps``, ``episodes``, ``wall_s``, ``steps_per_s``, ``best_validation_e2e_s``
            (the kept checkpoint's validation mean), ``best_validation_p99_e2e_s`` (its p99),
            ``validation`` (list of dicts with ``mean_e2e_s``, ``p99_e2e_s``, ``kept``).
    """

    config: RouterTrainConfig
    policy_dir: Path
    train_stats: dict[str, Any] = field(default_factory=dict)

    def policy(self) -> PolicyNet:
        policy = load_policy(self.policy_dir)
        assert isinstance(policy, PolicyNet)  # a training writes a network, never a rule
        return policy

    def input_example(self) -> pd.DataFrame:
        """One snapshot row (a real decision from a validation window), as serving expects it."""
        d = json.loads((self.policy_dir / "input_example.json").read_text())
        return pd.DataFrame([d["values"]], columns=d["columns"])


def export_policy(model: Any, algo: str, env: RouterEnv) -> PolicyNet:
    """The SB3 model's decision network as a numpy ``PolicyNet`` (Q-network or policy logits)."""
    import torch as th

    architecture = "mlp"
    prior: tuple[float, ...] | None = None
    bound: float | None = None
    if algo == "dqn":
        seq = list(model.q_net.q_net)
        activation = "relu"
        if getattr(model.q_net, "slot_layout", None) is not None:
            architecture = "slots"
        if getattr(model.q_net, "prior", None) is not None:
            prior = tuple(float(v) for v in model.q_net.prior.detach().cpu().numpy())
        bound = getattr(model.q_net, "residual_bound", None)
    else:
        seq = [*model.policy.mlp_extractor.policy_net, model.policy.action_net]
        activation = "tanh"
    layers = []
    for mod in seq:
        if isinstance(mod, th.nn.Linear):
            layers.append(
                (mod.weight.detach().cpu().numpy().T.copy(), mod.bias.detach().cpu().numpy().copy())
            )
        elif not isinstance(mod, th.nn.ReLU | th.nn.Tanh):
            raise TypeError(f"cannot export layer {type(mod).__name__}")
    return PolicyNet(
        layers, activation, env.obs_spec, architecture, None if prior is None else (prior[0], prior[1]), bound
    )


def run_policy_episode(
    env: RouterEnv, policy: PolicyNet, requests: list[Any] | None = None, seed: int = 0
) -> np.ndarray:
    """Replay one episode with the numpy policy (deterministic); returns each request's E2E (s)."""
    obs, _ = env.reset(seed=seed, options={"requests": requests} if requests is not None else None)
    done = False
    m = env.obs_spec.num_instances
    while not done:
        a = policy.act_obs(obs)
        obs, _, done, _, _ = env.step(m if a < 0 else a)
    assert env.last_result is not None
    return np.asarray(env.last_result.e2e_s, dtype=float)


def keeps_checkpoint(
    mean_e2e_s: float,
    p99_e2e_s: float,
    best_mean_e2e_s: float,
    reference_p99_e2e_s: float,
    tolerance_pct: float | None,
) -> bool:
    """Whether a validated checkpoint replaces the kept one (validation numbers, seconds).

    ``tolerance_pct`` None: a strictly better mean is enough (the default selection). Otherwise the
    checkpoint's p99 must also be <= ``reference_p99_e2e_s`` (the step-0 policy's, i.e. the heuristic
    prior's) x (1 + tolerance_pct / 100): the bar is a better mean with no worse tail (issue 5), and
    the mean-only choice kept checkpoints whose held-out p99 was 10 % worse than greedy's
    (docs/rl_router.md, "A bounded residual").
    """
    if mean_e2e_s >= best_mean_e2e_s:
        return False
    return tolerance_pct is None or p99_e2e_s <= reference_p99_e2e_s * (1.0 + tolerance_pct / 100.0)


class TrainingTracker:
    """Episode log, guided-discount schedule, periodic validation and best-policy export."""

    def __init__(
        self, cfg: RouterTrainConfig, episodes: EpisodeSampler, out_dir: Path, policy_dir: Path
    ) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.policy_dir = policy_dir
        self.val_env = RouterEnv(episodes, cfg.reward, cfg.obs_spec())
        self.val_requests = [
            list(episodes.sample(VALIDATION_SEED_BASE + i)) for i in range(cfg.eval_episodes)
        ]
        self.log = (out_dir / "train_log.jsonl").open("w")
        self.episodes = 0
        self.best = float("inf")
        self.best_p99 = float("inf")
        self.reference_p99: float | None = None  # the first (step-0) validation's p99
        self.validations: list[dict[str, Any]] = []
        self.example_written = False
        self.t0 = time.perf_counter()

    def on_episode_end(
        self, model: Any, env: RouterEnv, info: dict[str, Any], ep_return: float | None, step: int
    ) -> None:
        self.episodes += 1
        env.set_guidance_episode(self.episodes)
        row = {
            "kind": "episode",
            "episode": self.episodes,
            "step": step,
            "mean_e2e_s": info.get("episode_mean_e2e_s"),
            "return": ep_return,
            "mixing_weight": info.get("mixing_weight"),
            "gamma": float(model.gamma),
            "exploration_rate": float(getattr(model, "exploration_rate", 0.0)),
            "wall_s": round(time.perf_counter() - self.t0, 2),
        }
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        if self.cfg.variant == "guided":
            w0 = mixing_weight(self.cfg.reward, 0)
            frac = mixing_weight(self.cfg.reward, self.episodes) / w0 if w0 > 0 else 0.0
            gamma = guided_gamma(self.cfg.gamma, min(self.cfg.gamma_min, self.cfg.gamma), frac)
            model.gamma = gamma
            if hasattr(model, "rollout_buffer") and model.rollout_buffer is not None:
                model.rollout_buffer.gamma = gamma
            # n-step DQN: SB3's NStepReplayBuffer discounts with its own copy of gamma
            if getattr(model, "replay_buffer", None) is not None and hasattr(model.replay_buffer, "gamma"):
                model.replay_buffer.gamma = gamma
        if self.episodes % self.cfg.eval_every_episodes == 0:
            self.validate(model, step)

    def validate(self, model: Any, step: int) -> float:
        policy = export_policy(model, self.cfg.algo, self.val_env)
        runs = [run_policy_episode(self.val_env, policy, r) for r in self.val_requests]
        e2e = float(np.mean([np.mean(run) for run in runs]))  # each window weighs the same
        p99 = float(np.percentile(np.concatenate(runs), 99))  # over the pooled requests
        if self.reference_p99 is None:
            self.reference_p99 = p99
        kept = keeps_checkpoint(e2e, p99, self.best, self.reference_p99, self.cfg.selection_p99_tolerance_pct)
        row = {
            "kind": "validation",
            "episode": self.episodes,
            "step": step,
            "mean_e2e_s": e2e,
            "p99_e2e_s": p99,
            "kept": kept,
            "wall_s": round(time.perf_counter() - self.t0, 2),
        }
        self.validations.append(row)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        if kept:
            self.best, self.best_p99 = e2e, p99
            policy.save(self.policy_dir)
            self._write_example()
        return e2e

    def _write_example(self) -> None:
        if self.example_written:
            return
        self.val_env.reset(seed=0, options={"requests": self.val_requests[0][:50]})
        st = self.val_env._state
        assert st is not None
        cols = snapshot_columns(self.val_env.obs_spec)
        (self.policy_dir / "input_example.json").write_text(
            json.dumps({"columns": cols, "values": snapshot_to_row(st.snapshot)})
        )
        self.example_written = True

    def close(self) -> None:
        self.log.close()
        self.val_env.close()


def prepare_training(cfg: RouterTrainConfig, episodes: EpisodeSampler, out_dir: Path) -> tuple[Path, Path]:
    """What every router training does first (``train_router``, ``training.rl.distill``): check that
    ``episodes``' cluster has ``cfg.num_instances``, set torch's threads, create ``out_dir`` and its
    ``policy/`` and write the resolved ``config.json``. Returns ``(out_dir, policy_dir)``."""
    import torch as th

    if episodes.cluster.num_instances != cfg.num_instances:
        raise ValueError(
            f"the sampler's cluster has {episodes.cluster.num_instances} instances, cfg.num_instances = "
            f"{cfg.num_instances}"
        )
    th.set_num_threads(cfg.torch_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy_dir = out_dir / "policy"
    policy_dir.mkdir(exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    return out_dir, policy_dir


def make_model(cfg: RouterTrainConfig, env: Any) -> Any:
    """The stable-baselines3 model ``cfg.algo`` names (masked double DQN with the ``slots`` Q-network,
    or MaskablePPO), seeded with ``cfg.seed`` (SB3 seeds torch at construction). Who calls this:
    ``train_router`` and the distillation (``training.rl.distill``: the same student network)."""
    policy_kwargs: dict[str, Any]
    if cfg.algo == "dqn":
        from training.rl.algos import MaskedDoubleDQN, MaskedDQNPolicy

        per_episode = cfg.episode_requests * 1.05  # decisions per episode: requests + a few DELAYs
        fraction = min(1.0, cfg.exploration_episodes * per_episode / cfg.total_timesteps)
        policy_kwargs = {"net_arch": list(cfg.net_arch)}
        if cfg.architecture == "slots":
            spec = cfg.obs_spec()
            policy_kwargs["slot_layout"] = (spec.num_instances, spec.request_dim, spec.per_instance_dim)
            policy_kwargs["residual_bound"] = cfg.residual_bound
            if cfg.heuristic_prior is not None:
                policy_kwargs["prior_init"] = tuple(cfg.heuristic_prior)
                policy_kwargs["freeze_prior"] = cfg.freeze_prior
        return MaskedDoubleDQN(
            MaskedDQNPolicy,
            env,
            explore_seed=cfg.seed,
            learning_rate=cfg.learning_rate,
            buffer_size=cfg.buffer_size,
            learning_starts=cfg.learning_starts,
            batch_size=cfg.batch_size,
            gamma=cfg.gamma_min if cfg.variant == "guided" else cfg.gamma,
            train_freq=cfg.train_freq,
            gradient_steps=cfg.gradient_steps,
            target_update_interval=cfg.target_update_interval,
            n_steps=cfg.n_step_returns,
            exploration_fraction=max(fraction, 1e-9),
            exploration_initial_eps=cfg.exploration_initial_eps,
            exploration_final_eps=cfg.exploration_final_eps,
            policy_kwargs=policy_kwargs,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
    from sb3_contrib import MaskablePPO

    policy_kwargs = {"net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)}}
    return MaskablePPO(
        "MlpPolicy",
        env,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.ppo_batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma_min if cfg.variant == "guided" else cfg.gamma,
        ent_coef=cfg.ent_coef,
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device="cpu",
        verbose=0,
    )


def train_router(
    cfg: RouterTrainConfig, episodes: EpisodeSampler, out_dir: Path, progress: bool = True
) -> TrainedRouter:
    """Train ``cfg.algo`` on ``cfg.variant``'s reward over episodes from ``episodes`` (TRAINING pool).

    Writes under ``out_dir`` (see the module docstring) and returns the ``TrainedRouter`` whose
    ``policy_dir`` holds the best validated policy. ``progress`` shows SB3's progress bar (tqdm +
    rich are installed). Wall time and env steps/s are in ``train_stats``.
    """
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
    from stable_baselines3.common.monitor import Monitor

    if cfg.method != "rl":  # distill sits above this module: flows.models.router dispatches to it
        raise ValueError(
            f"train_router trains method 'rl'; method {cfg.method!r} is training.rl.distill.distill_router "
            "(flows.models.router.train_router_policy picks it)"
        )
    out_dir, policy_dir = prepare_training(cfg, episodes, out_dir)
    env = RouterEnv(episodes, cfg.reward, cfg.obs_spec())  # SB3 resets it with seed=cfg.seed
    monitored = Monitor(env)
    model = make_model(cfg, monitored)
    tracker = TrainingTracker(cfg, episodes, out_dir, policy_dir)

    class _EpisodeCallback(BaseCallback):
        def _on_step(self) -> bool:
            for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
                if done:
                    ep = info.get("episode") if isinstance(info.get("episode"), dict) else None
                    tracker.on_episode_end(self.model, env, info, ep["r"] if ep else None, self.num_timesteps)
            return True

    callbacks = CallbackList(
        [
            _EpisodeCallback(),
            CheckpointCallback(
                cfg.checkpoint_every_steps, str(out_dir / "checkpoints"), name_prefix="router"
            ),
        ]
    )
    tracker.validate(model, 0)  # the untrained policy (with a heuristic prior: the prior's own policy)
    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.total_timesteps, callback=callbacks, progress_bar=progress)
    wall = time.perf_counter() - t0
    final_e2e = tracker.validate(model, model.num_timesteps)
    model.save(out_dir / "checkpoints" / "final_model.zip")
    final_dir = out_dir / "policy_final"  # the last policy, whether or not it validated best
    export_policy(model, cfg.algo, tracker.val_env).save(final_dir)
    (final_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    stats: dict[str, Any] = {
        "steps": int(model.num_timesteps),
        "episodes": tracker.episodes,
        "wall_s": wall,
        "steps_per_s": model.num_timesteps / wall if wall > 0 else float("nan"),
        "best_validation_e2e_s": tracker.best,
        "best_validation_p99_e2e_s": tracker.best_p99,
        "final_validation_e2e_s": final_e2e,
        "validation": tracker.validations,
    }
    tracker.close()
    env.close()
    (policy_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    (policy_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
    return TrainedRouter(config=cfg, policy_dir=policy_dir, train_stats=stats)
