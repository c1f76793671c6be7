"""Step 5 of the nightly flow, ``publish-report``, and the run's row in ``ops.nightly_runs``.

Who calls this: the flow (``flows.nightly.flow``), once per run: ``render_report`` (the markdown
report: decision, steps, drift, models, gate, routers), ``publish_artifacts`` (``report.md`` under
the run's folder and the Prefect artifacts ``nightly-retrain-report``, ``nightly-retrain-routers``,
``nightly-retrain-cdf``), ``record_success`` (the watermark advances only here, on success) and
``record_failure`` (a failed run is logged with the step and error; the watermark stays);
``record_interrupted`` (Prefect's ``on_cancellation`` / ``on_crashed`` hook: a cancelled or crashed
run is logged too, with the step it was in when the hook runs in the run's own process).
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.models.gate import LLM_ROUTER
from flows.models.publish import Published
from flows.nightly.config import NightlyConfig
from flows.nightly.results import (
    DriftResult,
    IngestResult,
    PredictionsResult,
    RouterOutcome,
    StepLog,
    Summary,
)


def render_report(
    cfg: NightlyConfig,
    ingest: IngestResult,
    drift: DriftResult,
    steps: dict[str, str],
    models: list[Published],
    router: RouterOutcome,
    predictions: PredictionsResult | None = None,
    seconds: dict[str, float] | None = None,
    cpu_seconds: dict[str, float] | None = None,
) -> str:
    """The run's markdown report (also the Prefect artifact). ``predictions``: the ``predict-lengths``
    step's result (``None``: not run); ``seconds`` / ``cpu_seconds``: each step's wall and CPU
    seconds (``StepLog``), the Steps table."""
    gate, evaluation, eval_dir = router.gate, router.evaluation, router.eval_dir
    wall, cpu = seconds or {}, cpu_seconds or {}
    counts = ingest.report
    lines = [
        "# nightly-retrain",
        "",
        f"**Decision**: {gate.reason if gate else 'no router evaluation this run'}",
        "",
        f"Ingest: {counts['rows_read']} rows read, {counts['ingested']} ingested, {counts['quarantined']} "
        f"quarantined, {counts['duplicates_skipped']} in already-ingested files.",
        "",
        "## Steps",
        "",
        "| step | outcome | wall (s) | CPU (s) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {outcome} | {_secs(wall.get(name))} | {_secs(cpu.get(name))} |"
            for name, outcome in steps.items()
        ),
        "",
        "## Drift (new window vs training window)",
        "",
        drift.markdown,
        "",
        "## Models",
        "",
        "| model | version | aliases | decision |",
        "|---|---|---|---|",
        *(
            f"| {v.name} | {v.version} | {','.join(v.aliases)} | {m.decision.reason} |"
            for m, v in ((m, m.version) for m in models)
        ),
    ]
    if predictions is not None:
        lines += ["", "## Length predictions the routers used", "", *_predictions_lines(predictions)]
    if router.candidates:
        from flows.nightly.router import candidates_markdown

        lines += [
            "",
            "## Router candidates (held-out windows, mean over seeds)",
            "",
            f"Registered: `{router.chosen}` (policy `{router.chosen_policy}`) as {LLM_ROUTER} "
            f"v{router.challenger_version}; "
            + ("now the champion." if router.promoted else "the champion did not change."),
            "",
            candidates_markdown(list(router.candidates), router.chosen_why or ""),
        ]
    if gate is not None:
        lines += ["", "## Promotion gate", "", gate.to_markdown()]
    if evaluation is not None and eval_dir is not None:
        lines += [
            "",
            "## Routers on the held-out windows (mean over seeds)",
            "",
            "| router | mean E2E (s) | ± 95 % | p99 E2E (s) | mean TTFT (s) | vs round robin (%) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {s['e2e_mean']:.3f} | {s['e2e_mean_ci95']:.3f} | {s['e2e_p99']:.2f} | "
                f"{s['ttft_mean']:.3f} | {_pct(s['vs_round_robin_pct'])} |"
                for name, s in sorted(evaluation.items(), key=lambda kv: _sort_key(kv[1]))
            ),
            "",
            f"Latency CDF: `{eval_dir / 'e2e_cdf.png'}`; full report: `{eval_dir / 'report.md'}`.",
        ]
    lines += ["", f"Config: `{cfg.model_dump_json()}`", ""]
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _predictions_lines(predictions: PredictionsResult) -> list[str]:
    """The routers' length predictor and what ``predict-lengths`` stored, per part of the rows."""
    lines = [f"Every router candidate and baseline routed with **{predictions.predictor}**."]
    stored = predictions.stored
    if not stored:
        return lines
    lines += [
        "",
        "| rows | requests | already stored | inputs computed | written | seconds | ms per written row |",
        "|---|---|---|---|---|---|---|",
    ]
    parts = stored.get("parts")
    for part, st in parts.items() if isinstance(parts, dict) else ():
        if st:
            lines.append(
                f"| {part} | {st['rows']} | {st['cached']} | {st['distinct_inputs']} | {st['written']} | "
                f"{st['total_s']:.1f} | {st['ms_per_written_row']:.3f} |"
            )
    lines += ["", "Stored in `marts.length_predictions`; calibration: `marts.length_calibration_summary`."]
    return lines


