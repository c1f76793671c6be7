"""Evaluate a trained RL router policy with the one harness, next to every baseline.

Who calls this: the router jobs of the flows (``flows.models``: the ``train-router`` job and the
champion's replay before the gate) and tests, once per run. Evaluation only: training a router is a
job of the flows (``training.rl.train.train_router``), never of ``eval``.

``evaluate_policy`` replays every registered router that runs without options (oracles included)
plus ``rl`` (the policy folder) on the held-out replays of the training setting's workload and seeds
(``training.workloads.episodes``: the same workload and cluster the episodes came from) through
``eval.harness.evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eval.harness import evaluate
from eval.report import EvalReport
from training.routing.registry import router_names
from training.simulator import load_latency_model
from training.workloads.episodes import EpisodeSetting, cluster_for, workload_for

LEARNED = "rl"
"""The learned router's registry name (and its name in reports)."""


def evaluate_policy(
    policy_dir: Path,
    setting: EpisodeSetting,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    routers: Sequence[str] | None = None,
    out_dir: Path | None = None,
    workers: int = 1,
) -> EvalReport:
    """The harness on the held-out replays: ``routers`` (default: every registered router that runs
    without options) plus the learned one from ``policy_dir``."""
    wl = workload_for(setting)
    names = list(routers) if routers is not None else router_names()
    if LEARNED not in names:
        names.append(LEARNED)
    return evaluate(
        names,
        wl,
        cluster_for(setting),
        load_latency_model(setting.profile),
        seeds=seeds,
        out_dir=out_dir,
        context_options={"policy_dir": str(policy_dir)},
        workers=workers,
    )
