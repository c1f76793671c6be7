"""Train the RL router on a workload's TRAINING pool and evaluate it with the one harness.

Who calls this: the lead's CLI (``loadwise train-router``) and Prefect flow, tests, and the
reproduction commands in docs/rl_router.md, once per run. Layering: ``eval`` may import ``training``
(never the reverse), so the bridge from workloads (``eval.workloads``) to the trainer lives here.

``train_and_evaluate`` builds the workload, an ``EpisodeSampler`` over its training pool
(``Workload.sample_train``; the held-out pool is never sampled in training), the cluster, latency
model and the same ``TaskMeanPredictor`` the harness uses (fitted on ``Workload.train``), trains,
then replays every registered router that runs without options (oracles included) plus ``rl`` on
the held-out replays and seeds through ``eval.harness.evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eval.harness import evaluate
from eval.report import EvalReport
from eval.workloads import Workload, WorkloadOptions, get_workload, warehouse_workload
from training.envs.router_env import EpisodeSampler
from training.rl.config import WAREHOUSE_WORKLOAD, RouterTrainConfig
from training.rl.train import TrainedRouter, train_router
from training.routing.predictors import TaskMeanPredictor
from training.routing.registry import router_names
from training.simulator import ClusterConfig, default_instance_config, load_latency_model
from warehouse.paths import default_warehouse_path

LEARNED = "rl"


WAREHOUSE = WAREHOUSE_WORKLOAD
"""``RouterTrainConfig.workload`` value for seeded windows of the published warehouse's requests."""


def workload_for(cfg: RouterTrainConfig, num_requests: int | None = None) -> Workload:
    """The config's workload at its rate, window length (``num_requests``, default the episode
    length) and cluster size.

    ``cfg.workload == "warehouse"``: the rows of ``cfg.warehouse`` (None: the default warehouse)
    matching ``cfg.where``, as seeded windows of the training and held-out pools; otherwise a
    registered workload by name (an unknown name raises ``ValueError`` listing the known ones)."""
    options = WorkloadOptions(
        num_requests=num_requests or cfg.episode_requests, rate=cfg.rate_rps, num_instances=cfg.num_instances
    )
    if cfg.workload == WAREHOUSE:
        return warehouse_workload(
            cfg.warehouse or default_warehouse_path(), cfg.where, options, profile=cfg.profile, windows=True
        )
    try:
        return get_workload(cfg.workload, options)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def cluster_for(cfg: RouterTrainConfig) -> ClusterConfig:
    """The config's cluster (training episodes and held-out replays alike)."""
    instance = default_instance_config(cfg.profile, chunked_prefill_tokens=cfg.chunked_prefill_tokens)
    return ClusterConfig(num_instances=cfg.num_instances, instance=instance)


def episode_sampler(cfg: RouterTrainConfig, workload: Workload | None = None) -> EpisodeSampler:
    """Episodes from the workload's TRAINING pool (raises when the workload has none)."""
    wl = workload or workload_for(cfg)
    if wl.sample_train is None:
        raise ValueError(f"workload {wl.name!r} has no training-pool sampler (Workload.sample_train)")
    return EpisodeSampler(
        sample=wl.sample_train,
        cluster=cluster_for(cfg),
        latency_model=load_latency_model(cfg.profile),
        predictor=TaskMeanPredictor.fit(list(wl.train)),
        name=f"{wl.name}:train",
    )


def evaluate_policy(
    policy_dir: Path,
    cfg: RouterTrainConfig,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    routers: Sequence[str] | None = None,
    out_dir: Path | None = None,
    workers: int = 1,
) -> EvalReport:
    """The harness on the held-out replays: ``routers`` (default: every registered router that runs
    without options) plus the learned one from ``policy_dir``."""
    wl = workload_for(cfg)
    names = list(routers) if routers is not None else router_names()
    if LEARNED not in names:
        names.append(LEARNED)
    return evaluate(
        names,
        wl,
        cluster_for(cfg),
        load_latency_model(cfg.profile),
        seeds=seeds,
        out_dir=out_dir,
        context_options={"policy_dir": str(policy_dir)},
        workers=workers,
    )


def train_and_evaluate(
    cfg: RouterTrainConfig,
    out_dir: Path,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = True,
    *,
    routers: Sequence[str] | None = None,
    workers: int = 1,
) -> tuple[TrainedRouter, EvalReport]:
    """Train on the training pool, then evaluate against every baseline on held-out replays.

    Writes the training outputs under ``out_dir`` (``training.rl.train``) and the report under
    ``out_dir / "eval"``.
    """
    out_dir = Path(out_dir)
    wl = workload_for(cfg)
    trained = train_router(cfg, episode_sampler(cfg, wl), out_dir, progress=progress)
    report = evaluate_policy(
        trained.policy_dir, cfg, seeds, routers=routers, out_dir=out_dir / "eval", workers=workers
    )
    return trained, report
