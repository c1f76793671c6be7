"""Parquet export partitioned by source and day, and reading it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.warehouse import samples
from warehouse.ingest import ingest
from warehouse.parquet import export_partitioned, read_partitioned
from warehouse.store import connect_readonly


def test_export_round_trips_every_row_with_day_partitions(wh: Path, tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    ingest([samples.azure(d), samples.castillo(d)], warehouse=wh)
    root = tmp_path / "lake"
    counts = export_partitioned(root, wh)
    con = connect_readonly(wh)
    try:
        n, ids = con.execute(
            "SELECT count(*), list(request_id ORDER BY request_id) FROM marts.requests"
        ).fetchall()[0]
    finally:
        con.close()
    assert counts == {"requests": n}
    rel = read_partitioned(root)
    assert rel.aggregate("count(*)").fetchall()[0][0] == n
    assert sorted(r[0] for r in rel.select("request_id").fetchall()) == sorted(ids)
    folders = {p.relative_to(root / "requests").parts[:2] for p in (root / "requests").rglob("*.parquet")}
    assert ("source=castillo", "day=undated") in folders
    assert any(src == "source=azure" and day.startswith("day=20") for src, day in folders)
    # re-export is idempotent (partitions overwritten, not duplicated)
    export_partitioned(root, wh)
    assert read_partitioned(root).aggregate("count(*)").fetchall()[0][0] == n


def test_reading_an_empty_root_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="export first"):
        read_partitioned(tmp_path)


def test_unknown_tables_are_refused(wh: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown table"):
        export_partitioned(tmp_path, wh, tables=("nope",))
