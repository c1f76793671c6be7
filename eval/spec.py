"""An evaluation from one typed spec: which requests, which cluster, which routers and learned policies.

Who calls this: every evaluation of the project, once per run: ``loadwise replay`` / ``compare``
(``flows.cli.replay``), the ``train-router`` job (``flows.models.router``: the trained policy and the
comparable champion), the nightly ``evaluate-router`` step (challenger and champion) and the
``evaluate-routers-distributed`` flow. ``evaluate_spec`` builds the workload, the cluster and the
latency model from the spec (``build``) and replays every router over every seed through the one
harness (``eval.harness.run_evaluation``); where the replays run (``executor``, ``workers``), progress,
the result sink and the output folder are arguments, not part of the spec.

**Learned policies.** The learned router is one registry entry (``rl``) whose policy folder is a
context option, so one harness run replays one policy. ``EvalSpec.learned`` names any number of
them (``{"challenger": dir, "champion": dir}``): the first is replayed with the routers, each further
one in a run of its own (with ``round_robin`` for its paired improvement) on the same workload and
seeds, and the report lists each under its own name. This merge lives here only.

**The length predictor** (``EvalSpec.predictor``, a ``training.length.stored.PredictorChoice``):
what every non-oracle router reads, built once per evaluation for its workload
(``training.workloads.predictors.predictor_for``: task mean over the training pool by default; a
registered version answers from ``marts.length_predictions``, whose missing rows for the workload are
predicted in one batch and written first; a predictor folder; the oracle, labelled ORACLE). The
default here is task mean; the flows layer resolves ``registered`` (the champion when one exists) for
the CLI, ``train-router`` and the nightly flow. The report names it (``EvalReport.predictor``).

**Defaults of the warehouse evaluations** (the nightly flow and the distributed evaluation):
``pick_profile`` and ``DEFAULT_RATE_RPS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eval.harness import (
    BASELINE,
    EvalRun,
    Executor,
    ProgressFn,
    ResultSink,
    check_routers,
    check_seeds,
    run_evaluation,
    write_outputs,
)
from eval.report import EvalReport, RouterResult
from training.length.stored import PredictorChoice
from training.routing.registry import router_names
from training.simulator import (
    ClusterConfig,
    QueuePolicy,
    RouterQueueOrder,
    default_instance_config,
    load_latency_model,
)
from training.simulator.latency import LatencyModel
from training.simulator.profiles import PAPER_PROFILE
from training.workloads.catalog import (
    Workload,
    WorkloadOptions,
    get_workload,
    trace_workload,
    warehouse_workload,
)
from training.workloads.episodes import WAREHOUSE_WORKLOAD, EpisodeSetting

LEARNED = "rl"
"""The learned router's registry name: the harness replays a policy folder under it."""

GPU_PROFILE = "a100-llama3-8b"
"""Preferred profile of the warehouse evaluations (real GPU operator profiles); the paper's V100 model
when they are absent."""

DEFAULT_RATE_RPS = {GPU_PROFILE: 12.0, PAPER_PROFILE: 2.5}
"""Held-out arrivals of the warehouse evaluations are time-scaled to these rates: loaded but stable
for 4 instances of each profile on Azure-like lengths (see docs/evaluation.md)."""


def pick_profile() -> str:
    """``a100-llama3-8b`` when its Vidur profiles can be read, else ``v100-llama2-7b-paper``."""
    try:
        load_latency_model(GPU_PROFILE)
    except FileNotFoundError:
        return PAPER_PROFILE
    return GPU_PROFILE


_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class NamedWorkload(BaseModel):
    """A registered workload (``training.workloads.catalog``: ``main``, ``table2``, ``azure``, ``prefix``)."""

    model_config = _STRICT

    kind: Literal["named"] = "named"
    name: str = "main"


class TraceFile(BaseModel):
    """A trace file (or folder) in any format ``loadwise ingest`` reads, read by the warehouse's readers."""

    model_config = _STRICT

    kind: Literal["trace"] = "trace"
    path: Path
    format: str = "auto"


class WarehouseRows(BaseModel):
    """Requests of the published warehouse matching ``where`` (``marts.requests``).

    ``windows``: seeded windows of the training and held-out pools (what the RL router trains and is
    judged on); else one fixed held-out slice. ``synthetic``: label the report synthetic."""

    model_config = _STRICT

    kind: Literal["warehouse"] = "warehouse"
    warehouse: Path | None = Field(default=None, description="DuckDB file (None: the default warehouse)")
    where: str = "format = 'azure'"
    windows: bool = False
    synthetic: bool = False


WorkloadSource = Annotated[NamedWorkload | TraceFile | WarehouseRows, Field(discriminator="kind")]


