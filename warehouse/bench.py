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
"""

from __future__ import annotations

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


def run_ingest_bench(rows: int = 1_000_000, repeat: int = 3, data_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-able dict of seconds, rows/s and ratios."""
    from warehouse.real_traces import real_trace_paths
    from warehouse.settings import shared_data_dir

    with tempfile.TemporaryDirectory(prefix="loadwise-bench-") as tmp:
        root = Path(tmp)
        trace = write_azure_file(root / "AzureLLMInferenceTrace_synthetic.csv", rows, "conv", seed=0)
        file_mb = round(trace.stat().st_size / 1e6, 1)
        literal = "'" + str(trace).replace("'", "''") + "'"

        def read_memory() -> None:
            con = duckdb.connect()
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({literal})")
            con.close()

        counter = iter(range(10**6))

        def read_disk() -> None:
            con = duckdb.connect(str(root / f"baseline-{next(counter)}.duckdb"))
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({literal})")
            con.close()

        t_memory = _best(read_memory, repeat)
        t_disk = _best(read_disk, repeat)

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

        timings = []
        for i in range(repeat):
            target = root / f"wh-{i}.duckdb"
            shutil.copyfile(base, target)
            start = time.perf_counter()
            report = ingest([trace], warehouse=target)
            timings.append(time.perf_counter() - start)
            assert report.ingested == rows, report.summary()
        t_ingest = min(timings)
    return {
        "rows": rows,
        "repeat": repeat,
        "file_mb": file_mb,
        "read_csv_memory": {"seconds": t_memory, "rows_per_s": rows / t_memory},
        "read_csv_disk": {"seconds": t_disk, "rows_per_s": rows / t_disk},
        "ingest": {"seconds": t_ingest, "rows_per_s": rows / t_ingest},
        "ratio_vs_memory": t_memory / t_ingest,
        "ratio_vs_disk": t_disk / t_ingest,
        "azure": azure_result,
    }
