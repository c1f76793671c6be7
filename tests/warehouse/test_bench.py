"""The ingest benchmark (warehouse/bench.py) measures each big-file figure in its own process and
reports its peak memory next to the time (issue 16: the 10 M-row scale row). No timing assertions."""

from __future__ import annotations

from pathlib import Path

from warehouse.bench import run_ingest_bench


def test_ingest_bench_reports_time_rows_and_peak_memory(tmp_path: Path) -> None:
    result = run_ingest_bench(rows=2000, repeat=1, data_dir=tmp_path)  # no shared data: synthetic warm-up
    assert result["rows"] == 2000
    assert result["azure"] is None
    for key in ("read_csv_memory", "read_csv_disk", "ingest"):
        figure = result[key]
        assert figure["seconds"] > 0
        assert figure["rows_per_s"] == 2000 / figure["seconds"]
        assert figure["peak_rss_mb"] >= figure["rss_start_mb"] > 0
    assert result["ratio_vs_disk"] == result["read_csv_disk"]["seconds"] / result["ingest"]["seconds"]
    assert len(result["load_average"]) == 3
