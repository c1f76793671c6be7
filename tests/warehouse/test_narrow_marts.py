"""The narrow ingest layout (issue 16): the source file is the raw layer of the line formats, trace
rows are narrow tables, ``marts.requests`` is a view presenting the canonical columns as before.

- no on-disk copy of an accepted line is written; a rejected line keeps its text in the quarantine;
- ``marts.requests`` keeps the analysts' columns and types, and a trace row's id is the file's
  ``id_prefix`` || line (the same string the table stored before);
- a warehouse written when ``marts.requests`` was a table keeps its rows on its next write;
- the request-id uniqueness check (counted on integers, not id strings) catches every kind of clash.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tests.warehouse.samples import SAMPLES, empty_warehouse
from warehouse import checks
from warehouse.ingest import content_hash, ingest
from warehouse.store import connect_readonly

CONTRACT = [
    ("request_id", "VARCHAR"), ("source", "VARCHAR"), ("trace_id", "VARCHAR"), ("arrival_s", "DOUBLE"),
    ("prompt_tokens", "BIGINT"), ("output_tokens", "BIGINT"), ("task", "VARCHAR"), ("model", "VARCHAR"),
    ("prompt_text", "VARCHAR"), ("prefix_hash_ids", "BIGINT[]"), ("status", "VARCHAR"),
    ("sample_index", "INTEGER"), ("split", "VARCHAR"), ("arrival_ts", "TIMESTAMP"), ("format", "VARCHAR"),
    ("file_id", "INTEGER"), ("line", "BIGINT"),
]  # fmt: skip
"""The columns of ``marts.requests`` when it was a table (schema.sql before issue 16), in order."""


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> tuple:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return row


def test_requests_is_a_view_with_the_contract_columns_and_no_raw_copy(tmp_path: Path, wh: Path) -> None:
    azure = SAMPLES["azure"].write(tmp_path)
    report = ingest([s.write(tmp_path / n) for n, s in SAMPLES.items()], warehouse=wh)
    assert report.quarantined > 0
    con = connect_readonly(wh)
    try:
        columns = con.execute("DESCRIBE marts.requests").fetchall()
        assert [(c[0], c[1]) for c in columns] == CONTRACT
        assert _one(
            con, "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'marts' AND view_name = 'requests'"
        )
        # No on-disk copy of the lines of a line format; the rejected ones keep their text.
        for fmt in ("azure", "burstgpt", "vidur", "mooncake"):
            assert _one(con, f"SELECT count(*) FROM raw.{fmt}") == (0,)
        assert (
            _one(
                con, "SELECT count(*) FROM raw.quarantine WHERE raw_text IS NULL AND reason <> 'empty_line'"
            )[0]
            <= _one(con, "SELECT count(*) FROM raw.quarantine WHERE reason LIKE 'line_too_long%'")[0]
        )
        # The trace rows are narrow; their ids are the strings the table held before.
        widths = dict(
            con.execute(
                "SELECT table_name, count(*) FROM duckdb_columns() "
                "WHERE schema_name = 'marts' AND table_name LIKE 'trace_requests%' GROUP BY 1"
            ).fetchall()
        )
        assert widths == {"trace_requests": 6, "trace_requests_timed": 5, "trace_requests_labelled": 9}
        prefix = f"azure:{content_hash(azure)[:16]}:"
        assert _one(
            con,
            "SELECT count(*), count(*) FILTER (WHERE request_id <> ? || line) FROM marts.requests "
            "WHERE format = 'azure'",
            [prefix],
        ) == (SAMPLES["azure"].ingested, 0)
        assert _one(con, "SELECT count(*) FROM marts.requests") == (report.ingested,)
        assert checks.failed(checks.run_checks(con)) == []
    finally:
        con.close()


OLD_REQUESTS = """
CREATE TABLE marts.requests (
    request_id VARCHAR, source VARCHAR, trace_id VARCHAR, arrival_s DOUBLE, prompt_tokens BIGINT,
    output_tokens BIGINT, task VARCHAR, model VARCHAR, prompt_text VARCHAR, prefix_hash_ids BIGINT[],
    status VARCHAR, sample_index INTEGER, split VARCHAR, arrival_ts TIMESTAMP, format VARCHAR,
    file_id INTEGER, line BIGINT
)
"""


def test_a_warehouse_with_the_old_requests_table_keeps_its_rows(tmp_path: Path, wh: Path) -> None:
    """Before issue 16 ``marts.requests`` was a table: its next write session makes it
    ``marts.requests_stored`` under the view, every row as it was; loads and checks go on."""
    empty_warehouse(wh)
    rw = duckdb.connect(str(wh))
    rw.execute(
        "DROP VIEW marts.requests CASCADE; DROP TABLE marts.requests_stored; DROP TABLE raw.schema_version"
    )
    rw.execute(OLD_REQUESTS)
    rw.execute(
        "INSERT INTO marts.requests VALUES ('azure:0123456789abcdef:2', 'azure', 'azure/old/0123', "
        "1.5, 10, 20, 'conv', NULL, NULL, NULL, 'ok', NULL, NULL, TIMESTAMP '2023-11-16 18:00:00', "
        "'azure', 1, 2)"
    )
    rw.execute(
        "INSERT INTO raw.files (file_id, content_hash, path, format, source, task, trace_id, load_id, "
        "ingested_at, rows_read, ingested, quarantined) VALUES (1, 'old', '/old.csv', 'azure', 'azure', "
        "'conv', 'azure/old/0123', 'l', now(), 1, 1, 0)"
    )
    rw.close()
    ingest([SAMPLES["vidur"].write(tmp_path)], warehouse=wh)
    con = connect_readonly(wh)
    try:
        assert con.execute("SELECT * FROM marts.requests WHERE file_id = 1").fetchall() == [
            ("azure:0123456789abcdef:2", "azure", "azure/old/0123", 1.5, 10, 20, "conv", None, None, None,
             "ok", None, None, datetime(2023, 11, 16, 18), "azure", 1, 2)
        ]  # fmt: skip
        assert _one(con, "SELECT count(*) FROM marts.requests") == (1 + SAMPLES["vidur"].ingested,)
        assert checks.failed(checks.run_checks(con)) == []
    finally:
        con.close()


CLASHES = {
    "a trace line twice": "INSERT INTO marts.trace_requests SELECT * FROM marts.trace_requests LIMIT 1",
    "a timed trace line twice": (
        "INSERT INTO marts.trace_requests_timed SELECT * FROM marts.trace_requests_timed LIMIT 1"
    ),
    "a line in two trace tables": (
        "INSERT INTO marts.trace_requests SELECT file_id, line, 0.0, prompt_tokens, output_tokens, "
        "arrival_ts FROM marts.trace_requests_timed LIMIT 1"
    ),
    "a stored id twice": "INSERT INTO marts.requests_stored SELECT * FROM marts.requests_stored LIMIT 1",
    "a stored id equal to a trace row's": (
        "INSERT INTO marts.requests_stored SELECT * REPLACE (request_id || '' AS request_id, 9 AS file_id) "
        "FROM marts.requests WHERE format = 'azure' LIMIT 1"
    ),
    "two files with one id prefix": (
        "UPDATE raw.files SET id_prefix = (SELECT id_prefix FROM raw.files WHERE format = 'azure') "
        "WHERE format = 'vidur'"
    ),
}


@pytest.mark.parametrize("clash", list(CLASHES))
def test_the_request_id_check_catches_every_clash(tmp_path: Path, wh: Path, clash: str) -> None:
    """Each hand edit makes two rows of the view share an id (the generic count says so too); the
    check, counted on (file_id, line), the prefixes and the stored ids, finds it."""
    ingest([SAMPLES[n].write(tmp_path) for n in ("azure", "vidur", "canonical")], warehouse=wh)
    name = "marts.requests.request_id unique"
    con = duckdb.connect(str(wh))  # a hand edit of the published file (no other process is using it)
    try:
        assert {r.name: r.offending for r in checks.run_checks(con)}[name] == 0
        con.execute(CLASHES[clash])
        generic = _one(con, "SELECT count(*) - count(DISTINCT request_id) FROM marts.requests")[0]
        found = {r.name: r.offending for r in checks.run_checks(con)}[name]
    finally:
        con.close()
    assert generic > 0
    assert found > 0


@pytest.mark.parametrize("table", checks.TRACE_TABLES)
def test_the_order_proof_holds_after_loads_and_never_fails_a_check_alone(
    tmp_path: Path, wh: Path, table: str
) -> None:
    """``checks.TRACE_PAIRS_PROVED_UNIQUE`` is 0 on warehouses loads made (files of every trace table,
    over two loads), so the (file_id, line) hash is skipped; a row out of block order but unique (in
    each trace table) breaks the proof, and the exact count then passes the check."""
    ingest([SAMPLES[n].write(tmp_path / "a") for n in ("azure", "burstgpt", "mooncake")], warehouse=wh)
    ingest([SAMPLES[n].write(tmp_path / "b") for n in ("vidur", "canonical")], warehouse=wh)
    con = duckdb.connect(str(wh))
    try:
        assert _one(con, checks.TRACE_PAIRS_PROVED_UNIQUE) == (0,)
        assert _one(con, f"SELECT count(*) FROM {table}")[0] > 0
        con.execute(
            f"INSERT INTO {table} SELECT * REPLACE (line - 1000000 AS line) FROM {table} "
            f"WHERE file_id = (SELECT min(file_id) FROM {table}) LIMIT 1"
        )
        assert _one(con, checks.TRACE_PAIRS_PROVED_UNIQUE)[0] > 0
        found = {r.name: r.offending for r in checks.run_checks(con)}
        assert found[checks.REQUEST_ID_UNIQUE] == 0
    finally:
        con.close()


HAND_EDITS = {
    "a file's id prefix erased": "UPDATE raw.files SET id_prefix = NULL WHERE format = 'azure'",
    "a stored id erased": (
        "UPDATE marts.requests_stored SET request_id = NULL "
        "WHERE line = (SELECT min(line) FROM marts.requests_stored)"
    ),
    "a trace row deleted": (
        "DELETE FROM marts.trace_requests WHERE line = (SELECT max(line) FROM marts.trace_requests)"
    ),
    "a timed trace row deleted": (
        "DELETE FROM marts.trace_requests_timed "
        "WHERE line = (SELECT max(line) FROM marts.trace_requests_timed)"
    ),
    "a timed file's arrival origin erased": (
        "UPDATE raw.files SET arrival_origin_s = NULL WHERE format = 'azure'"
    ),
    "a file's registry row removed": "DELETE FROM raw.files WHERE format = 'vidur'",
    "a second registry row under one file_id": (
        "INSERT INTO raw.files SELECT * REPLACE (content_hash || 'x' AS content_hash, 0 AS rows_read, "
        "0 AS ingested, 0 AS quarantined, id_prefix || 'x' AS id_prefix) "
        "FROM raw.files WHERE format = 'azure'"
    ),
}


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_the_cheap_checks_catch_what_the_full_checks_catch(tmp_path: Path, wh: Path, edit: str) -> None:
    """Every load runs the cheap forms of the request-id not-null and row-count checks (counted on the
    tables under the view, not the view's id strings); ``run_checks(full=True)`` evaluates the view
    itself. On a clean warehouse both pass; after each hand edit both refuse it, and the not-null
    counts agree (a second registry row under one file_id: the full count check sees the view's extra
    rows, the cheap one the duplicate file_id)."""
    ingest([SAMPLES[n].write(tmp_path) for n in ("azure", "vidur", "canonical")], warehouse=wh)
    con = duckdb.connect(str(wh))  # a hand edit of the published file (no other process is using it)
    try:
        assert checks.failed(checks.run_checks(con)) == checks.failed(checks.run_checks(con, full=True)) == []
        con.execute(HAND_EDITS[edit])
        cheap = {r.name: r.offending for r in checks.run_checks(con)}
        full = {r.name: r.offending for r in checks.run_checks(con, full=True)}
    finally:
        con.close()
    assert any(cheap.values()), cheap
    assert any(full.values()), full
    assert cheap[checks.REQUEST_ID_NOT_NULL] == full[checks.REQUEST_ID_NOT_NULL]
    if edit == "a second registry row under one file_id":
        assert cheap["raw.files.file_id unique"] > 0


def test_a_timed_trace_row_s_arrival_is_the_load_s_expression_bit_for_bit(tmp_path: Path, wh: Path) -> None:
    """Azure rows store ``arrival_ts`` only: ``marts.requests.arrival_s`` is derived from it and the
    file's ``raw.files.arrival_origin_s`` (its first accepted arrival). It equals, bit for bit, what
    the load stored before (the staged ``epoch_us(ts) / 1e6`` less that origin), recomputed here in
    Python from the view's own timestamps; the origin is the first row's."""
    from warehouse.synthetic import write_azure_file

    path = write_azure_file(tmp_path / "AzureLLMInferenceTrace_conv.csv", 2_000, "conv", seed=3)
    ingest([path], warehouse=wh)
    con = connect_readonly(wh)
    try:
        rows = con.execute(
            "SELECT arrival_ts, arrival_s FROM marts.requests WHERE format = 'azure' ORDER BY line"
        ).fetchall()
        (origin,) = _one(con, "SELECT arrival_origin_s FROM raw.files WHERE format = 'azure'")
        stored = _one(con, "SELECT count(*) FROM marts.trace_requests_timed")
    finally:
        con.close()
    assert stored == (2_000,)
    assert len(rows) == 2_000

    def epoch_us(ts: datetime) -> int:
        return (ts - datetime(1970, 1, 1)) // (datetime(1970, 1, 1, 0, 0, 0, 1) - datetime(1970, 1, 1))

    assert origin == epoch_us(rows[0][0]) / 1e6
    expected = [epoch_us(ts) / 1e6 - origin for ts, _ in rows]
    assert [s for _, s in rows] == expected
    assert any(s != round(s, 3) for s in expected)  # sub-millisecond arrivals: a real comparison
