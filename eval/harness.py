"""The one evaluation harness: replay registered routers on held-out requests over seeds, one report.

Who calls this: the evaluation builder (``eval.spec.evaluate_spec``, through which every evaluation
of the project runs: ``loadwise replay`` / ``compare``, the router jobs, the nightly flow, the
distributed evaluation) and tests, each once per run. Baselines and learned routers go through the
same code path: a name in the router registry.

Per router and seed: the router is built from the registry with a ``RouterContext`` (cluster size,
latency model, a short/long threshold splitting the training requests about in half by predicted
length), the seed's held-out requests are replayed by the simulator, and per-request arrays are kept per group
(overall, task, workload class). Oracle routers (registry ``oracle=True``) are replayed with
``OraclePredictor``; every other router with the configured predictor (default:
``TaskMeanPredictor`` fitted on the workload's training requests, which never overlap the held-out
ones; ``eval.spec`` builds the others: a registered predictor's stored predictions, a predictor
folder, the oracle). The configured predictor is asked once per seed's trace (``FixedPredictor``),
not once per router. Configured with the oracle predictor, every router reads true lengths: each is
reported as ``oracle`` (labelled ORACLE, never a baseline of the promotion gate) and the report's
predictor says ORACLE.

Each seed changes the router's randomness and, for sampled workloads, the trace itself; all routers
see the same trace for a seed, so improvements vs round robin are paired per seed.

Side effects only where asked: ``out_dir`` (report.json, report.md, plots) and ``sink``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eval.report import (
    EvalReport,
    GroupMetrics,
    RouterResult,
    new_evaluation,
    summarize_group,
    to_markdown,
    vs_baseline,
)
from training.length.baselines import FixedPredictor, OraclePredictor, TaskMeanPredictor
from training.length.stored import ORACLE_LABEL
from training.routing.estimates import isolated_decode_s, prefill_s
from training.routing.registry import RouterContext, get_entry, get_router
from training.simulator.config import ClusterConfig
from training.simulator.interface import LengthPredictor
from training.simulator.latency import LatencyModel
from training.simulator.request import Request
from training.workloads.catalog import Workload
from warehouse.workload_class import HEAVY_DECODE_S, HEAVY_PREFILL_S, workload_class

BASELINE = "round_robin"


class ResultSink(Protocol):
    """Where reports are stored (the warehouse's ``marts.eval_results`` via ``eval.sinks``)."""

    def write(self, report: EvalReport) -> None: ...


ProgressFn = Callable[[str, int, int], None]
"""``progress(router, seed, done)`` called after each replay (the CLI draws a progress bar)."""

Executor = Callable[[Callable[["ReplayJob"], dict[str, Any]], list["ReplayJob"]], list[dict[str, Any]]]
"""``executor(replay_job, jobs) -> results`` in job order: where replays run. The default runs them
in this process (or a process pool with ``workers > 1``); ``flows.distributed`` maps them over a
Prefect task runner (a Dask cluster), with the same ``replay_job`` and the same results."""


def workload_classes(requests: Sequence[Request], latency_model: LatencyModel) -> list[str]:
    """Paper workload class per request: ``LL``, ``LH``, ``HL``, ``HH`` (prefill letter first).

    The one definition (``warehouse.workload_class``, also behind the warehouse's
    ``marts.request_classes``) on the request's prefill alone (``prefill_s``, heavy at
    ``HEAVY_PREFILL_S``) and isolated decode (``isolated_decode_s``, heavy at ``HEAVY_DECODE_S``), both
    under ``latency_model`` (the profile replayed).
    """
    return [
        workload_class(
            prefill_s(latency_model, r.prompt_tokens),
            isolated_decode_s(latency_model, r.prompt_tokens, r.output_tokens),
        )
        for r in requests
    ]


def check_seeds(seeds: Iterable[Any]) -> tuple[int, ...]:
    """``seeds`` as a tuple of ints, or ``ValueError``: each must be a whole number >= 0 (NumPy's
    ``SeedSequence`` refuses negatives, which used to surface as a traceback mid-run) and appear once
    (a repeated seed replays the same trace twice: no new evidence, and a narrower confidence
    interval for the promotion gate; ``[0, 0]`` gave a zero-width one).

    Who calls this: ``run_evaluation`` (every evaluation), and the CLI and configs to refuse bad
    seeds before any work."""
    out: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seeds must be whole numbers, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seeds must be >= 0, got {int(seed)}")
        out.append(int(seed))
    if not out:
        raise ValueError("no seeds")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must be distinct; repeated: {', '.join(map(str, repeated))}")
    return tuple(out)


def check_routers(routers: Iterable[str]) -> list[str]:
    """``routers`` as a list, or ``ValueError`` when it is empty or names a router twice (the
    report holds one result per name: a repeat was silently dropped)."""
    names = list(routers)
    if not names:
        raise ValueError("no routers to evaluate")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"routers must be distinct; repeated: {', '.join(repeated)}")
    return names


