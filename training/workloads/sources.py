"""Requests to replay, read through the warehouse: from a published warehouse, or from trace files.

Who calls this: the workloads (``catalog``: ``azure``, ``--trace FILE --format F``) and the
retrain pipeline's evaluation step, once per run. Every trace format the warehouse reads can be
replayed, and it is read by the same code that ingests it: malformed rows are quarantined with their
reason (and counted in the returned ``IngestReport``), never silently dropped. Failed requests
(BurstGPT rows with 0 response tokens, ``status = 'failed'``) and rows with no output tokens are
not replayed: a replay needs at least one prompt and one output token.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from training.simulator.request import Request
from training.workloads.rows import requests_from_table
from warehouse.ingest import IngestReport, ingest
from warehouse.store import connect_readonly

REPLAYABLE = "status = 'ok' AND prompt_tokens > 0 AND output_tokens > 0"
# Absolute time when the trace has it (so several files of one trace merge on one clock), else the
# file-relative arrival.
_COLUMNS = (
    "request_id, coalesce(epoch_us(arrival_ts) / 1e6, arrival_s) AS arrival_s, prompt_tokens, "
    "output_tokens, task, prefix_hash_ids, prompt_text"
)


def warehouse_requests(
    warehouse: str | os.PathLike[str] | None,
    *,
    where: str = "TRUE",
    params: Sequence[object] = (),
    max_output_tokens: int | None = None,
) -> list[Request]:
    """Replayable rows of ``marts.requests`` matching ``where`` (SQL, with ``?`` params), by arrival.

    Arrival times are rebased to the first selected request. Rows that carry an absolute timestamp
    (``arrival_ts``: Azure, BurstGPT, OTel) are placed on that clock, so several files of one trace
    (e.g. ``source = 'azure'``: code + conversation) merge in true arrival order.
    """
    con = connect_readonly(warehouse)
    try:
        table = con.sql(
            f"SELECT {_COLUMNS} FROM marts.requests WHERE {REPLAYABLE} AND ({where}) ORDER BY 2, request_id",
            params=list(params),
        ).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise ValueError(f"no replayable requests in {warehouse or 'the warehouse'} where {where}")
    return requests_from_table(table, max_output_tokens=max_output_tokens)


def trace_requests(
    paths: Sequence[str | os.PathLike[str]], fmt: str = "auto", *, max_output_tokens: int | None = None
) -> tuple[list[Request], IngestReport]:
    """The replayable requests of trace files in any warehouse format (ingested into a scratch
    warehouse that is deleted afterwards), with the ingest report (rows read / quarantined)."""
    with tempfile.TemporaryDirectory(prefix="loadwise-trace-") as tmp:
        scratch = Path(tmp) / "trace.duckdb"
        report = ingest(paths, warehouse=scratch, fmt=fmt)
        return warehouse_requests(scratch, max_output_tokens=max_output_tokens), report
