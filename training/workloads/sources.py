"""Requests and rows to replay, read through the warehouse: from a published warehouse, or from trace files.

Who calls this: the workloads (``catalog``: ``main``, ``azure``, ``--trace FILE --format F``), the
impact estimator's Azure windows (``training.impact.fit``) and the retrain pipeline's evaluation
step, once per run. Every trace format the warehouse reads can be replayed, and it is read by the same
code that ingests it: malformed rows are quarantined with their reason (and counted in the returned
``IngestReport``), never silently dropped. Failed requests (BurstGPT rows with 0 response tokens,
``status = 'failed'``) and rows with no output tokens are not replayed: a replay needs at least one
prompt and one output token. No other module reads a trace file itself
(``tests/training/workloads/test_sources.py::test_only_the_warehouse_reads_trace_files``).

Trace files are ingested into a scratch warehouse (a temporary DuckDB file of this process), cached
per process by the files' paths, format and content hashes (``scratch_warehouse``): the ``main``
workload's first build in a process ingests ~680k CASTILLO rows (3-4 s on 2 cores), later builds
take ~0.2 s (hash, query, pools). A process killed with SIGKILL leaves its folder in the temp dir.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from training.simulator.request import Request
from training.workloads.rows import requests_from_table
from warehouse.ingest import IngestReport, content_hash, expand_paths, ingest
from warehouse.store import connect_readonly

REPLAYABLE = "status = 'ok' AND prompt_tokens > 0 AND output_tokens > 0"
# Absolute time when the trace has it (so several files of one trace merge on one clock), else the
# file-relative arrival.
_COLUMNS = (
    "request_id, coalesce(epoch_us(arrival_ts) / 1e6, arrival_s) AS arrival_s, prompt_tokens, "
    "output_tokens, task, prefix_hash_ids, prompt_text"
)

SCRATCH_CACHE_BYTES = 1 << 30
"""Disk the scratch warehouses of a process may hold (the least recently used are deleted first; the
newest is kept whatever its size). ``main``'s prompt sets take ~50 MB, a small trace file ~2 MB."""


def replayable_rows(
    warehouse: str | os.PathLike[str] | None,
    columns: str,
    *,
    where: str = "TRUE",
    params: Sequence[object] = (),
    order_by: str = "1",
) -> pa.Table:
    """``SELECT columns FROM marts.requests`` over the replayable rows matching ``where`` (SQL, with
    ``?`` params), ``ORDER BY order_by``, read-only. Raises ``ValueError`` when no row matches."""
    con = connect_readonly(warehouse)
    try:
        table = con.sql(
            f"SELECT {columns} FROM marts.requests WHERE {REPLAYABLE} AND ({where}) ORDER BY {order_by}",
            params=list(params),
        ).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise ValueError(f"no replayable requests in {warehouse or 'the warehouse'} where {where}")
    return table


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
    table = replayable_rows(warehouse, _COLUMNS, where=where, params=params, order_by="2, request_id")
    return requests_from_table(table, max_output_tokens=max_output_tokens)


class _ScratchCache:
    """Scratch warehouses of this process, keyed by (format, files' paths and content hashes).

    A forked child (a process pool) starts its own cache: it never deletes its parent's files.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._dir: Path | None = None
        self._made = 0
        self._entries: OrderedDict[tuple[object, ...], tuple[Path, IngestReport]] = OrderedDict()
        self._bytes: dict[Path, int] = {}

    def get(self, paths: Sequence[str | os.PathLike[str]], fmt: str) -> tuple[Path, IngestReport]:
        files = expand_paths(paths)
        key = (fmt, *((str(p), content_hash(p)) for p in files))
        with self._lock:
            if self._pid != os.getpid() or self._dir is None:
                self._pid = os.getpid()
                self._dir = Path(tempfile.mkdtemp(prefix="loadwise-trace-"))
                atexit.register(_remove_folder, self._dir, self._pid)
                self._entries = OrderedDict()
                self._bytes = {}
                self._made = 0
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            self._made += 1
            scratch = self._dir / f"trace-{self._made}.duckdb"
            try:
                report = ingest(files, warehouse=scratch, fmt=fmt)
            except BaseException:
                _remove(scratch)
                raise
            self._entries[key] = (scratch, report)
            self._bytes[scratch] = sum(p.stat().st_size for p in self._dir.glob(f"{scratch.name}*"))
            while len(self._entries) > 1 and sum(self._bytes.values()) > SCRATCH_CACHE_BYTES:
                _, (old, _) = self._entries.popitem(last=False)
                del self._bytes[old]
                _remove(old)
            return scratch, report

    def clear(self) -> None:
        """Forget every scratch warehouse of this process and delete its folder."""
        with self._lock:
            if self._pid == os.getpid() and self._dir is not None:
                _remove_folder(self._dir, self._pid)
            self._dir = None
            self._entries = OrderedDict()
            self._bytes = {}


def _remove(path: Path) -> None:
    for p in path.parent.glob(f"{path.name}*"):  # the DuckDB file, its WAL, the load lock
        p.unlink(missing_ok=True)


def _remove_folder(folder: Path, owner: int) -> None:
    """At exit of the process that made ``folder`` (never of a forked child that inherited it)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


_SCRATCH = _ScratchCache()


def scratch_warehouse(
    paths: Sequence[str | os.PathLike[str]], fmt: str = "auto"
) -> tuple[Path, IngestReport]:
    """A warehouse holding trace files (files or folders) ingested by the warehouse's own reader
    (``fmt`` forced, or detected per file), and its ingest report (rows read / quarantined).

    Cached per process: the same files (path and content SHA-256) in the same format reuse the
    scratch warehouse (callers only read it: ``replayable_rows`` opens it read-only); changed bytes
    are ingested afresh. The files live in a temporary folder deleted at exit, within
    ``SCRATCH_CACHE_BYTES``.
    Raises what ``warehouse.ingest.ingest`` raises (a missing path, no loadable file, ...).
    """
    return _SCRATCH.get(paths, fmt)


def clear_scratch_cache() -> None:
    """Drop (and delete) every cached scratch warehouse of this process."""
    _SCRATCH.clear()


def trace_rows(
    paths: Sequence[str | os.PathLike[str]],
    fmt: str,
    columns: str,
    *,
    where: str = "TRUE",
    params: Sequence[object] = (),
    order_by: str = "1",
) -> tuple[pa.Table, IngestReport]:
    """Replayable rows of trace files (``replayable_rows`` over their ``scratch_warehouse``): the
    canonical columns of ``marts.requests`` (docs/warehouse.md), with the ingest report."""
    scratch, report = scratch_warehouse(paths, fmt)
    return replayable_rows(scratch, columns, where=where, params=params, order_by=order_by), report


def trace_requests(
    paths: Sequence[str | os.PathLike[str]], fmt: str = "auto", *, max_output_tokens: int | None = None
) -> tuple[list[Request], IngestReport]:
    """The replayable requests of trace files in any warehouse format (``warehouse_requests`` over
    their ``scratch_warehouse``), with the ingest report (rows read / quarantined)."""
    scratch, report = scratch_warehouse(paths, fmt)
    return warehouse_requests(scratch, max_output_tokens=max_output_tokens), report
