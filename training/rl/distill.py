"""Distil the lookahead teacher into the RL router's policy (issue 17): behaviour cloning, then DAgger.

Who calls this: ``flows.models.router.train_router_policy`` for ``RouterTrainConfig.method ==
"distill"`` (``loadwise train-router --method distill`` and the nightly's candidates), and tests, once
per run. Side effects only under ``out_dir``, the same layout as ``training.rl.train`` (``policy/``
with the best-validated policy, ``policy_final/``, ``config.json``, ``train_log.jsonl``), plus
``distill_data.npz`` (the aggregated labelled set). The result is the same ``TrainedRouter``, so the
evaluation, the gate and the registration work unchanged.

The method (Ross et al. 2011, DAgger; the teacher is ``training.routing.lookahead``):

- **Student**: the network ``train-router`` would train (``make_model``: the masked DQN policy with
  the ``slots`` Q-network and its heuristic prior, or MaskablePPO's logits), exported by
  ``export_policy`` to the numpy ``PolicyNet`` that serving runs.
- **Data**: a ``ReplayState`` over a window of the setting's TRAINING pool (seeds drawn from the run's
  seed; never the held-out pool that ``loadwise compare`` replays). At each decision the observation
  and action mask are built as the env builds them (``RouterEnv.builder`` + ``encode_observation`` /
  ``action_mask``; with ``hold_kv_headroom`` the same ``AdmissionMemo`` answers the holds the env
  answers without the agent), and the teacher (``LookaheadTeacher.decide`` on the state) labels it.
  Decisions with one valid action carry no label.
- **Rounds**: round 0 rolls out the teacher (behaviour cloning); round ``k >= 1`` rolls out a
  beta-mixture: each decision is acted by the teacher with probability ``beta_k``, else by the current
  student; every visited decision (or a ``label_fraction`` of them) is labelled by the teacher; the
  labels are aggregated and the student is retrained on all of them (masked cross-entropy on its
  action scores: Q-values or logits; a softmax is blind to the dueling value head's shift).
- **Variants** (the paper's three, under distillation; ``teacher_beta``): ``baseline`` = plain DAgger
  (``beta_k = 0``: the student acts alone after round 0); ``aware`` = a constant teacher share
  (``beta_k = aware_beta``); ``guided`` = the teacher's advice decaying HuRL-style as the mixing
  heuristic does in RL (``beta_k = e^(-guidance_decay x k)``, the reward's decay).
- **Seeds**: the run's seed gives the windows, the teacher's sample seeds, the mixture's draws, the
  network's initialisation (SB3 seeds torch at construction) and the minibatch order (a seeded torch
  generator): the same config gives the same data set and the same weights, bit for bit, whatever
  ``workers`` is (tests/training/rl/test_distill.py).

Cost: the teacher's decisions (16 rollouts each with 4 instances and 4 samples: ~0.05-2 s).
``train_stats.json`` records ``data_wall_s`` (labelling) and ``fit_wall_s`` apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.rl.config import RouterTrainConfig
from training.rl.env import RouterEnv
from training.rl.policy_serving import DELAY_OUTPUT, PolicyNet, action_mask, encode_observation
from training.rl.train import TrainedRouter, TrainingTracker, export_policy, make_model, prepare_training
from training.routing.admission_rule import AdmissionMemo
from training.routing.lookahead import LookaheadParams, LookaheadTeacher, SampledLengths, known_request
from training.routing.registry import RouterContext
from training.simulator.engine import ReplayState
from training.simulator.interface import DELAY
from training.simulator.request import Request
from training.workloads.episodes import EpisodeSampler

log = logging.getLogger(__name__)

DATA_FILE = "distill_data.npz"
_NEG = -1e9


@dataclass
class LabelledSet:
    """Teacher-labelled decisions. ``obs`` (n, obs_dim) float32 as the env encodes them, ``mask``
    (n, m + 1) bool (the env's ``action_masks``), ``label`` (n,) int64 env actions (``m`` = DELAY),
    ``round`` (n,) int32 (the DAgger round that visited the state)."""

    obs: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    round: np.ndarray

    @classmethod
    def empty(cls, obs_dim: int, n_actions: int) -> LabelledSet:
        return cls(
            np.zeros((0, obs_dim), np.float32),
            np.zeros((0, n_actions), bool),
            np.zeros(0, np.int64),
            np.zeros(0, np.int32),
        )

    def __len__(self) -> int:
        return len(self.label)

    def concat(self, other: LabelledSet) -> LabelledSet:
        return LabelledSet(
            np.concatenate([self.obs, other.obs]),
            np.concatenate([self.mask, other.mask]),
            np.concatenate([self.label, other.label]),
            np.concatenate([self.round, other.round]),
        )

    def digest(self) -> str:
        """SHA-256 of the arrays' bytes (the determinism tests and ``train_stats`` compare it)."""
        h = hashlib.sha256()
        for a in (self.obs, self.mask, self.label, self.round):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        np.savez_compressed(path, obs=self.obs, mask=self.mask, label=self.label, round=self.round)


@dataclass
class EpisodeLabels:
    """``label_episode``'s result: the labelled decisions and what the window cost and gave."""

    data: LabelledSet
    decisions: int
    """Decisions offered to the agent (holds answered by the admission memo not counted)."""
    teacher_decisions: int
    teacher_wall_s: float
    student_agreement: float | None
    """Share of the labelled decisions where the student (when given) picks the teacher's action."""
    mean_e2e_s: float


def teacher_beta(cfg: RouterTrainConfig, round_k: int) -> float:
    """The teacher's share of the acting in DAgger round ``round_k`` (round 0: 1, behaviour cloning).
    See the module docstring for the variants' mapping."""
    if round_k <= 0:
        return 1.0
    if cfg.variant == "baseline":
        return 0.0
    if cfg.variant == "aware":
        return cfg.distill.aware_beta
    return math.exp(-cfg.reward.guidance_decay * round_k)


def teacher_context(env: RouterEnv) -> RouterContext:
    """The teacher's (and its base router's) context: the env's cluster and latency model."""
    icfg = env.cluster.instance
    return RouterContext(
        env.cluster.num_instances,
        env.sampler.latency_model,
        block_size=icfg.block_size,
        max_batch_size=icfg.max_batch_size,
    )


def label_episode(
    env: RouterEnv,
    requests: Sequence[Request],
    params: LookaheadParams,
    *,
    student: PolicyNet | None = None,
    beta: float = 1.0,
    label_fraction: float = 1.0,
    round_k: int = 0,
    seed: int = 0,
    on_decision: Callable[[], None] | None = None,
) -> EpisodeLabels:
    """Replay ``requests`` on the env's cluster, acting with the teacher (probability ``beta``, or
    always when ``student`` is None) or the student, and label the visited decisions with the teacher.

    Observation and mask: ``env.builder`` and THE encoder, as ``RouterEnv`` builds them at its steps.
    ``seed`` seeds the mixture's and ``label_fraction``'s draws (two per decision, always drawn, so
    the draws do not depend on the answers); the teacher's samples are seeded by ``params.seed``.
    Who calls this: ``collect_round`` (in a worker process when ``workers`` = 2), tests."""
    spec = env.obs_spec
    m = spec.num_instances
    predictor = SampledLengths(env.sampler.predictor)
    teacher = LookaheadTeacher(params, teacher_context(env), predictor)
    if teacher.is_oracle:  # the diagnostic eval.lookahead_oracle reads the truth: never a label source
        raise ValueError("distillation refuses an oracle lookahead teacher (a diagnostic, not a teacher)")
    state = ReplayState(requests, env.cluster, env.sampler.latency_model, predictor, router_name="distill")
    by_id = {r.request_id: r for r in requests}
    icfg = env.cluster.instance
    hold = None if spec.hold_kv_headroom is None else AdmissionMemo(icfg.block_size, spec.hold_kv_headroom)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2017]))
    obs_rows: list[np.ndarray] = []
    mask_rows: list[np.ndarray] = []
    labels: list[int] = []
    agree = 0
    decisions = 0
    while (pending := state.next_decision()) is not None:
        rv, cv = pending
        if rv.request_id not in teacher.seen:
            teacher.observe(known_request(by_id[rv.request_id], rv))
        if hold is not None and (held := hold.hold(cv, rv.prompt_tokens)) is not None:
            state.decide(held)  # the env answers these without the agent (RouterEnv._skip_holds)
            continue
        decisions += 1
        snap = env.builder.build(rv, cv).snapshot
        obs = encode_observation(snap, spec)
        mask = action_mask(snap, spec)
        valid = np.flatnonzero(mask)
        by_teacher = student is None or rng.random() < beta
        labelled = len(valid) > 1 and rng.random() < label_fraction
        target: int | None = None
        if len(valid) > 1 and (labelled or by_teacher):
            t = teacher.decide(state, rv, cv)
            target = m if t == DELAY else int(t)
            if not mask[target]:
                raise ValueError(
                    f"the teacher answered {t}, which the env's mask does not allow (teacher admission "
                    "needs allow_delay)"
                )
        own = None if student is None else student.act_obs(obs)
        own_a = None if own is None else (m if own == DELAY_OUTPUT else own)
        if labelled and target is not None:
            obs_rows.append(obs)
            mask_rows.append(mask)
            labels.append(target)
            agree += int(own_a == target)
        if len(valid) == 1:
            a = int(valid[0])
        elif by_teacher:
            assert target is not None
            a = target
        else:
            assert own_a is not None
            a = own_a
        state.decide(DELAY if a == m else a)
        if on_decision is not None:
            on_decision()
    n = len(labels)
    data = LabelledSet(
        np.array(obs_rows, np.float32).reshape(n, spec.obs_dim),
        np.array(mask_rows, bool).reshape(n, spec.n_actions),
        np.array(labels, np.int64),
        np.full(n, round_k, np.int32),
    )
    return EpisodeLabels(
        data,
        decisions,
        teacher.decisions,
        teacher.wall_s,
        None if student is None or n == 0 else agree / n,
        float(np.mean(state.result.e2e_s)),
    )


