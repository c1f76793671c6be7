"""The ``retrain-pipeline`` Prefect flow (``loadwise run``): ingest, analytics, router evaluation.

A sequence of thin tasks (one library call each) so later issues can append feature, training and
promotion steps. The evaluation step replays every registered router on the warehouse's held-out
traces (``eval.scheduled``) and stores the report in ``marts.eval_results``.

With the shared data folder present it ingests the real traces
(the two Azure CSVs, CASTILLO, AlpacaEval, Dolly); without it, it writes a seeded synthetic
Azure-like workload under the data home and ingests that, labelled source ``synthetic``, and says so.
Re-runs are idempotent (already-ingested files are skipped by content hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.ingest import retry_on_io


@task(name="locate-traces")
def locate_traces(data_dir: str) -> list[str]:
    """The real trace files present under ``data_dir`` (empty: none, use synthetic)."""
    from warehouse.catalog import real_trace_paths

    return [str(p) for p in real_trace_paths(Path(data_dir))]


@task(name="write-synthetic-traces", retries=1, retry_condition_fn=retry_on_io)
def write_synthetic(out_dir: str, rows: int, seed: int) -> list[str]:
    """Write the seeded synthetic Azure-schema traces; returns their paths."""
    from warehouse.synthetic import SyntheticConfig, write_azure_like

    return [str(p) for p in write_azure_like(Path(out_dir), SyntheticConfig(rows=rows, seed=seed))]


@task(name="ingest-traces", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def ingest_task(paths: list[str], warehouse: str, source: str | None) -> dict[str, Any]:
    """One atomic load (see ``warehouse.ingest.ingest``); returns the --json report dict."""
    from warehouse.ingest import ingest

    return ingest(paths, warehouse=warehouse, source=source).to_dict()


@task(name="summarize-warehouse", retries=1, retry_condition_fn=retry_on_io)
def summarize(warehouse: str) -> list[dict[str, Any]]:
    """The analytics summary tables (counts, token percentiles, workload classes) as dicts."""
    from warehouse.analytics import summary_tables
    from warehouse.store import connect_readonly

    con = connect_readonly(warehouse)
    try:
        return [
            {"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]}
            for t in summary_tables(con)
        ]
    finally:
        con.close()


@task(name="evaluate-routers", retries=1, retry_condition_fn=retry_on_io)
def evaluate_routers(
    warehouse: str, synthetic: bool, seeds: list[int], num_requests: int, out_dir: str
) -> dict[str, Any]:
    """Every registered router on the warehouse's held-out traces; returns the report's summary."""
    from eval.scheduled import evaluate_warehouse_routers

    report = evaluate_warehouse_routers(
        warehouse, synthetic=synthetic, seeds=seeds, num_requests=num_requests, out_dir=Path(out_dir)
    )
    return {"description": report.workload_description, "latency_model": report.latency_model,
            "routers": report.summary()}  # fmt: skip


def train_models(db: str, synthetic: bool, tracking_uri: str | None) -> list[dict[str, Any]]:
    """Refit the impact estimator and retrain the length predictor; register both (gate included).

    The estimator is fitted for the profile the evaluation uses (``eval.scheduled.pick_profile``).
    The length predictor needs prompt texts with serving-model output lengths (CASTILLO): without
    them (synthetic runs) it is skipped, and the result says so.
    """
    from eval.scheduled import pick_profile
    from flows.models import (
        IMPACT_ESTIMATOR,
        LENGTH_PREDICTOR,
        fit_estimator_task,
        has_predictor_data,
        register_task,
        report_task,
        train_predictor_task,
    )

    results = []
    fitted = fit_estimator_task({"profile": pick_profile()})
    results.append(report_task(IMPACT_ESTIMATOR, register_task(IMPACT_ESTIMATOR, fitted, tracking_uri)))
    if synthetic or not has_predictor_data(db):
        print("length predictor: no prompt texts with serving-model output lengths in the warehouse; skipped")
        results.append({"model": {"name": LENGTH_PREDICTOR}, "skipped": "no CASTILLO rows"})
    else:
        trained = train_predictor_task({}, db)
        results.append(report_task(LENGTH_PREDICTOR, register_task(LENGTH_PREDICTOR, trained, tracking_uri)))
    return results


@flow(name="retrain-pipeline", log_prints=True)
def retrain_pipeline(
    warehouse: str | None = None,
    data_dir: str | None = None,
    synthetic_rows: int = 20_000,
    seed: int = 0,
    evaluate: bool = True,
    eval_seeds: tuple[int, ...] = (0, 1, 2),
    eval_requests: int = 4000,
    train: bool = True,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Ingest the real (or synthetic) traces into ``warehouse``, summarise it, refit / retrain and
    register the learned models (``train``), evaluate the routers.

    Returns ``{"synthetic": bool, "warehouse": str, "ingest": <report dict>, "summary": [tables],
    "models": [registration results], "evaluation": <summary dict> | None}``.
    """
    from warehouse.paths import loadwise_home, shared_data_dir
    from warehouse.store import resolve_path

    db = str(resolve_path(warehouse))
    paths = locate_traces(str(Path(data_dir) if data_dir else shared_data_dir()))
    synthetic = not paths
    if synthetic:
        print(
            "no real traces in the shared data folder: generating a SYNTHETIC Azure-like workload "
            "(source 'synthetic')"
        )
        paths = write_synthetic(str(loadwise_home() / "synthetic"), synthetic_rows, seed)
    report = ingest_task(paths, db, "synthetic" if synthetic else None)
    print(
        f"ingest: {report['rows_read']} rows read = {report['ingested']} ingested + "
        f"{report['quarantined']} quarantined; {report['duplicates_skipped']} duplicate rows skipped"
    )
    summary = summarize(db)
    models = train_models(db, synthetic, tracking_uri) if train else []
    evaluation = None
    if evaluate:
        out_dir = str(loadwise_home() / "eval" / "pipeline")
        evaluation = evaluate_routers(db, synthetic, list(eval_seeds), eval_requests, out_dir)
        print(f"router evaluation stored in marts.eval_results; report and plots in {out_dir}")
    return {
        "synthetic": synthetic,
        "warehouse": db,
        "ingest": report,
        "summary": summary,
        "models": models,
        "evaluation": evaluation,
    }
