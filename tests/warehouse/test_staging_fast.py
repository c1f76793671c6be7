"""The staging fast paths give the plain forms' results, and line numbers hold on a parallel read.

``staging.is_blank`` / ``try_timestamp`` / ``try_double`` (warehouse/sql/staging.sql) avoid calling
``trim`` on every line; these tests compare them with ``x IS NULL OR trim(x) = ''`` and
``TRY_CAST(trim(x) AS ...)`` on edge cases. The last test ingests a file big enough to be scanned
in several chunks by several threads and checks every line number, request id and quarantined line.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pytest

from tests.warehouse.samples import SAMPLES
from warehouse.ingest import LINE_FORMAT_NULL_COLUMNS, LINE_FORMATS, content_hash, ingest
from warehouse.store import apply_schema, connect_readonly

# Characters trim() removes (ASCII and Unicode spaces) next to ones it keeps (controls, printable,
# zero-width, BOM, DEL), so that every branch of the fast paths is exercised.
CHARS = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x01", "\x7f", "\u00a0", "\u2003", "\u3000", "\u200b",
         "\ufeff", "!", "~", "a", "1", "é"]  # fmt: skip


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    apply_schema(connection)
    return connection


def test_is_blank_is_trim_equals_empty(con: duckdb.DuckDBPyConnection) -> None:
    strings = ["".join(p) for n in range(4) for p in itertools.product(CHARS, repeat=n)]
    con.execute("CREATE TABLE s AS SELECT unnest(?::VARCHAR[]) AS x UNION ALL SELECT NULL", [strings])
    differ = con.execute(
        "SELECT count(*) FROM s WHERE staging.is_blank(x) IS DISTINCT FROM (x IS NULL OR trim(x) = '')"
    ).fetchone()
    assert differ == (0,)
    assert con.execute("SELECT count(*) FILTER (WHERE staging.is_blank(x)) FROM s").fetchone()[0] > 10  # type: ignore[index]


def test_to_int_equals_the_modulo_form(con: duckdb.DuckDBPyConnection) -> None:
    """``staging.to_int`` tests trunc(d) = d, not d % 1 = 0 (issue 16: fmod was ~40 % of the macro)."""
    values = [
        "12", " 12 ", "12.0", "12.5", "-12.5", "1e3", "1.5e1", "-0", "0", "nan", "NaN", "inf", "-inf",
        "1e400",
        "-1e400", "x", "", " ", "+5", "0x10", "1_000", "12.", ".5", "0.99999999999999999999", "4.5e15",
        "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e19",
        "\u00a012", "12\u3000",
    ]  # fmt: skip
    con.execute("CREATE TABLE n AS SELECT unnest(?::VARCHAR[]) AS x UNION ALL SELECT NULL", [values])
    differ = con.execute(
        "SELECT list(x) FROM n WHERE staging.to_int(x) IS DISTINCT FROM "
        "CASE WHEN TRY_CAST(x AS DOUBLE) % 1 = 0 THEN TRY_CAST(x AS BIGINT) END"
    ).fetchone()
    assert differ == (None,)
    assert con.execute("SELECT count(staging.to_int(x)) FROM n").fetchone() == (15,)  # the whole numbers


def test_try_casts_equal_the_trimmed_casts(con: duckdb.DuckDBPyConnection) -> None:
    values = [
        "2023-11-16 18:15:00.1234567", " 2023-11-16 18:15:00.1234567 ", "\u00a02023-11-16 18:15:00.1",
        "2023-11-16 18:15:00\u3000", "2023-11-16T18:15:00", "2023-11-16 18:15:00+00", "\t2023-11-16",
        "2023-11-16 18:15:00\t", "2023-02-30 00:00:00", "", " ", "x", "12", " 12 ", "\u200912.5\u2009",
        "1e3", "-0", "nan", "inf", " -inf", "1_000", "0x10", "+5", "12.", ".5", "1e400", "\r12",
    ]  # fmt: skip
    padded = [p + v + q for v in values for p in ("", " ", "\u00a0") for q in ("", " ", "\u3000")]
    con.execute("CREATE TABLE v AS SELECT unnest(?::VARCHAR[]) AS x UNION ALL SELECT NULL", [padded])
    differ = con.execute(
        "SELECT count(*) FROM v WHERE "
        "staging.try_timestamp(x) IS DISTINCT FROM TRY_CAST(trim(x) AS TIMESTAMP) OR "
        "(staging.try_double(x) IS DISTINCT FROM TRY_CAST(trim(x) AS DOUBLE) "
        " AND NOT (isnan(staging.try_double(x)) AND isnan(TRY_CAST(trim(x) AS DOUBLE))))"
    ).fetchone()
    assert differ == (0,)


def _big_azure(path: Path, rows: int) -> tuple[dict[int, str], dict[int, str]]:
    """An Azure CSV whose prompt tokens equal the line number; returns (bad line -> reason, line -> text)."""
    bad = {
        1_000: ("", "empty_line"),
        77_777: ("   ", "empty_line"),
        150_001: ("2023-11-16 17:00:00.0000000,5", "field_count: expected 3, got 2"),
        250_000: ("not a time,5,5", "bad_timestamp"),
        399_999: ("2023-11-16 18:00:00.0000000,7,7", "time_backwards"),
    }
    texts: dict[int, str] = {}
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for line in range(2, rows + 2):
            if line in bad:
                text = bad[line][0]
            else:
                # Lines of varying length (padding in the fraction), so chunk borders fall mid-line.
                micros = line * 10
                text = (
                    f"2023-11-16 {18 + micros // 3_600_000_000:02d}:"
                    f"{micros // 60_000_000 % 60:02d}:{micros // 1_000_000 % 60:02d}."
                    f"{micros % 1_000_000:06d}{line % 10},{line},{1 + line % 97}"
                )
            texts[line] = text
            handle.write(text + ("\r\n" if line % 3 == 0 else "\n"))
    return {line: reason for line, (_, reason) in bad.items()}, texts


def test_line_numbers_on_a_large_parallel_read(tmp_path: Path, wh: Path) -> None:
    rows = 600_000  # ~23 MB: DuckDB plans one CSV scan thread per ~8 MB, so every core reads a part
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    bad, texts = _big_azure(path, rows)
    assert path.stat().st_size > 20e6
    report = ingest([path], warehouse=wh)
    assert (report.rows_read, report.ingested, report.quarantined) == (rows, rows - len(bad), len(bad))
    prefix = f"azure:{content_hash(path)[:16]}:"
    con = connect_readonly(wh)
    try:
        quarantined = con.execute(
            "SELECT line, reason, raw_text FROM raw.quarantine ORDER BY line"
        ).fetchall()
        assert [(line, reason) for line, reason, _ in quarantined] == sorted(bad.items())
        assert all((text or "") == texts[line] for line, _, text in quarantined)
        wrong = con.execute(
            "SELECT count(*) FILTER (WHERE prompt_tokens <> line), "
            "count(*) FILTER (WHERE request_id <> ? || line), count(DISTINCT line), min(line), max(line) "
            "FROM marts.requests",
            [prefix],
        ).fetchone()
        assert wrong == (0, 0, rows - len(bad), 2, rows + 1)
        # The source file is the raw layer: no copy of its accepted lines is written (issue 16).
        assert con.execute("SELECT count(*) FROM raw.azure").fetchone() == (0,)
    finally:
        con.close()


def test_line_format_views_leave_the_skipped_columns_null(tmp_path: Path, wh: Path) -> None:
    """The load does not stage LINE_FORMAT_NULL_COLUMNS of line formats: their staging macros (over
    the files' lines, as the load passes them) must give NULL."""
    paths = [s.write(tmp_path / name) for name, s in SAMPLES.items() if s.format in LINE_FORMATS]
    assert {s.format for s in SAMPLES.values() if s.format in LINE_FORMATS} == set(LINE_FORMATS)
    ingest(paths, warehouse=wh)
    con = connect_readonly(wh)
    try:
        any_set = "coalesce(" + ", ".join(f"{c}::VARCHAR" for c in LINE_FORMAT_NULL_COLUMNS) + ")"
        for fmt in LINE_FORMATS:
            (file_id, path) = con.execute(
                "SELECT file_id, path FROM raw.files WHERE format = ?", [fmt]
            ).fetchone()
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            con.execute("CREATE OR REPLACE TEMP TABLE _t (file_id INTEGER, line BIGINT, text VARCHAR)")
            con.executemany(
                "INSERT INTO _t VALUES (?, ?, ?)", [(file_id, n, t) for n, t in enumerate(lines, 1)]
            )
            # The lines with their file's constants, in line order (as ingest._open_lines gives them).
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _l AS SELECT t.*, NULL::VARCHAR AS parse_error, f.field_pos, "
                "f.n_fields, f.task FROM _t AS t JOIN raw.files AS f USING (file_id) ORDER BY line"
            )
            rows, non_null = con.execute(
                f"SELECT count(*), count({any_set}) FROM staging.stg_{fmt}_lines('_l')"
            ).fetchone()  # type: ignore[misc]
            assert rows > 0, fmt
            assert non_null == 0, fmt
    finally:
        con.close()
