"""Where the RL router's episodes and held-out replays come from: one training setting -> its
workload, its cluster and an ``EpisodeSampler`` over the workload's TRAINING pool.

Who calls this: the training and evaluation jobs of the flows (``flows.models``, ``flows.nightly``),
the evaluation builder (``eval.spec``) and tests, once per run; ``RouterEnv`` (``training.rl.env``) reads
an ``EpisodeSampler`` once per episode. The setting is anything with the fields of
``EpisodeSetting`` (``training.rl.config.RouterTrainConfig`` is one): this package sits below the
RL package in the order of ``training`` and imports nothing of it.

The held-out pool is never sampled for training: ``episode_sampler`` draws from
``Workload.sample_train`` only. The predictor it injects is the setting's ``predictor``
(``training.length.stored.PredictorChoice``: task mean fitted on ``Workload.train`` by default, or a
registered predictor's stored predictions; ``training.workloads.predictors``), the same one the
held-out replays of the setting use (``eval.spec.EvalSpec.for_setting``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from training.length.stored import PredictorChoice
from training.simulator.config import ClusterConfig
from training.simulator.interface import LengthPredictor
from training.simulator.latency import LatencyModel
from training.simulator.profiles import default_instance_config, load_latency_model
from training.simulator.request import Request
from training.workloads.catalog import Workload, WorkloadOptions, get_workload, warehouse_workload
from warehouse.settings import default_warehouse_path

WAREHOUSE_WORKLOAD = "warehouse"
"""``EpisodeSetting.workload`` value for seeded windows of the published warehouse's requests."""


class EpisodeSetting(Protocol):
    """The fields of a training setting this module reads (``RouterTrainConfig`` has them all).

    Units: requests, req/s. ``warehouse`` / ``where`` apply to ``workload = "warehouse"`` only.
    ``predictor``: the length predictor of the episodes and the held-out replays.
    """

    @property
    def workload(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def num_instances(self) -> int: ...
    @property
    def rate_rps(self) -> float: ...
    @property
    def episode_requests(self) -> int: ...
    @property
    def chunked_prefill_tokens(self) -> int | None: ...
    @property
    def warehouse(self) -> str | None: ...
    @property
    def where(self) -> str: ...
    @property
    def predictor(self) -> PredictorChoice: ...


@dataclass(frozen=True)
class EpisodeSampler:
    """Where episodes come from: ``sample(seed)`` -> a trace window of TRAINING requests.

    Attributes:
        sample: deterministic for a seed; requests sorted by arrival (the held-out pool must never
            appear here: ``episode_sampler`` builds it from ``Workload.sample_train``).
        cluster: the simulated cluster (the env turns ``request_stats`` on).
        latency_model: the profile's latency model (replay, estimates and the mixing penalty).
        predictor: the non-oracle length predictor the replay annotates requests with.
        name: for logs.
    """

    sample: Callable[[int], Sequence[Request]]
    cluster: ClusterConfig
    latency_model: LatencyModel
    predictor: LengthPredictor
    name: str = "episodes"


def workload_for(setting: EpisodeSetting, num_requests: int | None = None) -> Workload:
    """The setting's workload at its rate, window length (``num_requests``, default the episode
    length) and cluster size.

    ``setting.workload == "warehouse"``: the rows of ``setting.warehouse`` (None: the default
    warehouse) matching ``setting.where``, as seeded windows of the training and held-out pools;
    otherwise a registered workload by name (an unknown name raises ``ValueError`` listing the known
    ones)."""
    options = WorkloadOptions(
        num_requests=num_requests or setting.episode_requests,
        rate=setting.rate_rps,
        num_instances=setting.num_instances,
    )
    if setting.workload == WAREHOUSE_WORKLOAD:
        return warehouse_workload(
            setting.warehouse or default_warehouse_path(),
            setting.where,
            options,
            profile=setting.profile,
            windows=True,
        )
    try:
        return get_workload(setting.workload, options)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def cluster_for(setting: EpisodeSetting) -> ClusterConfig:
    """The setting's cluster (training episodes and held-out replays alike)."""
    instance = default_instance_config(setting.profile, chunked_prefill_tokens=setting.chunked_prefill_tokens)
    return ClusterConfig(num_instances=setting.num_instances, instance=instance)


def episode_sampler(setting: EpisodeSetting, workload: Workload | None = None) -> EpisodeSampler:
    """Episodes from the workload's TRAINING pool (raises when the workload has none), with the
    setting's length predictor (``training.workloads.predictors.predictor_for``)."""
    from training.workloads.predictors import predictor_for

    wl = workload or workload_for(setting)
    if wl.sample_train is None:
        raise ValueError(f"workload {wl.name!r} has no training-pool sampler (Workload.sample_train)")
    return EpisodeSampler(
        sample=wl.sample_train,
        cluster=cluster_for(setting),
        latency_model=load_latency_model(setting.profile),
        predictor=predictor_for(getattr(setting, "predictor", None) or PredictorChoice(), wl),
        name=f"{wl.name}:train",
    )