def split_threshold_tokens(predictor: LengthPredictor, train: Sequence[Request]) -> float:
    """Short/long boundary for routers (``dedicated_small_large``), so that each pool receives about half
    of the training requests: the midpoint between two adjacent distinct predicted lengths whose cut
    sends the fraction of requests closest to 1/2 to the "long" side (about the median for continuous
    predictors). Never equal to a prediction, so a task-mean predictor's classes fall cleanly on one
    side (the simulator may store predictions in lower precision).

    The paper's heavy-decode boundary (``length_threshold_tokens``) is the alternative; it puts every
    task of a trace on one side when all its tasks are decode-light or decode-heavy under the profile
    (e.g. both Azure services on an A100), which degenerates the router to half the cluster.
    """
    preds = np.asarray(predictor.predict_output_tokens(list(train)), dtype=np.float64)
    preds = np.sort(preds[np.isfinite(preds) & (preds > 0)])
    values = np.unique(preds)
    if len(values) < 2:
        return float(values[0]) * 2.0 if len(values) else 256.0
    long_fraction = 1.0 - np.searchsorted(preds, values[1:], side="left") / len(preds)
    k = int(np.argmin(np.abs(long_fraction - 0.5)))
    return float((values[k] + values[k + 1]) / 2.0)


def length_threshold_tokens(latency_model: LatencyModel, prompt_tokens: float = 128.0) -> float:
    """Output tokens whose isolated decode takes ``HEAVY_DECODE_S`` (the paper's heavy-decode boundary)."""
    lo, hi = 1.0, 1.0
    while isolated_decode_s(latency_model, prompt_tokens, hi) < HEAVY_DECODE_S and hi < 1e6:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        if isolated_decode_s(latency_model, prompt_tokens, mid) < HEAVY_DECODE_S:
            lo = mid
        else:
            hi = mid
    return float(round(hi))


@dataclass(frozen=True)
class ReplayJob:
    """One (router, seed) replay of an evaluation: picklable, so any executor can run it anywhere."""

    router: str
    seed: int
    requests: list[Request]
    cluster: ClusterConfig
    latency_model: LatencyModel
    predictor: LengthPredictor
    ctx: RouterContext
    keep_series: bool


def replay_job(job: ReplayJob) -> dict[str, Any]:
    """One replay; returns only what the report needs (picklable, small).

    A router with a ``simulate(requests, cluster, latency_model, predictor, seed=...)`` method (the
    ``lookahead`` teacher, which needs the replay state, not only the views) is replayed by it; it
    returns a ``SimResult`` or an object whose ``result`` is one."""
    from training.simulator import simulate

    router = get_router(job.router, job.ctx)
    own = getattr(router, "simulate", None)
    if callable(own):  # a router that drives the replay itself (the lookahead teacher)
        ran = own(job.requests, job.cluster, job.latency_model, job.predictor, seed=job.seed)
        res = getattr(ran, "result", ran)
    else:
        res = simulate(job.requests, router, job.cluster, job.latency_model, job.predictor, seed=job.seed)
    out: dict[str, Any] = {
        "e2e_s": np.asarray(res.e2e_s),
        "ttft_s": np.asarray(res.ttft_s),
        "tbt_s": np.asarray(res.tbt_s),
        "router_wait_s": np.asarray(res.router_wait_s),
        "queue_wait_s": np.asarray(res.queue_wait_s),
        "preemptions": np.asarray(res.preemptions),
        "instance": np.asarray(res.instance),
    }
    if job.keep_series:
        out["instance_series"] = res.instance_series
    return out


def _with_default_options(names: Sequence[str], options: dict[str, object] | None) -> dict[str, object]:
    """``options`` plus the ``lookahead`` teacher's default settings when it is asked for by name
    without any (``training.routing.lookahead.COMPARE_PARAMS``; ``--routers all`` never names it)."""
    out = dict(options or {})
    if "lookahead" in names:
        from training.routing.lookahead import COMPARE_PARAMS, LOOKAHEAD_OPTION

        out.setdefault(LOOKAHEAD_OPTION, COMPARE_PARAMS)
    return out


