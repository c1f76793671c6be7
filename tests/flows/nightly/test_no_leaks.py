"""A failed nightly run keeps no DuckDB connection alive (issue 13: nanobind "leaked instance ...
DuckDBPyConnection" at the end of the test run, and after the one-line error of a failed ``loadwise
run``).

Prefect keeps a failed run's exception for the life of the process; before the fix the frames of
its traceback kept their locals, among them the connection of the step that failed, so the
connection outlived the interpreter. ``nightly_retrain`` now clears the finished frames' locals
before re-raising, and the scenario test binds no connection in its own frame.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest


def _live_connections() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o).__name__ == "DuckDBPyConnection"}


@pytest.mark.prefect
def test_a_failed_nightly_run_keeps_no_duckdb_connection_alive(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from flows.nightly.config import NightlyConfig
    from flows.nightly.flow import nightly_retrain

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Binds against the schema (so the config is valid) but fails on the first real row, inside
    # check-drift's read-only connection: a data-dependent failure no config check can foresee.
    cfg = NightlyConfig(
        synthetic_rows=200, where="CAST(format AS INTEGER) = 1", profile="v100-llama2-7b-paper"
    )
    before = _live_connections()  # (another test's leak is its own test's failure, not this one's)
    with pytest.raises(Exception, match="Conversion Error"):
        nightly_retrain(cfg)
    assert _live_connections() - before == set()


@pytest.mark.prefect
def test_a_refused_warehouse_keeps_no_duckdb_connection_alive(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The check before any step opens the file to see it is whole; its refusal keeps nothing."""
    from flows.nightly.config import NightlyConfig
    from flows.nightly.flow import nightly_retrain
    from warehouse.errors import WarehouseError
    from warehouse.ingest import ingest

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    trace = tmp_path / "t.csv"
    trace.write_text(
        "arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i},{10 + i},5\n" for i in range(50))
    )
    db = tmp_path / "w.duckdb"
    ingest([trace], warehouse=db)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])  # damaged: cut in half
    before = _live_connections()
    with pytest.raises(WarehouseError):
        nightly_retrain(NightlyConfig(warehouse=str(db)))
    assert _live_connections() - before == set()
