"""The ingest benchmark (``loadwise bench ingest``): full ingest rows/s next to DuckDB's own read_csv.

Called by the CLI. In a temporary folder it writes a synthetic Azure-schema CSV of ``rows`` rows,
then measures, in the same process and run:

- ``read_csv (memory)``: ``CREATE TABLE AS SELECT * FROM read_csv(file)`` into an in-memory DuckDB
  (typed, auto-detected): the raw parse rate;
- ``read_csv (disk)``: the same into a fresh on-disk DuckDB file: the raw load rate;
- ``ingest azure``: the two real Azure traces into a new warehouse (when the shared data has them);
- ``ingest``: ``warehouse.ingest.ingest`` of the big file into (a copy of) that warehouse: hash,
  copy-on-write session, raw copy, staging with every row check, quarantine, marts table, data
  checks over the whole table, checkpoint and atomic publish.

Each figure is the best of ``repeat`` runs (the machine is shared). Ratios are ingest / baseline.
Each of the three big-file figures runs in its own fresh (spawned) Python process, which also
reports its peak resident memory (``ru_maxrss``: the process's high-water mark, imports included;
``rss_start_mb`` is that mark before the measured work), so ``--rows 10000000`` gives the cost of
growth in time and in memory. The warehouse the big file is loaded into holds the real Azure traces.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from warehouse.ingest import ingest
from warehouse.synthetic import write_azure_file


def _best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _rss_mb() -> float:
    """This process's peak resident memory so far [MB] (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _measure(kind: str, root: str, trace: str, rows: int, repeat: int, conn: Any) -> None:
    """In a spawned child: the best of ``repeat`` runs of one figure; sends (seconds, peak MB, start MB)."""
    base, literal = Path(root), "'" + trace.replace("'", "''") + "'"
    counter = iter(range(10**6))
    start_mb = _rss_mb()

    def read_memory() -> None:
        con = duckdb.connect()
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({literal})")
        con.close()

    def read_disk() -> None:
        target = base / f"baseline-{next(counter)}.duckdb"
        con = duckdb.connect(str(target))
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({literal})")
        con.close()
        target.unlink()

    timings = []
    if kind == "ingest":
        for i in range(repeat):
            target = base / f"wh-{i}.duckdb"
            shutil.copyfile(base / "base.duckdb", target)
            begin = time.perf_counter()
            report = ingest([Path(trace)], warehouse=target)
            timings.append(time.perf_counter() - begin)
            assert report.ingested == rows, report.summary()
            target.unlink()
        seconds = min(timings)
    else:
        seconds = _best(read_memory if kind == "read_memory" else read_disk, repeat)
    conn.send((seconds, _rss_mb(), start_mb))
    conn.close()


def _in_child(kind: str, root: Path, trace: Path, rows: int, repeat: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(kind, str(root), str(trace), rows, repeat, child))
    proc.start()
    child.close()
    try:
        seconds, peak_mb, start_mb = parent.recv()
    except EOFError:  # the child died (its traceback is on stderr)
        proc.join()
        message = f"ingest benchmark: the {kind} measurement failed (exit {proc.exitcode})"
        raise RuntimeError(message) from None
    proc.join()
    return {
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": peak_mb,
        "rss_start_mb": start_mb,
    }


def run_ingest_bench(rows: int = 1_000_000, repeat: int = 3, data_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-able dict of seconds, rows/s, peak memory and ratios."""
    from warehouse.real_traces import real_trace_paths
    from warehouse.settings import shared_data_dir

    with tempfile.TemporaryDirectory(prefix="loadwise-bench-") as tmp:
        root = Path(tmp)
        trace = write_azure_file(root / "AzureLLMInferenceTrace_synthetic.csv", rows, "conv", seed=0)
        file_mb = round(trace.stat().st_size / 1e6, 1)

        # The warehouse the big file is loaded into already holds the real Azure traces (or, without
        # the shared data, a small synthetic trace): an incremental load, schema in place.
        azure = [p for p in real_trace_paths(data_dir or shared_data_dir()) if p.suffix == ".csv"]
        base = root / "base.duckdb"
        start = time.perf_counter()
        warmup = ingest(azure or [write_azure_file(root / "warmup_conv.csv", 1000, seed=1)], warehouse=base)
        t_azure = time.perf_counter() - start
        azure_result = (
            {"files": [p.name for p in azure], "rows": warmup.ingested, "seconds": t_azure,
             "rows_per_s": warmup.ingested / t_azure}
            if azure else None
        )  # fmt: skip
        memory = _in_child("read_memory", root, trace, rows, repeat)
        disk = _in_child("read_disk", root, trace, rows, repeat)
        loaded = _in_child("ingest", root, trace, rows, repeat)
    return {
        "rows": rows,
        "repeat": repeat,
        "file_mb": file_mb,
        "read_csv_memory": memory,
        "read_csv_disk": disk,
        "ingest": loaded,
        "ratio_vs_memory": memory["seconds"] / loaded["seconds"],
        "ratio_vs_disk": disk["seconds"] / loaded["seconds"],
        "azure": azure_result,
        "load_average": os.getloadavg(),
    }