@dataclass(frozen=True)
class _Job:
    """One window to label in a round (picklable: it travels to the worker process)."""

    requests: tuple[Request, ...]
    params: LookaheadParams
    student: PolicyNet | None
    beta: float
    label_fraction: float
    round_k: int
    seed: int


_WORKER_ENV: dict[str, RouterEnv] = {}
"""The env a forked labelling worker inherits (set by ``collect_round`` before the pool forks)."""


def _run_job(job: _Job) -> EpisodeLabels:
    env = _WORKER_ENV["env"]
    done = [0]
    t0 = time.perf_counter()

    def tick() -> None:  # progress of a long window (teacher decisions: ~0.05-2 s each)
        done[0] += 1
        if done[0] % 100 == 0:
            log.info(
                "round %d window %d: %d decisions in %.0f s",
                job.round_k,
                job.seed,
                done[0],
                time.perf_counter() - t0,
            )

    return label_episode(
        env,
        job.requests,
        job.params,
        student=job.student,
        beta=job.beta,
        label_fraction=job.label_fraction,
        round_k=job.round_k,
        seed=job.seed,
        on_decision=tick,
    )


def round_jobs(
    cfg: RouterTrainConfig, episodes: EpisodeSampler, round_k: int, student: PolicyNet | None
) -> list[_Job]:
    """Round ``round_k``'s windows: ``episodes_per_round`` TRAINING-pool windows (sampler seeds from
    ``SeedSequence([seed, round, i])``), the first ``episode_requests`` requests of each."""
    d = cfg.distill
    n = d.episode_requests or cfg.episode_requests
    beta = teacher_beta(cfg, round_k)
    jobs = []
    for i in range(d.episodes_per_round):
        ss = np.random.SeedSequence([cfg.seed, 1717, round_k, i])
        window_seed, teacher_seed, mix_seed = (int(x) for x in ss.generate_state(3) % (2**31 - 1))
        requests = tuple(episodes.sample(window_seed)[:n])
        jobs.append(
            _Job(
                requests,
                replace(d.teacher, seed=teacher_seed),
                None if round_k == 0 else student,
                beta,
                d.label_fraction,
                round_k,
                mix_seed,
            )
        )
    return jobs


