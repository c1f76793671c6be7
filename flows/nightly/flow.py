"""The ``nightly-retrain`` Prefect flow: from newly arrived traces to a promoted champion router.

Who calls this: ``loadwise run`` (``run_nightly``, once), ``loadwise serve`` (on a cron schedule:
the ``nightly`` deployment, plus an hourly ``drift-watch`` that retrains only on drift) and
``prefect deploy`` workers (``prefect.yaml``). The flow only sequences the steps; each step is a
module of this package, and each step's work is a task of ``flows.tasks``:

1. ``ingest-traces`` (``flows.nightly.ingest``), 2. ``check-drift`` (``drift``),
3. ``retrain-impact-estimator``, ``retrain-length-predictor`` (``models``), then
   ``predict-lengths`` (``predict``: the routers' length predictor, by default the registered
   champion, and its predictions of the router's replays written to ``marts.length_predictions``),
4. ``train-router``, ``evaluate-router``, ``register-router``, ``promote-router`` (``router``: the RL
   policies and the tuned rules are the candidates, the best is registered; the first champion, or
   the statistical gate against the current one),
5. ``publish-report`` (``report``): the report, the artifacts and the ``ops.nightly_runs`` row.

Its settings are ``flows.nightly.config.NightlyConfig``, validated whole when read. Every training
and evaluation step is cached on an explicit key over its inputs (``flows.nightly.keys``): a second
run with no new data hits every cache and retrains nothing; ``force`` refreshes them all.

**Failures.** Each warehouse write is copy-on-write (a failure publishes nothing) and ``champion``
moves only in ``promote-router``, after the gate: a step that raises leaves the previous champion
serving and the warehouse consistent; the run is logged as ``failed`` with the step and the error,
and the watermark stays. A run cancelled (from the UI or API) or crashed (Ctrl-C, SIGTERM, a killed
process) is logged as ``cancelled`` / ``crashed`` by Prefect's hooks (``report.record_interrupted``),
the watermark staying too.

**What an operator sees.** Each step's start and end (with its outcome and duration) is an INFO log
of the flow run, in Prefect's Logs tab; the console handler's level (``warehouse.run_env``) keeps the
terminal quiet. ``loadwise run`` prints the same lines as they happen, and a progress bar for the
long steps (``run_nightly(on_step=...)``). Runs are named by their date, trigger and data watermark
(``run_name``: ``2026-12-07 02:00Z nightly, watermark 42``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows import tasks
from flows.models.publish import Published
from flows.nightly.config import NightlyConfig
from flows.nightly.drift import drift_step
from flows.nightly.ingest import ingest_step
from flows.nightly.keys import StepCache
from flows.nightly.models import ESTIMATOR_STEP, PREDICTOR_STEP, retrain_estimator, retrain_predictor
from flows.nightly.predict import PREDICT_STEP, predict_step
from flows.nightly.report import (
    RUNNING,
    publish_artifacts,
    record_failure,
    record_interrupted,
    record_success,
    render_report,
)
from flows.nightly.results import PredictionsResult, RouterOutcome, StepEvent, StepLog, StepOutcome
from flows.nightly.router import router_steps

_LISTENERS: list[Callable[[StepEvent], None]] = []
"""In-process listeners of the running flow's step events (``watch_steps``: ``loadwise run``)."""


def run_name() -> str:
    """The flow run's name: its (scheduled) start in UTC, what started it (the deployment:
    ``nightly``, ``drift-watch``; ``run`` for a direct call such as ``loadwise run``) and the data
    watermark it starts from (the last ``raw.files.file_id`` a successful run consumed; ``none``
    before the first). Prefect calls it once per run, before the first step; it never raises."""
    from prefect.runtime import deployment, flow_run

    when = flow_run.scheduled_start_time or datetime.now(UTC)
    trigger = deployment.name or "run"
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M}Z {trigger}, watermark {_watermark(flow_run.parameters)}"


def _watermark(parameters: dict[str, Any]) -> str:
    from warehouse.ops import last_watermark
    from warehouse.store import resolve_path

    try:
        given = parameters.get("config")
        cfg = given if isinstance(given, NightlyConfig) else NightlyConfig.model_validate(given or {})
        db = resolve_path(cfg.warehouse)
        mark = last_watermark(db) if db.exists() else None
    except Exception:  # not a warehouse: the flow's first check refuses it, in one line
        return "?"
    return "none" if mark is None else str(mark.file_id)


