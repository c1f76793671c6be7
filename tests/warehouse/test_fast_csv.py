"""The fast path of the CSV line formats (``warehouse.ingest._stage_fast``, issue 16) against the line path.

The fast path lets DuckDB's parallel CSV reader split the lines and numbers the rows afterwards
(``rowid``, or a positional join when the reader left lines out); the line path numbers every line
with ``row_number() OVER ()`` in one thread and splits it with ``string_split``. Both must give the
same warehouse: the same rows at the same lines with the same values, the same quarantined lines
with the same reasons and verbatim text, the same counts. Each example writes one hostile file
(blank, short, long, space-only, quoted, Unicode-space, out-of-range and backwards lines; LF, CRLF
or mixed endings; a BOM; no final newline), loads it twice, once with the fast path disabled, and
compares everything a reader of the warehouse sees.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from unittest import mock

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warehouse.ingest as ingest_module
from warehouse.ingest import ingest
from warehouse.lines import scan_file
from warehouse.store import apply_schema, connect_readonly

HEADERS = {
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
    "vidur": "arrived_at,num_prefill_tokens,num_decode_tokens",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
}
STAMP_VALUES = {
    "azure": (
        [
            "2023-11-16 18:15:00.0849915",
            "2023-11-16 18:15:01",
            " 2023-11-16 18:15:02.5 ",
            "2023-11-16 18:14:59",
            "\u00a02023-11-16 18:15:03",
            "1999-12-31 23:59:59",
            "x",
            "",
            "nan",
            "infinity",
            '"2023-11-16 18:15:04"',
            "2023-11-16T18:15:05",
        ]
    ),
    "vidur": ["0", "1.5", " 2 ", "1e1", "-1", "nan", "inf", "", "x", "3.25", "5e9", '"4"'],
    "burstgpt": ["0", "1.5", " 2 ", "1e1", "-1", "nan", "", "x", "3.25", "5e9", '"4"'],
}
STAMPS = {fmt: st.sampled_from(values) for fmt, values in STAMP_VALUES.items()}
TOKEN_VALUES = ["1", "12", " 7 ", "12.0", "12.5", "1e3", "0", "-3", "", "x", "20000000", '"5"', "\u20037"]
TOKENS = st.sampled_from(TOKEN_VALUES)
MODELS = ["ChatGPT", " GPT-4 ", ""]
LOG_TYPES = ["Conversation log", "API log", " api LOG ", "", "other"]


@st.composite
def lines(draw: st.DrawFn, fmt: str) -> str:
    """One data line: a row of the format (possibly bad), or a structurally odd line."""
    kind = draw(st.sampled_from(["row", "row", "row", "row", "blank", "spaces", "short", "long"]))
    if kind == "blank":
        return ""
    if kind == "spaces":
        return draw(st.sampled_from([" ", "\t", "  ,  ", "\u00a0"]))
    stamp, prompt, output = draw(STAMPS[fmt]), draw(TOKENS), draw(TOKENS)
    if fmt == "burstgpt":
        model = draw(st.sampled_from(MODELS))
        log = draw(st.sampled_from(LOG_TYPES))
        fields = [stamp, model, prompt, output, "0", log]
    else:
        fields = [stamp, prompt, output]
    if kind == "short":
        fields = fields[:-1]
    if kind == "long":
        fields = [*fields, draw(st.sampled_from(["", "x"]))]
    return ",".join(fields)


@st.composite
def files(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(HEADERS)))
    body = draw(st.lists(lines(fmt), min_size=0, max_size=14))
    ending = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    ends = [("\r\n" if i % 2 else "\n") if ending == "mixed" else ending for i in range(len(body) + 1)]
    text = "".join(line + end for line, end in zip([HEADERS[fmt], *body], ends, strict=True))
    if draw(st.booleans()):
        text = text.rstrip("\r\n") if text.strip("\r\n") else text  # no final newline
    data = text.encode()
    return fmt, (b"\xef\xbb\xbf" + data if draw(st.booleans()) else data)


def _contents(warehouse: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    con = connect_readonly(warehouse)
    try:
        rows = con.execute(
            "SELECT line, request_id, arrival_s, arrival_ts, prompt_tokens, output_tokens, task, model, "
            "status FROM marts.requests ORDER BY line"
        ).fetchall()
        quarantine = con.execute("SELECT line, reason, raw_text FROM raw.quarantine ORDER BY line").fetchall()
        counts = con.execute("SELECT rows_read, ingested, quarantined FROM raw.files").fetchall()
    finally:
        con.close()
    return rows, quarantine, counts


_RUNS = itertools.count()


def _compare(case: tuple[str, bytes], folder: Path) -> None:
    """Load the file with the fast path (spied: taken exactly when ``_fast_csv`` allows it) and with
    the line path only; the two warehouses must read the same."""
    fmt, data = case
    name = {"azure": "AzureLLMInferenceTrace_conv.csv", "vidur": "splitwise_code.csv"}.get(
        fmt, "BurstGPT_1.csv"
    )
    path = folder / name
    path.write_bytes(data)
    taken: list[bool] = []
    real = ingest_module._stage_fast

    def spy(*args: object) -> bool:
        taken.append(real(*args))  # type: ignore[arg-type]
        return taken[-1]

    with mock.patch.object(ingest_module, "_stage_fast", spy):
        fast = ingest([path], warehouse=folder / "fast.duckdb")
    with mock.patch.object(ingest_module, "_stage_fast", return_value=False):
        line_path = ingest([path], warehouse=folder / "lines.duckdb")
    planned = ingest_module.plan([path])[0]
    assert isinstance(planned, ingest_module._Planned)
    if not ingest_module._fast_csv(planned):
        assert taken == [False]
    assert fast.files[0].status == line_path.files[0].status == "loaded"
    assert _contents(folder / "fast.duckdb") == _contents(folder / "lines.duckdb")


SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(case=files())
def test_the_fast_path_loads_what_the_line_path_loads(
    case: tuple[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    _compare(case, tmp_path_factory.mktemp(f"fast{next(_RUNS)}"))


@pytest.mark.slow
@settings(SETTINGS, max_examples=300)
@given(case=files())
def test_the_fast_path_long_fuzz(case: tuple[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> None:
    _compare(case, tmp_path_factory.mktemp(f"fast{next(_RUNS)}"))


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def test_each_fast_path_branch_is_taken(tmp_path: Path) -> None:
    """A clean file is numbered by rowid (a view), a file with blank or odd lines by a positional join
    (a table), a file with mixed line endings takes the line path."""
    head = HEADERS["azure"] + "\n"
    row = "2023-11-16 18:15:0{},10,5"
    cases = {
        "view": head + "".join(row.format(i) + "\n" for i in range(3)),
        "table": head + row.format(1) + "\n\n1,2\n" + row.format(2) + "\n",
        "none": head + row.format(1) + "\r\n" + row.format(2) + "\n",
    }
    seen: dict[str, str] = {}
    real = ingest_module._stage_fast

    def spy(con: duckdb.DuckDBPyConnection, *args: object) -> bool:
        taken = real(con, *args)  # type: ignore[arg-type]
        table = ingest_module._temporary(con, "_staged", "TABLE")
        seen[current] = "none" if not taken else "table" if table else "view"
        return taken

    for current, text in cases.items():
        (tmp_path / current).mkdir()
        path = _write(tmp_path / current / "AzureLLMInferenceTrace_conv.csv", text)
        with mock.patch.object(ingest_module, "_stage_fast", spy):
            ingest([path], warehouse=tmp_path / current / "w.duckdb")
    assert seen == {"view": "view", "table": "table", "none": "none"}


@pytest.mark.parametrize(
    ("data", "lines", "cr", "ends", "count", "one_ending", "comma"),
    [
        (b"h\n1\n", 2, 0, True, 2, True, False),
        (b"h\r\n1\r\n2", 2, 2, False, 3, True, False),
        (b"h\n1\r\n", 2, 1, True, 2, False, False),
        (b"h", 0, 0, False, 1, True, False),
        (b"h\n\n", 2, 0, True, 2, True, False),
        (b"h\n1,2,\n", 2, 0, True, 2, True, True),
        (b"h\r\n1,2,\r\n", 2, 2, True, 2, True, True),
        (b"h\n1,2,", 1, 0, False, 2, True, True),
        (b"h\n1,2, \n,1\n", 3, 0, True, 3, True, False),
    ],
)
def test_scan_counts_lines_endings_and_trailing_commas(
    tmp_path: Path, data: bytes, lines: int, cr: int, ends: bool, count: int, one_ending: bool, comma: bool
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    scan = scan_file(path, csv=True)
    assert (scan.lines, scan.cr, scan.ends_newline, scan.line_count, scan.one_line_ending) == (
        lines, cr, ends, count, one_ending,
    )  # fmt: skip
    assert scan.trailing_comma == comma
    for chunk in (1, 2, 3):  # a ",\r\n" across block borders
        assert scan_file(path, csv=True, chunk=chunk) == scan


def test_a_trailing_comma_takes_the_line_path(tmp_path: Path) -> None:
    """DuckDB's CSV reader reads ``1,2,3,`` as three fields; the line path counts four."""
    path = _write(
        tmp_path / "AzureLLMInferenceTrace_conv.csv", HEADERS["azure"] + "\n2023-11-16 18:15:00,1,1,\n"
    )
    report = ingest([path], warehouse=tmp_path / "w.duckdb")
    assert (report.ingested, report.quarantined) == (0, 1)
    con = connect_readonly(tmp_path / "w.duckdb")
    try:
        assert con.execute("SELECT reason FROM raw.quarantine").fetchall() == [
            ("field_count: expected 3, got 4",)
        ]
    finally:
        con.close()


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_the_fast_path_derives_what_it_does_not_store(fmt: str) -> None:
    """``FAST_DERIVED``: each staged column that ``_fast`` does not store, rebuilt from the ones it
    stores, equals the ``_fields`` macro's own column on every row (every combination of the fuzz
    alphabet's stamps and token counts, the bad ones included)."""
    con = duckdb.connect()
    try:
        apply_schema(con)
        tokens = ", ".join(_sql_list(TOKEN_VALUES))
        if fmt == "burstgpt":
            fields = (
                "SELECT 1::INTEGER AS file_id, NULL::VARCHAR AS file_task, s AS f1, m AS f2, p AS f3, "
                "o AS f4, '0' AS f5, g AS f6 FROM unnest([{s}]) AS a(s), unnest([{m}]) AS b(m), "
                "unnest([{t}]) AS c(p), unnest([{t}]) AS d(o), unnest([{g}]) AS e(g)"
            ).format(
                s=", ".join(_sql_list(STAMP_VALUES[fmt])), m=", ".join(_sql_list(MODELS)), t=tokens,
                g=", ".join(_sql_list(LOG_TYPES)),
            )  # fmt: skip
        else:
            fields = (
                "SELECT 1::INTEGER AS file_id, 'conv'::VARCHAR AS file_task, s AS f1, p AS f2, o AS f3 "
                f"FROM unnest([{', '.join(_sql_list(STAMP_VALUES[fmt]))}]) AS a(s), "
                f"unnest([{tokens}]) AS b(p), unnest([{tokens}]) AS c(o)"
            )
        con.execute(f"CREATE TEMP VIEW _fields AS {fields}")
        derived = ingest_module.FAST_DERIVED[fmt]
        for column, expression in derived.items():
            differ, valued = con.execute(
                f"SELECT count(*) FILTER (WHERE ({expression}) IS DISTINCT FROM {column}), count({column}) "
                f"FROM staging.stg_{fmt}_fields('_fields')"
            ).fetchall()[0]
            assert differ == 0, (fmt, column)
            if not expression.startswith("NULL::"):
                assert valued > 0, (fmt, column)  # not only NULLs compared
    finally:
        con.close()
    assert set(ingest_module.FAST_DERIVED) == set(HEADERS)


def _sql_list(values: list[str]) -> list[str]:
    return ["'" + v.replace("'", "''") + "'" for v in values]
