"""The ``ingest-traces`` Prefect flow: ingest trace files into the warehouse, publish counts.

Thin by design (see STYLE.md): the flow sequences two tasks of ``flows.tasks`` (``ingest-files``,
``publish-ingest-artifact``, which the nightly flow runs too); business logic lives in
``warehouse.ingest``, and the report helpers below are pure. Retries only on I/O errors (a file system
hiccup, a warehouse locked past its retry window), never on bad data. A bad row is quarantined and a
file that cannot be read is skipped (listed with its reason in the ``ingest-skipped`` artifact and
the run's log) while the other files load; the flow fails only when every file was skipped. Run it from Python
(``ingest_traces(["trace.csv"])``) or from the CLI (``loadwise ingest --flow PATH...``). Works in
Prefect's local (ephemeral) mode with no server.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import tasks


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
    report = tasks.ingest_files(paths, warehouse, fmt, source)
    tasks.publish_ingest(report)
    return report