class LearnedPolicy(BaseModel):
    """A trained router policy folder (``obs_spec.json`` and the numpy policy), replayed as ``rl``."""

    model_config = _STRICT

    policy_dir: Path
    description: str | None = Field(default=None, description="for reports (None: the registry's)")


class EvalSpec(BaseModel):
    """What one evaluation replays. Units: requests, req/s, tokens; ``None`` keeps the workload's default.

    ``routers``: registry names (``None``: every registered router that runs without options);
    ``learned``: named policy folders, each replayed as the learned router and reported under its
    name (``rl`` in ``routers`` marks where the first one goes). ``profile``: the latency profile of
    the replay and the cluster (``None``: the named workload's; a trace or the warehouse: the paper's
    V100 one). ``hold_headroom``: admission control for the ``+hold`` routers (fraction of an
    instance's KV cache that must stay free). ``router_queue_order``: which request the router's hold
    queue offers first at a tick (``training.simulator.RouterQueueOrder``). ``predictor``: the length
    predictor of every non-oracle router (module docstring).
    """

    model_config = _STRICT

    workload: WorkloadSource = NamedWorkload()
    requests: int | None = Field(default=None, ge=1, description="held-out requests per replay")
    rate: float | None = Field(default=None, gt=0, description="arrival rate, req/s (traces: time-scaled)")
    order: str | None = Field(default=None, description="table2 request order")
    instances: int | None = Field(default=None, ge=1)
    profile: str | None = None
    queue_policy: QueuePolicy = QueuePolicy.FCFS
    chunked_prefill_tokens: int | None = Field(default=None, ge=1)
    hold_headroom: float | None = Field(default=None, ge=0, lt=1)
    router_queue_order: RouterQueueOrder = RouterQueueOrder.ARRIVAL
    routers: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    learned: dict[str, LearnedPolicy] = Field(default_factory=dict)
    predictor: PredictorChoice = PredictorChoice()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        return check_seeds(seeds)

    @field_validator("routers")
    @classmethod
    def _routers(cls, routers: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if routers is None else tuple(check_routers(routers))

    @model_validator(mode="after")
    def _learned_names(self) -> EvalSpec:
        names = set(self.routers or ())
        if LEARNED in names and not self.learned:
            raise ValueError(f"router {LEARNED!r} needs a policy: name one in learned")
        clash = sorted((set(self.learned) & names) - {LEARNED})
        if clash:
            raise ValueError(f"learned policies may not take a router's name: {', '.join(clash)}")
        return self

    @classmethod
    def for_setting(
        cls,
        setting: EpisodeSetting,
        seeds: Sequence[int],
        *,
        requests: int | None = None,
        routers: Sequence[str] | None = None,
        learned: dict[str, LearnedPolicy] | None = None,
    ) -> EvalSpec:
        """The held-out replays of an RL training setting (``training.rl.config.RouterTrainConfig``):
        the same workload (``warehouse``: seeded windows of its rows), cluster, profile and length
        predictor the episodes came from, ``requests`` per replay (default: the episode length)."""
        source: NamedWorkload | WarehouseRows
        if setting.workload == WAREHOUSE_WORKLOAD:
            warehouse = Path(setting.warehouse) if setting.warehouse else None
            source = WarehouseRows(warehouse=warehouse, where=setting.where, windows=True)
        else:
            source = NamedWorkload(name=setting.workload)
        return cls(
            workload=source,
            requests=requests or setting.episode_requests,
            rate=setting.rate_rps,
            instances=setting.num_instances,
            profile=setting.profile,
            chunked_prefill_tokens=setting.chunked_prefill_tokens,
            routers=None if routers is None else tuple(routers),
            seeds=tuple(seeds),
            learned=dict(learned or {}),
            predictor=getattr(setting, "predictor", None) or PredictorChoice(),
        )


@dataclass(frozen=True)
class Replays:
    """What a spec builds: the workload, the simulated cluster and the latency model of its profile."""

    workload: Workload
    cluster: ClusterConfig
    latency_model: LatencyModel
    profile: str


def build(spec: EvalSpec) -> Replays:
    """The spec's workload (read from its source), cluster and latency model; no replay yet.

    Raises ``ValueError`` (an unknown workload or option), ``KeyError`` / ``FileNotFoundError`` (an
    unknown profile, missing profile data) or ``warehouse.errors.WarehouseError`` (a source that
    cannot be read): the CLI prints each as one line."""
    from warehouse.settings import default_warehouse_path

    options = WorkloadOptions(
        num_requests=spec.requests, rate=spec.rate, num_instances=spec.instances, order=spec.order
    )
    source = spec.workload
    if isinstance(source, TraceFile):
        wl = trace_workload(source.path, source.format, options, profile=spec.profile or PAPER_PROFILE)
    elif isinstance(source, WarehouseRows):
        wl = warehouse_workload(
            source.warehouse or default_warehouse_path(),
            source.where,
            options,
            profile=spec.profile or PAPER_PROFILE,
            synthetic=source.synthetic,
            windows=source.windows,
        )
    else:
        try:
            wl = get_workload(source.name, options)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
    profile = spec.profile or wl.profile
    latency_model = load_latency_model(profile)
    instance = default_instance_config(
        profile, queue_policy=spec.queue_policy, chunked_prefill_tokens=spec.chunked_prefill_tokens
    )
    cluster = ClusterConfig(
        num_instances=wl.num_instances, instance=instance, router_queue_order=spec.router_queue_order
    )
    return Replays(wl, cluster, latency_model, profile)


def evaluate_spec(
    spec: EvalSpec,
    *,
    out_dir: Path | None = None,
    sink: ResultSink | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    workers: int = 1,
    built: Replays | None = None,
) -> EvalReport:
    """Build the spec (unless ``built`` is given: ``build(spec)`` done by the caller) and replay every
    router and learned policy over every seed; one report.

    ``out_dir``: ``report.json``, ``report.md`` and plots there; ``sink``: ``sink.write(report)``;
    ``progress(router, seed, done)`` after each replay; ``executor`` / ``workers``: where the replays
    run (results are identical: every replay is seeded). Raises like ``build`` and the harness."""
    run = run_spec(spec, progress=progress, executor=executor, workers=workers, built=built)
    if out_dir is not None:
        write_outputs(run, Path(out_dir))
    if sink is not None:
        sink.write(run.report)
    return run.report


def run_spec(
    spec: EvalSpec,
    *,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    workers: int = 1,
    built: Replays | None = None,
) -> EvalRun:
    """``evaluate_spec`` without writing anything: the report and the first seed's arrays (plots)."""
    from training.workloads.predictors import predictor_for

    replays = built or build(spec)
    predictor = predictor_for(spec.predictor, replays.workload)
    names = list(spec.routers) if spec.routers is not None else router_names()
    policies = list(spec.learned.items())
    if policies and LEARNED not in names:
        names.append(LEARNED)
    shared: dict[str, object] = {}
    if spec.hold_headroom is not None:
        from training.routing.admission import HEADROOM_OPTION

        shared[HEADROOM_OPTION] = spec.hold_headroom
    done = 0

    def run(routers: list[str], policy: LearnedPolicy | None) -> EvalRun:
        nonlocal done
        offset = done

        def tick(router: str, seed: int, k: int) -> None:
            if progress is not None:
                progress(router, seed, offset + k)

        options = {**shared, **({"policy_dir": str(policy.policy_dir)} if policy else {})}
        out = run_evaluation(
            routers,
            replays.workload,
            replays.cluster,
            replays.latency_model,
            spec.seeds,
            predictor,
            context_options=options,
            progress=tick,
            workers=workers,
            executor=executor,
        )
        done += len(routers) * len(spec.seeds)
        return out

    base = run(names, policies[0][1] if policies else None)
    others = [BASELINE, LEARNED] if BASELINE in names else [LEARNED]
    extra = [(name, policy, run(others, policy)) for name, policy in policies[1:]]
    return merge_policies(base, policies[:1], extra)


def merge_policies(
    base: EvalRun,
    first: list[tuple[str, LearnedPolicy]],
    extra: list[tuple[str, LearnedPolicy, EvalRun]],
) -> EvalRun:
    """One run of ``base``'s routers in their order, its learned router (if any) renamed to the first
    policy's name, then each extra policy's learned result under its name (same workload and seeds)."""
    if not first:
        return base

    def named(result: RouterResult, name: str, policy: LearnedPolicy) -> RouterResult:
        update: dict[str, object] = {"name": name}
        if policy.description is not None:
            update["description"] = policy.description
        return result.model_copy(update=update)

    (first_name, first_policy) = first[0]
    routers: dict[str, RouterResult] = {}
    arrays: dict[str, dict[str, Any]] = {}
    for name, result in base.report.routers.items():
        if name == LEARNED:
            routers[first_name] = named(result, first_name, first_policy)
            arrays[first_name] = base.first_seed[name]
        else:
            routers[name] = result
            arrays[name] = base.first_seed[name]
    for name, policy, run in extra:
        routers[name] = named(run.report.routers[LEARNED], name, policy)
        arrays[name] = run.first_seed[LEARNED]
    return replace(base, report=base.report.model_copy(update={"routers": routers}), first_seed=arrays)