def _sort_key(figures: dict[str, float | bool | None]) -> float:
    return float(figures["e2e_mean"] or 0.0)


def _pct(value: float | bool | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def publish_artifacts(
    report_md: str, evaluation: Summary | None, out_dir: Path, eval_dir: Path | None
) -> None:
    """Write ``report.md`` and create the Prefect artifacts (report, router table, CDF link)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report_md)
    create_markdown_artifact(report_md, key="nightly-retrain-report", description="nightly-retrain")
    if evaluation is not None:
        rows = [{"router": n, **s} for n, s in evaluation.items()]
        create_table_artifact(rows, key="nightly-retrain-routers", description="held-out evaluation")
        cdf = eval_dir / "e2e_cdf.png" if eval_dir else None
        if cdf is not None and cdf.exists():
            create_link_artifact(cdf.as_uri(), link_text="E2E latency CDF", key="nightly-retrain-cdf")


def record_success(
    db: str,
    run_id: str,
    started: datetime,
    watermark: int | None,
    drift: DriftResult,
    log: StepLog,
    router: RouterOutcome,
) -> None:
    """The run's ``ok`` row in ``ops.nightly_runs``; ``watermark`` (``None``: the run consumed
    nothing) is where the next run's new window starts."""
    from warehouse.ops import record_run

    gate = router.gate
    steps = log.outcomes()
    record_run(
        db,
        run_id=run_id,
        started_at=started,
        status="ok",
        watermark_file_id=watermark,
        new_requests=drift.new_requests,
        drifted=drift.drifted,
        drift_reasons="; ".join(drift.reasons),
        retrained=",".join(log.retrained()),
        challenger_version=router.challenger_version,
        promoted=router.promoted,
        decision=gate.reason if gate else "; ".join(log.skipped()),
        details={
            "steps": steps,
            "step_seconds": {k: round(v, 3) for k, v in log.seconds().items()},
            "step_cpu_seconds": {k: round(v, 3) for k, v in log.cpu_seconds().items()},
            "gate": gate.model_dump(mode="json") if gate else None,
        },
        evaluation_id=router.evaluation_id,
    )


def record_failure(db: str, run_id: str, started: datetime, step: str, exc: BaseException) -> None:
    """Log the failed run (the watermark does not move); never masks the original error."""
    from warehouse.ops import record_run

    if not Path(db).exists():  # failed before the warehouse existed: nothing to log into
        return
    try:
        record_run(
            db,
            run_id=run_id,
            started_at=started,
            status="failed",
            watermark_file_id=None,
            decision=f"{step} failed: {type(exc).__name__}: {exc}"[:2000],
            details={"traceback": traceback.format_exc()[-4000:]},
        )
    except Exception as log_exc:  # the warehouse itself may be what failed
        print(f"could not record the failed run in ops.nightly_runs: {log_exc}")


RUNNING: dict[str, StepLog] = {}
"""Flow-run id -> the ``StepLog`` of a run of this process that has not finished (the flow adds and
removes it): ``record_interrupted`` names the step a cancelled or crashed run was in."""


def record_interrupted(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect's ``on_cancellation`` and ``on_crashed`` hook of ``nightly-retrain``: the run's
    ``cancelled`` (from the UI or API) or ``crashed`` (its process interrupted: Ctrl-C, SIGTERM; or
    killed) row in
    ``ops.nightly_runs``; the watermark does not move.

    Prefect runs it once per run, in the run's process or, when that process was killed, in the
    runner's (``loadwise serve``): there the step is not known (``a step``). A run that already has
    a row (its ``failed`` row) gets no second one. Never raises (a hook's error would only be logged).
    """
    from flows.nightly.config import NightlyConfig
    from warehouse.ops import record_run
    from warehouse.store import connect_readonly, resolve_path

    run_id = str(flow_run.id)
    log = RUNNING.pop(run_id, None)
    try:
        given = (flow_run.parameters or {}).get("config")
        cfg = given if isinstance(given, NightlyConfig) else NightlyConfig.model_validate(given or {})
        db = resolve_path(cfg.warehouse)
        if not db.exists():  # interrupted before the warehouse existed: nothing to log into
            return
        with connect_readonly(db) as con:
            known = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ops' "
                "AND table_name = 'nightly_runs'"
            ).fetchone()
            if known and known[0]:
                row = con.execute(
                    "SELECT count(*) FROM ops.nightly_runs WHERE run_id = ?", [run_id]
                ).fetchone()
                if row and row[0]:
                    return
        status = "cancelled" if state.is_cancelled() or state.is_cancelling() else "crashed"
        step = log.running if log is not None else "a step"
        record_run(
            db,
            run_id=run_id,
            started_at=flow_run.start_time or datetime.now(UTC),
            status=status,
            watermark_file_id=None,
            decision=f"{status} during {step}: {state.message or state.name}"[:2000],
            details={"state": state.name, "steps": log.outcomes() if log is not None else {}},
        )
    except Exception as exc:  # the warehouse itself may be what is unavailable
        print(f"could not record the {state.name.lower()} run in ops.nightly_runs: {exc}")
