"""Property tests of the line readers on random, malformed input: no crash, every line accounted for."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warehouse.ingest import ingest
from warehouse.store import connect_readonly

# Text without line breaks or control characters (DuckDB and Python agree on line boundaries).
JUNK = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\r\n"),
    max_size=40,
)
TIMESTAMP = st.datetimes().map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f") + "0")
INT = st.integers(min_value=-5, max_value=10_000).map(str)
AZURE_LINE = st.one_of(
    st.tuples(TIMESTAMP, INT, INT).map(",".join),
    st.lists(st.one_of(INT, JUNK, TIMESTAMP), max_size=5).map(",".join),
    JUNK,
    st.just(""),
)
MOONCAKE_LINE = st.one_of(
    st.fixed_dictionaries(
        {
            "timestamp": st.integers(-10, 10**6),
            "input_length": st.integers(-2, 10_000),
            "output_length": st.integers(-2, 2_000),
        },
        optional={"hash_ids": st.one_of(st.lists(st.integers(0, 2**40), max_size=4), JUNK, st.none())},
    ).map(json.dumps),
    st.dictionaries(JUNK, st.one_of(st.integers(), JUNK), max_size=3).map(json.dumps),
    JUNK,
    st.just(""),
)
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_every_line_accounted_for(name: str, header: str | None, lines: list[str], trailing: bool) -> None:
    text = "\n".join(([header] if header else []) + lines) + ("\n" if trailing else "")
    expected = len(text.splitlines()) - (1 if header else 0)
    tmp = Path(tempfile.mkdtemp(prefix="lw-prop-"))
    try:
        path = tmp / name
        path.write_text(text, encoding="utf-8")
        db = tmp / "w.duckdb"
        report = ingest([path], warehouse=db)
        (f,) = report.files
        assert f.rows_read == expected
        assert f.ingested + f.quarantined == f.rows_read
        con = connect_readonly(db)
        ok = {r[0] for r in con.execute("SELECT line FROM marts.requests").fetchall()}
        bad = dict(con.execute("SELECT line, raw_text FROM raw.quarantine").fetchall())
        con.close()
        first = 2 if header else 1
        assert len(ok) == f.ingested
        assert len(bad) == f.quarantined
        assert ok | set(bad) == set(range(first, first + expected))
        assert not ok & set(bad)
        source_lines = text.splitlines()
        for line, raw in bad.items():
            assert (raw or "") == source_lines[line - 1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@SETTINGS
@given(lines=st.lists(AZURE_LINE, min_size=1, max_size=12), trailing=st.booleans())
def test_azure_reader_accounts_for_every_line(lines: list[str], trailing: bool) -> None:
    _check_every_line_accounted_for(
        "AzureLLMInferenceTrace_code.csv", "TIMESTAMP,ContextTokens,GeneratedTokens", lines, trailing
    )


@SETTINGS
@given(lines=st.lists(MOONCAKE_LINE, min_size=1, max_size=12), trailing=st.booleans())
def test_mooncake_reader_accounts_for_every_line(lines: list[str], trailing: bool) -> None:
    first = json.dumps({"timestamp": 0, "input_length": 1, "output_length": 1})  # so detection finds mooncake
    _check_every_line_accounted_for("trace.jsonl", None, [first, *lines], trailing)


def _otel_export(spans: int) -> str:
    span = {
        "startTimeUnixNano": "1700000000000000000",
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "2"}},
        ],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span] * spans}]}]})


# (line text, rows it must give): one row per span; a line that is not an OTLP export is one row.
OTEL_LINE = st.one_of(
    st.integers(0, 3).map(lambda n: (_otel_export(n), n)),
    st.one_of(JUNK, st.sampled_from(["{}", "[]", "null", "1", '{"resourceSpans": 3}'])).map(lambda t: (t, 1)),
)


@SETTINGS
@given(lines=st.lists(OTEL_LINE, max_size=8))
def test_otel_reader_accounts_for_every_line_and_span(lines: list[tuple[str, int]]) -> None:
    texts = [_otel_export(1)] + [text for text, _ in lines]
    expected = 1 + sum(rows for _, rows in lines)
    tmp = Path(tempfile.mkdtemp(prefix="lw-prop-"))
    try:
        path = tmp / "spans.jsonl"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        report = ingest([path], warehouse=tmp / "w.duckdb", fmt="otel")
        (f,) = report.files
        assert f.rows_read == expected
        assert f.ingested + f.quarantined == f.rows_read
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
