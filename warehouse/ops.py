"""The nightly flow's bookkeeping in the warehouse: its watermark, run log and input fingerprints.

Who calls this: ``flows.nightly`` (the ``nightly-retrain`` flow), a few times per run; analysts read
``ops.nightly_runs`` with SQL. The watermark is the highest ``raw.files.file_id`` a *successful*
nightly run consumed: requests of later files form the next run's "new window", requests of files up
to it the reference window the drift check compares against. A failed run is logged with status
``failed`` and leaves the watermark where it was, so the next run sees the same new window again.

**Watermarks only move forward.** Runs overlap (the nightly deployment and the hourly drift-watch):
one that read watermark 5, consumed nothing and finishes after another advanced it to 9 must not
take it back to 5. ``record_run`` enforces it where the watermark is written: inside the write
session (one writer at a time), an ``ok`` row records ``max(its watermark, the current one)``; a
row given no watermark carries the current one. ``last_watermark`` reads the highest.

Writes go through the warehouse's copy-on-write session (``warehouse.store.write_session``):
analysts' read-only connections keep working, and a failure publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from warehouse.store import connect_readonly, write_session

NIGHTLY_RUNS_COLUMNS = (
    "run_id", "started_at", "finished_at", "status", "watermark_file_id", "new_requests", "drifted",
    "drift_reasons", "retrained", "challenger_version", "promoted", "decision", "details",
    "evaluation_id",
)  # fmt: skip
"""The columns ``record_run`` writes. The table, its columns' meaning (``COMMENT``s) and the
evaluation id added later are the warehouse's schema (``warehouse/sql/schema.sql``, ``comments.sql``)."""


RUN_STATUSES = ("ok", "failed", "cancelled", "crashed")
"""``ops.nightly_runs.status``: finished, raised, cancelled (from the Prefect UI or API) or crashed
(its process interrupted or killed: Ctrl-C, SIGTERM); only ``ok`` runs move the watermark."""


@dataclass(frozen=True)
class Watermark:
    """The last successful nightly run's position in ``raw.files``."""

    file_id: int
    run_id: str
    finished_at: datetime


def _has_table(con: Any, schema: str, table: str) -> bool:
    q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
    row = con.execute(q, [schema, table]).fetchone()
    return bool(row and row[0])


def last_watermark(warehouse: str | Path) -> Watermark | None:
    """The highest watermark an ``ok`` run recorded, and the first run that recorded it (``None``: no
    successful run has one yet)."""
    with connect_readonly(warehouse) as con:
        if not _has_table(con, "ops", "nightly_runs"):
            return None
        row = con.execute(
            "SELECT watermark_file_id, run_id, finished_at FROM ops.nightly_runs "
            "WHERE status = 'ok' AND watermark_file_id IS NOT NULL "
            "ORDER BY watermark_file_id DESC, finished_at LIMIT 1"
        ).fetchone()
    return Watermark(int(row[0]), str(row[1]), row[2]) if row else None


def max_file_id(warehouse: str | Path) -> int:
    """The newest ``raw.files.file_id`` (0 for an empty warehouse): the next watermark."""
    with connect_readonly(warehouse) as con:
        row = con.execute("SELECT coalesce(max(file_id), 0) FROM raw.files").fetchone()
    return int(row[0]) if row else 0


def request_windows(
    warehouse: str | Path, where: str, watermark: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reference, new)`` requests matching ``where`` (``status = 'ok'``): files up to the
    watermark, and after it (all rows are new when there is no watermark). Columns: ``task,
    prompt_tokens, output_tokens, arrival_s`` (what ``features.drift.detect_drift`` reads)."""
    mark = -1 if watermark is None else int(watermark)
    with connect_readonly(warehouse) as con:
        frame = con.execute(
            "SELECT file_id > ? AS is_new, coalesce(task, '') AS task, prompt_tokens, output_tokens, "
            f"arrival_s FROM marts.requests WHERE status = 'ok' AND ({where})",
            [mark],
        ).df()
    cols = ["task", "prompt_tokens", "output_tokens", "arrival_s"]
    new = frame["is_new"].astype(bool)
    return frame.loc[~new, cols].reset_index(drop=True), frame.loc[new, cols].reset_index(drop=True)


def data_fingerprint(warehouse: str | Path, where: str) -> str:
    """SHA-256 over the content hashes of the files whose requests match ``where``: the same set of
    ingested files gives the same fingerprint (a cache key input), whatever order they arrived in."""
    with connect_readonly(warehouse) as con:
        hashes = con.execute(
            "SELECT DISTINCT f.content_hash FROM raw.files AS f JOIN "
            f"(SELECT DISTINCT file_id FROM marts.requests WHERE {where}) AS r USING (file_id) ORDER BY 1"
        ).fetchall()
    return hashlib.sha256("\n".join(h for (h,) in hashes).encode()).hexdigest()


def record_run(
    warehouse: str | Path,
    *,
    run_id: str,
    started_at: datetime,
    status: str,
    watermark_file_id: int | None,
    new_requests: int | None = None,
    drifted: bool | None = None,
    drift_reasons: str = "",
    retrained: str = "",
    challenger_version: str | None = None,
    promoted: bool | None = None,
    decision: str = "",
    details: dict[str, Any] | None = None,
    evaluation_id: str | None = None,
) -> int | None:
    """Append one row to ``ops.nightly_runs`` (atomic; creates the table when missing).

    ``watermark_file_id`` of an ``ok`` run is what it consumed (``None``: nothing); the row records
    the larger of it and the current watermark, read in the same write session, so the watermark
    never moves backwards whatever order overlapping runs finish in. ``failed`` rows record none.
    ``evaluation_id``: the router evaluation the run judged by (``marts.eval_results.evaluation_id``;
    ``None``: it evaluated nothing). Returns the watermark recorded.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, not {status!r}")
    with write_session(warehouse) as con:
        mark = None
        if status == "ok":
            row = con.execute(
                "SELECT max(watermark_file_id) FROM ops.nightly_runs WHERE status = 'ok'"
            ).fetchone()
            marks = [m for m in (watermark_file_id, row[0] if row else None) if m is not None]
            mark = max(marks) if marks else None
        values = [
            run_id, started_at, datetime.now(UTC), status, mark, new_requests, drifted,
            drift_reasons, retrained, challenger_version, promoted, decision,
            json.dumps(details or {}, default=str), evaluation_id,
        ]  # fmt: skip
        con.execute(
            f"INSERT INTO ops.nightly_runs ({', '.join(NIGHTLY_RUNS_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(values))})",
            values,
        )
    return mark