def _cluster_summary(cluster: object) -> dict[str, object]:
    if not is_dataclass(cluster):
        return {"repr": repr(cluster)}
    flat: dict[str, object] = {}
    for k, v in asdict(cluster).items():  # type: ignore[arg-type]
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[k2] = getattr(v2, "value", v2)
        else:
            flat[k] = getattr(v, "value", v)
    flat.pop("UNBOUNDED_KV_BLOCKS", None)
    return {k: v if isinstance(v, int | float | str | bool) or v is None else str(v) for k, v in flat.items()}


@dataclass
class EvalRun:
    """A report plus the raw arrays of the first seed (for plots); not persisted as such."""

    report: EvalReport
    first_seed: dict[str, dict[str, Any]]


def run_evaluation(
    routers: Sequence[str],
    workload: Workload,
    cluster: ClusterConfig,
    latency_model: LatencyModel,
    seeds: Sequence[int] = (0, 1, 2),
    predictor: LengthPredictor | None = None,
    *,
    context_options: dict[str, object] | None = None,
    progress: ProgressFn | None = None,
    workers: int = 1,
    executor: Executor | None = None,
) -> EvalRun:
    """Replay every router on every seed; see ``evaluate`` (this also returns first-seed arrays).

    Raises ``ValueError`` before any replay for an empty, negative or repeated seed, an empty or
    repeated router name (``check_seeds``, ``check_routers``), or an unknown router (``KeyError``)."""
    names = check_routers(routers)
    seeds = check_seeds(seeds)
    entries = {n: get_entry(n) for n in names}  # fail fast on unknown names
    predictor = predictor or TaskMeanPredictor.fit(list(workload.train))
    all_oracle = bool(getattr(predictor, "is_oracle", False))
    label = ORACLE_LABEL if all_oracle else predictor.name
    oracle = OraclePredictor()
    num_instances = int(getattr(cluster, "num_instances", workload.num_instances))
    inst = getattr(cluster, "instance", None)
    ctx = RouterContext(
        num_instances=num_instances,
        latency_model=latency_model,
        length_threshold_tokens=split_threshold_tokens(predictor, workload.train),
        block_size=int(getattr(inst, "block_size", 16)),
        max_batch_size=int(getattr(inst, "max_batch_size", 256)),
        options=_with_default_options(names, context_options),
    )
    traces = {s: workload.sample(s) for s in seeds}
    fixed = {s: FixedPredictor.fix(predictor, traces[s]) for s in seeds}
    classes = {s: np.array(workload_classes(traces[s], latency_model)) for s in seeds}
    tasks = {s: np.array([r.task for r in traces[s]]) for s in seeds}
    jobs = [
        ReplayJob(
            n,
            s,
            traces[s],
            cluster,
            latency_model,
            oracle if entries[n].oracle else fixed[s],
            ctx,
            s == seeds[0],
        )
        for n in names
        for s in seeds
    ]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with ExitStack() as stack:
        outs: Iterable[dict[str, Any]]
        if executor is not None:
            outs = executor(replay_job, jobs)
            if len(outs) != len(jobs):
                raise RuntimeError(f"executor returned {len(outs)} results for {len(jobs)} replays")
        elif workers > 1 and len(jobs) > 1:
            outs = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(replay_job, jobs)
        else:
            outs = map(replay_job, jobs)  # lazily: progress after each replay
        for k, (job, out) in enumerate(zip(jobs, outs, strict=True)):
            results[(job.router, job.seed)] = out
            if progress:
                progress(job.router, job.seed, k + 1)

    def group(name: str, mask_of: Callable[[int], np.ndarray | None]) -> GroupMetrics:
        per_seed = []
        for s in seeds:
            arrays = results[(name, s)]
            mask = mask_of(s)
            per_seed.append(
                {k: (v if mask is None else v[mask]) for k, v in arrays.items() if isinstance(v, np.ndarray)}
            )
        return summarize_group(per_seed)

    all_tasks = sorted({t for s in seeds for t in tasks[s]})
    all_classes = [c for c in ("LL", "LH", "HL", "HH") if any((classes[s] == c).any() for s in seeds)]

    def everything(seed: int) -> np.ndarray | None:
        return None

    def task_is(label: str) -> Callable[[int], np.ndarray]:
        return lambda seed: tasks[seed] == label

    def class_is(label: str) -> Callable[[int], np.ndarray]:
        return lambda seed: classes[seed] == label

    overall: dict[str, GroupMetrics] = {n: group(n, everything) for n in names}
    router_results: dict[str, RouterResult] = {}
    for n in names:
        by_task = {t: group(n, task_is(t)) for t in all_tasks if len(all_tasks) > 1 or t}
        by_class = {c: group(n, class_is(c)) for c in all_classes}
        vs = vs_baseline(overall[BASELINE], overall[n]) if BASELINE in overall and n != BASELINE else None
        router_results[n] = RouterResult(
            name=n,
            oracle=entries[n].oracle or all_oracle,
            predictor=oracle.name if entries[n].oracle else label,
            description=entries[n].description,
            overall=overall[n],
            by_task={t: g for t, g in by_task.items() if g.n_requests > 0},
            by_class={c: g for c, g in by_class.items() if g.n_requests > 0},
            vs_baseline_pct=vs,
        )
    evaluation_id, evaluated_at = new_evaluation()
    report = EvalReport(
        workload=workload.name,
        workload_description=workload.description,
        synthetic=workload.synthetic,
        latency_model=str(getattr(latency_model, "name", type(latency_model).__name__)),
        cluster=_cluster_summary(cluster),
        seeds=tuple(int(s) for s in seeds),
        predictor=label,
        baseline=BASELINE,
        class_thresholds={
            "heavy_prefill_s": HEAVY_PREFILL_S,
            "heavy_decode_s": HEAVY_DECODE_S,
            "short_long_threshold_tokens": ctx.length_threshold_tokens,
            "heavy_decode_tokens_at_128_prompt": length_threshold_tokens(latency_model),
        },
        routers=router_results,
        evaluation_id=evaluation_id,
        evaluated_at=evaluated_at,
    )
    first = {n: results[(n, seeds[0])] for n in names}
    return EvalRun(report=report, first_seed=first)


