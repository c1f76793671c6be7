"""The ``ingest-traces`` Prefect flow: ingest trace files into the warehouse, publish counts.

Thin by design (see STYLE.md): one library call per task; business logic lives in
``warehouse.ingest`` and ``warehouse.analytics``. Retries only on I/O errors (a file system
hiccup, a warehouse locked past its retry window), never on bad data. A bad row is quarantined and a
file that cannot be read is skipped (listed with its reason in the ``ingest-skipped`` artifact and
the run's log) while the other files load; the flow fails only when every file was skipped. Run it from Python
(``ingest_traces(["trace.csv"])``) or from the CLI (``loadwise ingest --flow PATH...``). Works in
Prefect's local (ephemeral) mode with no server.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from warehouse.errors import WarehouseBusyError


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on I/O."""
    return isinstance(getattr(state, "data", None), OSError | WarehouseBusyError)


@task(name="ingest-files", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def ingest_files(paths: list[str], warehouse: str | None, fmt: str, source: str | None) -> dict[str, Any]:
    """One atomic load of ``paths``; returns the ``IngestReport`` as a dict (the --json contract)."""
    from warehouse.ingest import ingest

    return ingest(paths, warehouse=warehouse, fmt=fmt, source=source).to_dict()


@task(name="publish-ingest-artifact")
def publish_counts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Table artifacts: counts per source (key ``ingest-counts``) and, when any file was skipped,
    the skipped files with their reasons (key ``ingest-skipped``); returns the counts rows."""
    rows = counts_by_source(report)
    create_table_artifact(
        rows, key="ingest-counts", description="Rows read / ingested / quarantined per source"
    )
    skipped = skipped_files(report)
    for entry in skipped:
        print(f"skipped {entry['path']}: {entry['reason']}")
    if skipped:
        create_table_artifact(
            skipped, key="ingest-skipped", description="Files skipped as unreadable (not loaded), and why"
        )
    return rows


def skipped_files(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The skipped files of an ingest report: path, format and reason (pure)."""
    return [
        {"path": f["path"], "format": f.get("format", ""), "reason": f.get("reason") or ""}
        for f in report["files"]
        if f.get("status") == "skipped"
    ]


def counts_by_source(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Sum the per-file counts of an ingest report per source (pure; tested without Prefect).

    Skipped files are left out (they have no rows; ``skipped_files`` lists them)."""
    keys = ("rows_read", "ingested", "quarantined", "duplicates_skipped")
    acc: dict[str, dict[str, Any]] = {}
    for entry in report["files"]:
        if entry.get("status") == "skipped":
            continue
        row = acc.setdefault(
            entry["source"], {"source": entry["source"], "files": 0, **dict.fromkeys(keys, 0)}
        )
        row["files"] += 1
        for key in keys:
            row[key] += entry[key]
    return [acc[k] for k in sorted(acc)]


@flow(name="ingest-traces", log_prints=True)
def ingest_traces(
    paths: list[str], warehouse: str | None = None, fmt: str = "auto", source: str | None = None
) -> dict[str, Any]:
    """Ingest ``paths`` (files or directories) into ``warehouse`` (default: the data home's file)."""
    report = ingest_files(paths, warehouse, fmt, source)
    publish_counts(report)
    return report