def collect_round(
    env: RouterEnv, jobs: list[_Job], workers: int, progress: Callable[[EpisodeLabels], None] | None = None
) -> list[EpisodeLabels]:
    """Label ``jobs``' windows, in ``workers`` processes (forked, so they inherit ``env``); results in
    job order whatever the process count, so the data set does not depend on it."""
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for job in jobs:
            _WORKER_ENV["env"] = env
            out.append(_run_job(job))
            if progress is not None:
                progress(out[-1])
        return out
    _WORKER_ENV["env"] = env
    with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        out = []
        for got in pool.imap(_run_job, jobs):
            out.append(got)
            if progress is not None:
                progress(got)
        return out


def action_logits(model: Any, algo: str, obs: Any) -> Any:
    """The student's per-action scores (B, m + 1) as a torch tensor: Q-values (dqn) or policy logits
    (maskable-ppo); what ``export_policy`` exports, so the numpy policy's argmax is theirs."""
    if algo == "dqn":
        return model.q_net(obs)
    policy = model.policy
    features = policy.extract_features(obs)
    if isinstance(features, tuple):  # separate actor / critic extractors
        features = features[0]
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def fit_student(model: Any, cfg: RouterTrainConfig, data: LabelledSet, seed: int) -> dict[str, float]:
    """Behaviour cloning: ``distill.epochs`` passes of masked cross-entropy over ``data`` (minibatch
    order from a torch generator seeded with ``seed``). Returns the last epoch's mean loss and the
    accuracy (argmax of the masked scores = label) on ``data`` after the fit."""
    import torch as th
    from torch.nn import functional as F

    if len(data) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    trainable = [p for p in _student_module(model, cfg.algo).parameters() if p.requires_grad]
    opt = th.optim.Adam(trainable, lr=cfg.learning_rate)
    x = th.as_tensor(data.obs)
    mask = th.as_tensor(data.mask)
    y = th.as_tensor(data.label)
    gen = th.Generator().manual_seed(seed)
    bs = cfg.distill.batch_size
    model.policy.set_training_mode(True)
    loss_sum = 0.0
    for _ in range(cfg.distill.epochs):
        perm = th.randperm(len(y), generator=gen)
        loss_sum, batches = 0.0, 0
        for start in range(0, len(y), bs):
            idx = perm[start : start + bs]
            logits = action_logits(model, cfg.algo, x[idx])
            logits = th.where(mask[idx], logits, th.full_like(logits, _NEG))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.item())
            batches += 1
        loss_sum /= max(batches, 1)
    model.policy.set_training_mode(False)
    if cfg.algo == "dqn":
        model.q_net_target.load_state_dict(model.q_net.state_dict())  # a later TD fine-tune starts here
    with th.no_grad():
        logits = action_logits(model, cfg.algo, x)
        pred = th.where(mask, logits, th.full_like(logits, _NEG)).argmax(dim=1)
    return {"loss": loss_sum, "accuracy": float((pred == y).double().mean().item())}