def evaluate(
    routers: Sequence[str],
    workload: Workload,
    cluster: ClusterConfig,
    latency_model: LatencyModel,
    seeds: Sequence[int] = (0, 1, 2),
    predictor: LengthPredictor | None = None,
    *,
    out_dir: Path | None = None,
    sink: ResultSink | None = None,
    context_options: dict[str, object] | None = None,
    progress: ProgressFn | None = None,
    workers: int = 1,
    executor: Executor | None = None,
) -> EvalReport:
    """Replay ``routers`` (registry names) on ``workload``'s held-out requests for every seed.

    Args:
        cluster: the simulator's ``ClusterConfig``.
        latency_model: the profile's ``LatencyModel`` (replay and router estimates use the same).
        predictor: length predictor for non-oracle routers (default: ``TaskMeanPredictor`` fitted
            on ``workload.train``). Oracle routers always get ``OraclePredictor``.
        out_dir: when given, writes ``report.json``, ``report.md``, ``e2e_cdf.png`` and
            ``queue_<router>.png`` (first seed) there.
        sink: when given, ``sink.write(report)`` stores the report (e.g. ``eval.sinks.DuckDBSink``).
        workers: >1 runs replays in that many processes (same results: every replay is seeded).
        executor: runs the replays instead (e.g. over a Dask cluster; see ``Executor``).

    Returns the frozen ``EvalReport``; ``vs_baseline_pct`` is present when ``round_robin`` is among
    ``routers``.
    """
    run = run_evaluation(
        routers,
        workload,
        cluster,
        latency_model,
        seeds,
        predictor,
        context_options=context_options,
        progress=progress,
        workers=workers,
        executor=executor,
    )
    if out_dir is not None:
        write_outputs(run, Path(out_dir))
    if sink is not None:
        sink.write(run.report)
    return run.report


def write_outputs(run: EvalRun, out_dir: Path) -> list[Path]:
    """report.json, report.md and the plots into ``out_dir`` (created). Returns the paths written."""
    from eval.plots import plot_e2e_cdf, plot_queue_lengths

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md"]
    paths[0].write_text(run.report.model_dump_json(indent=2))
    paths[1].write_text(to_markdown(run.report))
    labels = {n: f"{n} (ORACLE)" if r.oracle else n for n, r in run.report.routers.items()}
    paths.append(
        plot_e2e_cdf({labels[n]: a["e2e_s"] for n, a in run.first_seed.items()}, out_dir / "e2e_cdf.png")
    )
    for n, arrays in run.first_seed.items():
        series = arrays.get("instance_series")
        if series:
            paths.append(plot_queue_lengths(series, out_dir / f"queue_{n}.png", title=labels[n]))
    return paths
