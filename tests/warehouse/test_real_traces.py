"""The real public trace files (warehouse/real_traces.py): which files under the data folder are ingested."""

from __future__ import annotations

from pathlib import Path

from warehouse.real_traces import REAL_TRACES, real_trace_paths


def test_real_trace_catalog(tmp_path: Path) -> None:
    assert real_trace_paths(tmp_path / "absent") == []
    (tmp_path / "castillo").mkdir()
    (tmp_path / "castillo" / "castillo_lengths.parquet").write_bytes(b"x")
    assert real_trace_paths(tmp_path) == [tmp_path / "castillo" / "castillo_lengths.parquet"]
    assert len(REAL_TRACES) == 7