def _student_module(model: Any, algo: str) -> Any:
    return model.q_net if algo == "dqn" else model.policy


def label_accuracy(policy: PolicyNet, data: LabelledSet) -> float:
    """Share of ``data``'s labels the numpy policy reproduces (masked argmax, as it serves)."""
    if len(data) == 0:
        return float("nan")
    m = policy.spec.num_instances
    acts = [policy.act_obs(o) for o in data.obs]
    got = np.array([m if a == DELAY_OUTPUT else a for a in acts])
    return float(np.mean(got == data.label))


def distill_router(
    cfg: RouterTrainConfig, episodes: EpisodeSampler, out_dir: Path, progress: bool = True
) -> TrainedRouter:
    """Train the student by behaviour cloning of the lookahead teacher, then ``distill.rounds`` DAgger
    rounds (module docstring); validate after each round as ``train_router`` does (the policy kept
    in ``policy/`` is the best-validated one, the untrained prior's included) and return the same
    ``TrainedRouter``. ``progress`` shows a rich progress bar of the labelled windows."""
    if cfg.method != "distill":
        raise ValueError(f"distill_router trains method 'distill', the config says {cfg.method!r}")
    out_dir, policy_dir = prepare_training(cfg, episodes, out_dir)
    env = RouterEnv(episodes, cfg.reward, cfg.obs_spec())
    model = make_model(cfg, env)  # seeds torch: the initial weights are the seed's
    tracker = TrainingTracker(cfg, episodes, out_dir, policy_dir)
    tracker.validate(model, 0)
    data = LabelledSet.empty(cfg.obs_spec().obs_dim, cfg.obs_spec().n_actions)
    rounds: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    data_wall = fit_wall = teacher_wall = 0.0
    teacher_decisions = 0
    student: PolicyNet | None = None
    with _progress(progress, cfg) as bar:
        for k in range(cfg.distill.rounds + 1):
            t0 = time.perf_counter()
            jobs = round_jobs(cfg, episodes, k, student)
            got = collect_round(env, jobs, cfg.distill.workers, bar)
            round_data_s = time.perf_counter() - t0
            data_wall += round_data_s
            new = LabelledSet.empty(data.obs.shape[1], data.mask.shape[1])
            for g in got:
                new = new.concat(g.data)
            data = data.concat(new)
            teacher_wall += sum(g.teacher_wall_s for g in got)
            teacher_decisions += sum(g.teacher_decisions for g in got)
            agreement = None if student is None or len(new) == 0 else label_accuracy(student, new)
            t1 = time.perf_counter()
            fit = fit_student(model, cfg, data, seed=cfg.seed * 1_000 + k)
            fit_wall += time.perf_counter() - t1
            student = export_policy(model, cfg.algo, env)
            val = tracker.validate(model, len(data))
            row = {
                "kind": "distill_round",
                "round": k,
                "beta": jobs[0].beta if jobs else None,
                "labels": len(new),
                "labels_total": len(data),
                "rollout_mean_e2e_s": [g.mean_e2e_s for g in got],
                "student_agreement_before_fit": agreement,
                "fit_loss": fit["loss"],
                "fit_accuracy": fit["accuracy"],
                "validation_mean_e2e_s": val,
                "data_wall_s": round(round_data_s, 2),
                "teacher_decisions_per_s": (
                    sum(g.teacher_decisions for g in got) / max(sum(g.teacher_wall_s for g in got), 1e-9)
                ),
            }
            rounds.append(row)
            tracker.log.write(json.dumps(row) + "\n")
            tracker.log.flush()
            log.info(
                "distill round %d: %d new labels (%d total), beta %.3f, fit accuracy %.3f, validation "
                "mean E2E %.3f s",
                k,
                len(new),
                len(data),
                row["beta"] or 0.0,
                fit["accuracy"],
                val,
            )
    wall = time.perf_counter() - t_start
    data.save(out_dir / DATA_FILE)
    final_dir = out_dir / "policy_final"
    export_policy(model, cfg.algo, tracker.val_env).save(final_dir)
    (final_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    stats: dict[str, Any] = {
        "method": "distill",
        "steps": len(data),
        "episodes": len(rounds) * cfg.distill.episodes_per_round,
        "wall_s": wall,
        "steps_per_s": len(data) / data_wall if data_wall > 0 else float("nan"),
        "data_wall_s": data_wall,
        "fit_wall_s": fit_wall,
        "teacher_decisions": teacher_decisions,
        "teacher_wall_s": teacher_wall,
        "dataset_digest": data.digest(),
        "best_validation_e2e_s": tracker.best,
        "best_validation_p99_e2e_s": tracker.best_p99,
        "final_validation_e2e_s": tracker.validations[-1]["mean_e2e_s"],
        "validation": tracker.validations,
        "rounds": rounds,
    }
    tracker.close()
    env.close()
    (policy_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    (policy_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
    return TrainedRouter(config=cfg, policy_dir=policy_dir, train_stats=stats)


class _progress:
    """A rich progress bar over the labelled windows of every round (a no-op when ``enabled`` is
    False); called with each window's ``EpisodeLabels`` as it finishes."""

    def __init__(self, enabled: bool, cfg: RouterTrainConfig) -> None:
        self.enabled = enabled
        self.total = (cfg.distill.rounds + 1) * cfg.distill.episodes_per_round
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[EpisodeLabels], None]:
        if self.enabled:
            from rich.progress import Progress

            self.bar = Progress()
            self.bar.start()
            self.task = self.bar.add_task("distill: labelled windows", total=self.total)
        return self.advance

    def advance(self, got: EpisodeLabels) -> None:
        log.info(
            "labelled window: %d decisions, %d labels, teacher %.1f s, rollout mean E2E %.3f s",
            got.decisions,
            len(got.data),
            got.teacher_wall_s,
            got.mean_e2e_s,
        )
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