@flow(
    name="nightly-retrain",
    log_prints=True,
    flow_run_name=run_name,
    on_cancellation=[record_interrupted],
    on_crashed=[record_interrupted],
)
def nightly_retrain(config: NightlyConfig | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Ingest new traces, check drift, retrain what changed, evaluate, gate, promote, report.

    Returns the run summary (also the ``loadwise run --json`` payload): ``warehouse``, ``synthetic``,
    ``ingest``, ``summary``, ``drift``, ``steps`` (name -> ``ran`` | ``cached`` | ``skipped: why``),
    ``step_seconds`` (name -> wall seconds of each step that ran or was cached; also in the report and
    ``ops.nightly_runs.details``),
    ``models``, ``predictions`` (the routers' length predictor and what was stored), ``evaluation``
    (router -> headline figures), ``gate``, ``promoted``, ``router`` (the night's router candidates,
    the chosen one, its kind and why; ``None`` when not evaluated), ``report_dir``.
    """
    from warehouse.settings import loadwise_home
    from warehouse.store import check_write_target

    cfg = config or NightlyConfig()  # validated whole when built (flows.nightly.config)
    started = datetime.now(UTC)
    log = StepLog(notify=_step_events())
    run = run_id()
    RUNNING[run] = log  # the step a cancelled or crashed run was in (report.record_interrupted)
    try:
        db = str(check_write_target(cfg.warehouse))  # not a warehouse: refused before any work, no row
        try:
            summary = _sequence(cfg, db, loadwise_home() / "nightly", tracking_uri, started, log)
        except Exception as exc:
            record_failure(db, run, started, log.running, exc)
            raise
        RUNNING.pop(run, None)
        return summary
    except BaseException as exc:  # KeyboardInterrupt too: Prefect keeps a crashed run's exception
        if isinstance(exc, Exception):  # else Prefect's crash hook still needs the step (RUNNING)
            RUNNING.pop(run, None)
        # Prefect keeps the exception (the run's state) for the life of the process; the locals of
        # the finished frames in its traceback would keep whatever they held alive with it: a DuckDB
        # connection then outlives the interpreter (nanobind "leaked instance ... DuckDBPyConnection"
        # on stderr after the error). The traceback's text is unchanged.
        traceback.clear_frames(exc.__traceback__)
        raise


def _sequence(
    cfg: NightlyConfig, db: str, home: Path, tracking_uri: str | None, started: datetime, log: StepLog
) -> dict[str, Any]:
    """The steps in order; the run summary."""
    from eval.spec import DEFAULT_RATE_RPS, pick_profile
    from flows.models.router import estimator_latency
    from flows.registry import ModelRegistry

    run = run_id()
    out_dir = home / "runs" / f"{started:%Y%m%dT%H%M%SZ}-{run[:8]}"

    log.start("ingest-traces")
    ingest = ingest_step(cfg, db)

    log.start("check-drift")
    drift = drift_step(cfg, db)
    profile = cfg.profile or pick_profile()
    configs = cfg.router_configs(db, profile, cfg.rate_rps or DEFAULT_RATE_RPS.get(profile, 12.0))
    champion = tasks.find_router_champion(next(iter(configs.values())), tracking_uri)
    train = cfg.retrain == "changed" or bool(drift.drifted) or champion is None or cfg.force

    models: list[Published] = []
    router = RouterOutcome()
    predictions: PredictionsResult | None = None
    if not train:
        why = "retrain = on-drift and the new window did not drift"
        log.skip((ESTIMATOR_STEP, PREDICTOR_STEP, PREDICT_STEP, "train-router"), why)
    else:
        cache = StepCache(home / "cache", ModelRegistry(tracking_uri).tracking_uri, cfg.force)
        estimator = retrain_estimator(cfg, profile, cache, log, tracking_uri)
        models.append(estimator)
        predictor = retrain_predictor(cfg, db, ingest.synthetic, cache, log, tracking_uri)
        if predictor is not None:
            models.append(predictor)
        predictions, configs = predict_step(cfg, db, configs, log, tracking_uri)
        # the rule candidates estimate latency with the impact estimator fitted for this run's profile
        latency = estimator_latency(ModelRegistry(tracking_uri), estimator.version.version, profile)
        router = router_steps(cfg, db, home, configs, champion, cache, log, tracking_uri, latency)
        if router.published is not None:
            models.append(router.published)

    log.start("publish-report")
    steps = log.outcomes()
    report_md = render_report(
        cfg, ingest, drift, steps, models, router, predictions, log.seconds(), log.cpu_seconds()
    )
    publish_artifacts(report_md, router.evaluation, out_dir, router.eval_dir)
    watermark = ingest.latest_file if train else None  # None: consumed nothing (ops keeps the watermark)
    record_success(db, run, started, watermark, drift, log, router)
    log.record(StepOutcome("publish-report", "ran"))
    print(f"report: {out_dir / 'report.md'}")
    return {
        "warehouse": db,
        "synthetic": ingest.synthetic,
        "ingest": ingest.report,
        "summary": ingest.summary,
        "drift": drift.payload(),
        "steps": steps,
        "step_seconds": log.seconds(),
        "step_cpu_seconds": log.cpu_seconds(),
        "models": [m.to_dict() for m in models],
        "predictions": None if predictions is None else predictions.payload(),
        "evaluation": router.evaluation,
        "gate": router.gate.model_dump(mode="json") if router.gate else None,
        "promoted": router.promoted,
        "router": router.payload(),
        "report_dir": str(out_dir),
    }


def run_id() -> str:
    """The Prefect flow run's id (``local`` outside a run)."""
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")


def _step_events() -> Callable[[StepEvent], None]:
    """The flow's ``StepLog`` listener: each start and end is an INFO log of the flow run (Prefect's
    Logs tab; progress is not logged), and every event goes to the ``watch_steps`` listeners.
    Outside a flow run (``nightly_retrain.fn``, tests) the logs go to this module's logger."""
    import logging

    from prefect.exceptions import MissingContextError

    logger: Any
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)

    def notify(event: StepEvent) -> None:
        if event.outcome != "progress":
            logger.info(event.message())
        for listener in list(_LISTENERS):
            listener(event)

    return notify


@contextmanager
def watch_steps(listener: Callable[[StepEvent], None]) -> Iterator[None]:
    """Call ``listener`` with every step event of the flow runs of this process while inside."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def run_nightly(
    config: NightlyConfig | None = None,
    tracking_uri: str | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
) -> dict[str, Any]:
    """``nightly_retrain`` on the config's task runner (``loadwise run``); ``on_step`` is called
    with each step's start, end and progress as they happen."""
    from flows.distributed import task_runner

    cfg = config or NightlyConfig()
    runner = task_runner(cfg.task_runner, n_workers=cfg.workers)
    with watch_steps(on_step or (lambda event: None)):
        return nightly_retrain.with_options(task_runner=runner)(cfg, tracking_uri)
