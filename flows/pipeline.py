"""The ingest steps of the nightly flow (``flows.nightly``): locate traces, ingest, summarise.

Thin Prefect tasks, one library call each. With the shared data folder present the flow ingests
the real traces (the two Azure CSVs, CASTILLO, AlpacaEval, Dolly); without it, it writes a seeded synthetic
Azure-like workload under the data home and ingests that, labelled source ``synthetic``, and says so.
Re-runs are idempotent (already-ingested files are skipped by content hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

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
    """One atomic load (see ``warehouse.ingest.ingest``); returns the --json report dict.

    A file skipped as unreadable is printed (the nightly flow logs prints) and the others load; the
    task fails only when every file was skipped (``NoFileLoadedError``, not retried).
    """
    from warehouse.ingest import ingest

    report = ingest(paths, warehouse=warehouse, source=source)
    for skipped in report.skipped:
        print(f"ingest: skipped {skipped.path}: {skipped.reason}")
    return report.to_dict()


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
