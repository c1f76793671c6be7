"""Hostile and careless input (issue 13): ingest never corrupts a row silently, and one bad row or
file never stops a load. One test per reproducer of the issue, plus their neighbours.

Each test states what the code before the fix did. Row-level problems must end in
``raw.quarantine`` with a reason while the rest of the file loads; file-level problems skip that
file, with a reason in the report, while the other files load.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.warehouse.samples import SAMPLES, empty_warehouse
from warehouse.ingest import FileReport, add_time_backwards, ingest
from warehouse.store import apply_schema, connect_readonly

VIDUR = "arrived_at,num_prefill_tokens,num_decode_tokens"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens"
BURST = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
BOM = "\ufeff"


def _write(path: Path, content: str | bytes | pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pa.Table):
        pq.write_table(content, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def _q(wh: Path, sql: str) -> list[tuple]:
    con = connect_readonly(wh)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def wh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty warehouse (a copy: faster than creating the schema in every test)."""
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    return empty_warehouse(tmp_path / "wh" / "warehouse.duckdb")


Loaded = tuple[FileReport, list[tuple], dict[int, str]]


def _load_many(wh: Path, files: dict[Path, str | bytes | pa.Table], **kw: Any) -> dict[str, Loaded]:
    """Write and ingest several files in one load: file name -> (report, marts rows, line -> reason).

    Marts rows are (line, arrival_s, prompt_tokens, output_tokens), ordered by line.
    """
    paths = [_write(path, content) for path, content in files.items()]
    out = {}
    for report in ingest(paths, warehouse=wh, **kw).files:
        assert report.status == "loaded", report
        assert report.rows_read == report.ingested + report.quarantined
        fid = _q(wh, f"SELECT file_id FROM raw.files WHERE path = '{report.path}'")[0][0]
        rows = _q(wh, f"SELECT line, arrival_s, prompt_tokens, output_tokens FROM marts.requests "
                  f"WHERE file_id = {fid} ORDER BY line")  # fmt: skip
        reasons = dict(_q(wh, f"SELECT line, reason FROM raw.quarantine WHERE file_id = {fid} ORDER BY line"))
        out[Path(report.path).name] = (report, rows, reasons)
    return out


def _load(wh: Path, path: Path, **kw: Any) -> tuple[Any, list[tuple], dict[int, str]]:
    """Ingest one file: (its FileReport, marts rows (line, arrival_s, prompt, output), line -> reason)."""
    (report,) = ingest([path], warehouse=wh, **kw).files
    assert report.status == "loaded", report
    assert report.rows_read == report.ingested + report.quarantined
    rows = _q(wh, "SELECT line, arrival_s, prompt_tokens, output_tokens FROM marts.requests ORDER BY line")
    reasons = dict(_q(wh, "SELECT line, reason FROM raw.quarantine ORDER BY line"))
    return report, rows, reasons


def _span(start: Any, inp: Any = 3, out: Any = 2) -> dict:
    return {
        "startTimeUnixNano": start,
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": inp}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": out}},
        ],
    }


def _export(*spans: dict) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


T0 = 1_700_000_000_000_000_000  # 2023-11-14, in ns


# --- Bare CR and mixed line endings: read correctly (the old code dropped the character after each
# bare CR: 10.5 became 0.5, Azure years became 0023, JSONL rows went to quarantine). ---------------


@pytest.mark.parametrize("newline", ["\r", "\r\n", "mixed"])
def test_bare_cr_and_mixed_line_endings_are_read_correctly(tmp_path: Path, wh: Path, newline: str) -> None:
    lines = [VIDUR, "10.5,100,10", "21.5,200,20", "32.5,300,30", "43.5,400,40"]
    ends = ["\r", "\n", "\r\n", "\r", "\r"] if newline == "mixed" else [newline] * 5
    path = _write(tmp_path / "splitwise_conv.csv", "".join(t + e for t, e in zip(lines, ends, strict=True)))
    _, rows, reasons = _load(wh, path)
    assert reasons == {}
    assert rows == [(2, 0.0, 100, 10), (3, 11.0, 200, 20), (4, 22.0, 300, 30), (5, 33.0, 400, 40)]


def test_bare_cr_azure_keeps_its_timestamps(tmp_path: Path, wh: Path) -> None:
    text = f"{AZURE}\r2023-11-16 18:15:46.6805900,374,44\r2023-11-16 18:15:50.9951690,396,109\r"
    _load(wh, _write(tmp_path / "AzureLLMInferenceTrace_code.csv", text))
    stamps = [str(t) for (t,) in _q(wh, "SELECT arrival_ts FROM marts.requests ORDER BY line")]
    assert stamps == ["2023-11-16 18:15:46.680590", "2023-11-16 18:15:50.995169"]


def test_bare_cr_in_every_line_reader(tmp_path: Path, wh: Path) -> None:
    records = {
        "trace.jsonl": [
            json.dumps({"timestamp": t * 1000, "input_length": 5 + t, "output_length": 2}) for t in (0, 5, 9)
        ],
        "d.jsonl": [json.dumps({"instruction": f"say {w}", "response": "ok then"}) for w in ("a", "b", "c")],
        "c.jsonl": [
            json.dumps({"arrival_s": t, "prompt_tokens": 5 + t, "output_tokens": 2}) for t in (0, 5, 9)
        ],
        "c.csv": ["arrival_s,prompt_tokens,output_tokens", "0,5,2", "5,10,2", "9,14,2"],
        "s.jsonl": [_export(_span(str(T0 + t * 10**9), 5 + t)) for t in (0, 5, 9)],
    }
    loaded = _load_many(wh, {tmp_path / name: "\r".join(r) + "\r" for name, r in records.items()})
    for name, (report, rows, reasons) in loaded.items():
        assert (report.ingested, reasons) == (3, {}), name
        if name != "d.jsonl":
            assert [(a, p) for _, a, p, _ in rows] == [(0.0, 5), (5.0, 10), (9.0, 14)], name


# --- Plausible ranges: an outlier is quarantined, never shifts or cuts the trace. ----------------


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("splitwise_conv.csv", f"{VIDUR}\n-1e300,100,10\n1,100,10\n2,100,10\n", "timestamp_out_of_range"),
        ("BurstGPT_1.csv", f"{BURST}\n-1e300,m,5,5,10,API log\n1,m,5,5,10,API log\n2,m,5,5,10,API log\n",
         "timestamp_out_of_range"),
        ("trace.jsonl", '{"timestamp": -1e300, "input_length": 5, "output_length": 5}\n'
         '{"timestamp": 1000, "input_length": 5, "output_length": 5}\n'
         '{"timestamp": 2000, "input_length": 5, "output_length": 5}\n', "timestamp_out_of_range"),
        ("AzureLLMInferenceTrace_code.csv",
         f"{AZURE}\n0001-01-01 00:00:00,5,5\n2023-11-16 18:00:01,5,5\n2023-11-16 18:00:02,5,5\n",
         "timestamp_out_of_range"),
    ],
)  # fmt: skip
def test_an_outlier_first_row_does_not_shift_the_trace(
    tmp_path: Path, wh: Path, name: str, text: str, reason: str
) -> None:
    _, rows, reasons = _load(wh, _write(tmp_path / name, text))
    first = 1 if name.endswith(".jsonl") else 2
    assert reasons == {first: reason}
    assert [a for _, a, _, _ in rows] == [0.0, 1.0]


def test_outliers_mid_trace_are_quarantined_and_the_rest_loads(tmp_path: Path, wh: Path) -> None:
    """Was: accepted (1e308, year 9999, 2^63-1 tokens), and every later row became time_backwards."""
    vidur = ["1e308,100,10", "inf,100,10", f"1.5,{2**63 - 1},10", "1.6,100,10000001"]
    azure = ["9999-12-31 00:00:00,5,5", "infinity,5,5", "2023-11-16 18:00:01.5,5,18446744073709551616"]
    loaded = _load_many(
        wh,
        {
            tmp_path / "splitwise_conv.csv": f"{VIDUR}\n0,5,5\n" + "\n".join(vidur) + "\n2,5,5\n3,5,5\n",
            tmp_path / "AzureLLMInferenceTrace_code.csv": f"{AZURE}\n2023-11-16 18:00:00,5,5\n"
            + "\n".join(azure) + "\n2023-11-16 18:00:02,5,5\n2023-11-16 18:00:03,5,5\n",
        },
    )  # fmt: skip
    _, rows, reasons = loaded["splitwise_conv.csv"]
    assert reasons == {
        3: "timestamp_out_of_range", 4: "bad_timestamp",
        5: "prompt_tokens_too_large", 6: "output_tokens_too_large",
    }  # fmt: skip
    assert [a for _, a, _, _ in rows] == [0.0, 2.0, 3.0]  # the rows after them are not time_backwards
    _, rows, reasons = loaded["AzureLLMInferenceTrace_code.csv"]
    assert reasons == {3: "timestamp_out_of_range", 4: "timestamp_out_of_range", 5: "bad_output_tokens"}
    assert [a for _, a, _, _ in rows] == [0.0, 2.0, 3.0]


def test_a_folder_holding_an_azure_infinity_row_publishes(tmp_path: Path, wh: Path) -> None:
    """Was: 'arrival_s not null: 1 offending row(s)' refused every nightly load of that folder."""
    _write(
        tmp_path / "d" / "AzureLLMInferenceTrace_code.csv",
        f"{AZURE}\n2023-11-16 18:00:00,5,5\ninfinity,3,4\n2023-11-16 18:00:02,5,5\n",
    )
    report = ingest([tmp_path / "d"], warehouse=wh)
    assert (report.ingested, report.quarantined) == (2, 1)
    assert _q(wh, "SELECT line, reason FROM raw.quarantine") == [(3, "timestamp_out_of_range")]


def test_otel_start_time_out_of_range_is_quarantined(tmp_path: Path, wh: Path) -> None:
    """Was: -1 accepted (shifting the trace by 53 years); >= 2^63 crashed with an INT64 overflow."""
    bad = {2: "-1", 3: str(2**63), 4: 2**63, 5: 2**64 + 5, 6: "1", 7: "soon"}
    text = "\n".join(
        [_export(_span(str(T0))), *(_export(_span(v)) for v in bad.values()), _export(_span(str(T0 + 10**9)))]
    )
    _, rows, reasons = _load(wh, _write(tmp_path / "s.jsonl", text + "\n"), fmt="otel")
    assert reasons == {
        line: "bad_timestamp" if v == "soon" else "timestamp_out_of_range" for line, v in bad.items()
    }
    assert [a for _, a, _, _ in rows] == [0.0, 1.0]


def test_canonical_ranges_are_the_same_rules(tmp_path: Path, wh: Path) -> None:
    bad = {
        "r2,1e308,5,5,": "arrival_s_out_of_range",
        "r3,-1,5,5,": "arrival_s_out_of_range",
        "r4,1,5,5,9999-01-01 00:00:00": "arrival_ts_out_of_range",
        "r5,1,5,5,infinity": "arrival_ts_out_of_range",
        f"r6,1,{2**62},5,": "prompt_tokens_too_large",
    }
    text = "request_id,arrival_s,prompt_tokens,output_tokens,arrival_ts\nr1,0,5,5,\n" + "\n".join(bad) + "\n"
    _, rows, reasons = _load(wh, _write(tmp_path / "c.csv", text))
    assert reasons == dict(enumerate(bad.values(), start=3))
    assert len(rows) == 1


# --- time_backwards compares with the last ACCEPTED row. -----------------------------------------


def test_nan_timestamp_does_not_reject_the_next_valid_row(tmp_path: Path, wh: Path) -> None:
    """Was: Vidur 0.0, nan, 1.0, 2.0 quarantined 1.0 as time_backwards (compared with the NaN)."""
    _, rows, reasons = _load(
        wh, _write(tmp_path / "splitwise_conv.csv", f"{VIDUR}\n0.0,5,5\nnan,5,5\n1.0,5,5\n2.0,5,5\n")
    )
    assert reasons == {3: "bad_timestamp"}
    assert [a for _, a, _, _ in rows] == [0.0, 1.0, 2.0]


def _sequential(rows: list[tuple[float | None, int]]) -> list[str | None]:
    """The definition: a row is rejected when invalid, or earlier than the last accepted row."""
    last: float | None = None
    out: list[str | None] = []
    for t, tokens in rows:
        if t is None or math.isnan(t) or not 0 <= t < 4102444800.0:
            out.append("time")
        elif tokens <= 0:
            out.append("tokens")
        elif last is not None and t < last:
            out.append("time_backwards")
        else:
            out.append(None)
            last = t
    return out


@pytest.fixture(scope="module")
def staging_con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with the warehouse schema: the staging macros without a load around them."""
    con = duckdb.connect()
    apply_schema(con)
    yield con
    con.close()


_FILE_IDS = itertools.count(1)
TIMES = st.one_of(st.none(), st.sampled_from([math.nan, -1.0, 1e308]), st.integers(0, 6).map(float))


def _trace_line(fmt: str, t: float | None, prompt: int) -> str:
    """One line of a trace format with arrival ``t`` (seconds; None = unparsable, NaN, -1 or 1e308)."""
    if fmt == "azure":
        special = {None: "x", -1.0: "0001-01-01 00:00:00", 1e308: "9999-01-01 00:00:00"}
        stamp = (
            "nan" if t is not None and math.isnan(t) else special.get(t) or f"2023-11-16 18:00:0{int(t or 0)}"
        )
        return f"{stamp},{prompt},1"
    text = "x" if t is None else repr(t)
    if fmt == "mooncake":
        stamp = "null" if t is None else "NaN" if math.isnan(t) else repr(t * 1000)
        return json.dumps({"timestamp": "STAMP", "input_length": prompt, "output_length": 1}).replace(
            '"STAMP"', stamp
        )
    if fmt == "burstgpt":
        return f"{text},m,{prompt},1,2,API log"
    return f"{text},{prompt},1"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["azure", "burstgpt", "vidur", "mooncake"]),
    rows=st.lists(st.tuples(TIMES, st.integers(0, 3)), min_size=1, max_size=14),
)
def test_time_backwards_is_the_sequential_definition(
    fmt: str, rows: list[tuple[float | None, int]], staging_con: duckdb.DuckDBPyConnection
) -> None:
    """The running max of staging.sql equals "compare with the last accepted row", in every format."""
    con, file_id = staging_con, next(_FILE_IDS)
    header = {"azure": AZURE, "burstgpt": BURST, "vidur": VIDUR, "mooncake": None}[fmt]
    texts = ([header] if header else []) + [_trace_line(fmt, t, p) for t, p in rows]
    pos = {"azure": [1, 2, 3], "burstgpt": [1, 2, 3, 4, 5, 6], "vidur": [1, 2, 3], "mooncake": None}[fmt]
    # The file's lines in line order with its constants, as warehouse.ingest._open_lines passes them.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _l AS SELECT ?::INTEGER AS file_id, unnest(range(1, ?)) AS line, "
        "unnest(?::VARCHAR[]) AS text, NULL::VARCHAR AS parse_error, ?::INTEGER[] AS field_pos, "
        "?::INTEGER AS n_fields, NULL::VARCHAR AS task",
        [file_id, len(texts) + 1, texts, pos, len(pos) if pos else None],
    )
    first = 2 if header else 1
    want = _sequential(rows)
    staged = [dict(con.execute(f"SELECT line, reject_reason FROM staging.stg_{fmt}_lines('_l')").fetchall())]
    # What a load does (warehouse.ingest._stage_lines): the rows without time_backwards, then
    # add_time_backwards, on a table in line order (the lag proof) and in reverse (the exact path).
    for order in ("line", "line DESC"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _staged AS SELECT line, reject_reason, order_key "
            f"FROM staging.stg_{fmt}_rows('_l') ORDER BY {order}"
        )
        add_time_backwards(con)
        staged.append(dict(con.execute("SELECT line, reject_reason FROM _staged").fetchall()))
    for got in staged:
        assert [got[line + first] == "time_backwards" for line in range(len(rows))] == [
            w == "time_backwards" for w in want
        ]
        assert [got[line + first] is None for line in range(len(rows))] == [w is None for w in want]
    assert staged[0] == staged[1] == staged[2]


# --- Text that DuckDB would cut: NUL bytes, long lines, bytes that are not UTF-8. -----------------


def test_text_after_a_nul_past_64k_is_never_cut(tmp_path: Path, wh: Path) -> None:
    """Was: the NUL was DuckDB's delimiter, so the raw line was silently cut at it."""
    good = '{"timestamp": 0, "input_length": 1, "output_length": 1}\n' * 2000  # > 64 KiB
    bad = '{"timestamp": 5, "input_length": 1, "output_length": 1, "pad": "a\x00b"}'
    report, _, reasons = _load(wh, _write(tmp_path / "trace.jsonl", good + bad + "\n" + good))
    assert reasons == {2001: "nul_byte"}
    assert _q(wh, "SELECT raw_text FROM raw.quarantine") == [(bad,)]  # kept whole
    assert report.ingested == 4000


def test_a_line_over_2_mb_is_read_not_refused(tmp_path: Path, wh: Path) -> None:
    """Was: 'CSV Error on Line: 3' (DuckDB's 2 MB line limit) refused the whole file."""
    text = f"{VIDUR}\n0,1,1\n1,{'1' * 3_000_000},1\n2,1,{' ' * 2_500_000}2\n3,1,1\n"
    _, rows, reasons = _load(wh, _write(tmp_path / "splitwise_conv.csv", text))
    assert reasons == {3: "bad_prompt_tokens"}  # read whole: 3 M digits, not a BIGINT
    assert rows == [(2, 0.0, 1, 1), (4, 2.0, 1, 2), (5, 3.0, 1, 1)]


def test_a_line_over_the_line_limit_is_quarantined(
    tmp_path: Path, wh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warehouse import lines

    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(lines, "FAST_LINE_BYTES", 500)
    text = f"{VIDUR}\n0,1,1\n1,{'1' * 5000},1\n2,1,1\n"
    _, rows, reasons = _load(wh, _write(tmp_path / "splitwise_conv.csv", text))
    assert reasons == {3: "line_too_long: 5004 bytes (max 1000)"}
    assert [line for line, *_ in rows] == [2, 4]


def test_a_byte_that_is_not_utf8_quarantines_its_line(tmp_path: Path, wh: Path) -> None:
    """Was: 'CSV Error on Line: 3', the reason cut off, the whole file refused."""
    files = {
        "splitwise_conv.csv": [VIDUR.encode(), b"0,1,1", b"1,1,1\xff", b"2,1,1"],
        "trace.jsonl": [b'{"timestamp": 0, "input_length": 1, "output_length": 1}',
                        b'{"timestamp": 1, "input_length": 1, "output_length": 1, "x": "\xe9"}',
                        b'{"timestamp": 2, "input_length": 1, "output_length": 1}'],
        "c.csv": [b"arrival_s,prompt_tokens,output_tokens,prompt_text", b"0,1,1,a", b'1,1,1,"caf\xe9"',
                  b"2,1,1,b"],
        "d.jsonl": [b'{"instruction": "a", "response": "b"}', b'{"instruction": "\xe9", "response": "b"}',
                    b'{"instruction": "c", "response": "d"}'],
    }  # fmt: skip
    loaded = _load_many(wh, {tmp_path / name: b"\n".join(rows) + b"\n" for name, rows in files.items()})
    for name, (report, _, reasons) in loaded.items():
        assert list(reasons.values()) == ["invalid_utf8"], name
        assert report.ingested == 2, name


# --- One rule each, in every format. -------------------------------------------------------------


def _castillo(input_size: pa.Array, output_sizes: pa.Array | None = None) -> pa.Table:
    n = len(input_size)
    return pa.table(
        {
            "sample_id": [f"s{i}" for i in range(n)], "prompt_id": [f"p{i}" for i in range(n)],
            "model": ["m"] * n, "dataset": ["Alpaca"] * n, "category": ["c"] * n,
            "prompt_text": ["t"] * n, "input_size": input_size,
            "output_sizes": output_sizes if output_sizes is not None else pa.array([[3, 4]] * n),
            "split": ["train"] * n,
        }
    )  # fmt: skip


CASTILLO_CASES = [
    # Was: 12.5 rounded to 13 and kept (canonical Parquet quarantined 10.5).
    (_castillo(pa.array([12.5, 7.0])), ["bad_prompt_tokens"] * 2, 2),
    # Was: one NaN refused the whole file (cast error).
    (_castillo(pa.array([math.nan, 7.0])), ["bad_prompt_tokens"] * 2, 2),
    (_castillo(pa.array(["x", "7"])), ["bad_prompt_tokens"] * 2, 2),
    (_castillo(pa.array([7, 8]), pa.array([[3.5, 4.0], [1.0, 2.0]])), ["bad_output_tokens"], 3),
    (
        _castillo(pa.array([7, 8]), pa.array([["3", "x"], None])),
        ["bad_output_tokens", "missing_output_sizes"],
        1,
    ),
]


def test_castillo_numbers_follow_the_rule_of_every_format(tmp_path: Path, wh: Path) -> None:
    loaded = _load_many(
        wh, {tmp_path / f"castillo_{i}.parquet": t for i, (t, _, _) in enumerate(CASTILLO_CASES)}
    )
    for i, (_, bad_reasons, ingested) in enumerate(CASTILLO_CASES):
        report, _, _ = loaded[f"castillo_{i}.parquet"]
        fid = _q(wh, f"SELECT file_id FROM raw.files WHERE path = '{report.path}'")[0][0]
        got = sorted(r for (r,) in _q(wh, f"SELECT reason FROM raw.quarantine WHERE file_id = {fid}"))
        assert (got, report.ingested) == (sorted(bad_reasons), ingested), i


def test_alpaca_eval_nan_or_string_tokens_are_quarantined(tmp_path: Path, wh: Path) -> None:
    cases = [
        ("instruction_tokens_llama2", pa.array([5.5, 3.0])),
        ("output_tokens_llama2", pa.array(["many", "4"])),
        ("output_tokens_llama2", pa.array([math.nan, 4.0])),
    ]
    files = {}
    for i, (column, values) in enumerate(cases):
        data = {"idx": [0, 1], "generator": ["g", "g"], "dataset": ["d", "d"], "instruction": ["a", "b"],
                "instruction_tokens_llama2": [5, 3], "output_tokens_llama2": [7, 4]}  # fmt: skip
        data[column] = values
        files[tmp_path / f"alpaca_eval_{i}.parquet"] = pa.table(data)
    for name, (report, _, reasons) in _load_many(wh, files).items():
        assert (list(reasons), report.ingested) == ([1], 1), name


def test_canonical_parquet_hash_ids_are_checked(tmp_path: Path, wh: Path) -> None:
    cases = [
        pa.array([["a", "b"], ["1"]]),  # was stored as [NULL, NULL]
        pa.array([[1.5], [1.0]]),  # was rounded to [2]
        pa.array([[1, None], [1]]),
    ]
    files = {
        tmp_path / f"c{i}.parquet": pa.table(
            {
                "arrival_s": [0.0, 1.0],
                "prompt_tokens": [1, 1],
                "output_tokens": [1, 1],
                "prefix_hash_ids": hashes,
            }
        )
        for i, hashes in enumerate(cases)
    }
    for name, (_, _, reasons) in _load_many(wh, files).items():
        assert reasons == {1: "bad_prefix_hash_ids"}, name
    assert _q(wh, "SELECT prefix_hash_ids FROM marts.requests") == [([1],)] * 3


def test_canonical_parquet_nan_and_string_values_are_quarantined(tmp_path: Path, wh: Path) -> None:
    table = pa.table(
        {"arrival_s": ["0", "1", "x"], "prompt_tokens": [1.0, math.nan, 2.0], "output_tokens": [1, 1, 1]}
    )
    _, _, reasons = _load(wh, _write(tmp_path / "c.parquet", table))
    assert reasons == {2: "bad_prompt_tokens", 3: "bad_arrival_s"}


def test_mooncake_hash_ids_are_never_rounded_or_nulled(tmp_path: Path, wh: Path) -> None:
    bad = ['["a", "b"]', "[1.5]", '"7"', "[1e30]", "[1, null]", "[99999999999999999999]"]
    text = '{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [1, 2.0]}\n' + "".join(
        f'{{"timestamp": 1, "input_length": 5, "output_length": 5, "hash_ids": {h}}}\n' for h in bad
    )
    _, _, reasons = _load(wh, _write(tmp_path / "trace.jsonl", text))
    assert reasons == dict.fromkeys(range(2, 2 + len(bad)), "bad_hash_ids")
    assert _q(wh, "SELECT prefix_hash_ids FROM marts.requests") == [([1, 2],)]


def test_invalid_dolly_jsonl_lines_are_invalid_json(tmp_path: Path, wh: Path) -> None:
    """Was: reason prompt_tokens_not_positive for a line that is not JSON."""
    text = '{"instruction": "a", "response": "b"}\n{bad\n[1]\n\n{"instruction": 5, "response": "b"}\n'
    _, _, reasons = _load(wh, _write(tmp_path / "d.jsonl", text))
    assert reasons == {
        2: "invalid_json",
        3: "invalid_json",
        4: "empty_line",
        5: "invalid_record: instruction is not a string",
    }
    assert _q(wh, "SELECT raw_text FROM raw.quarantine WHERE line = 2") == [("{bad",)]


def test_dolly_json_array_elements_that_are_not_objects_are_rows(tmp_path: Path, wh: Path) -> None:
    text = '[{"instruction": "a", "response": "b"}, 5, null, {"instruction": "c", "response": "d e"}]'
    report, _, reasons = _load(wh, _write(tmp_path / "d.json", text))
    assert reasons == {2: "invalid_json", 3: "invalid_json"}
    assert report.ingested == 2


TEXT_SAMPLES = sorted(
    n for n, s in SAMPLES.items() if s.format not in ("castillo", "alpaca-eval") and n != "canonical-parquet"
)


def test_a_bom_is_accepted_at_the_start_of_every_text_format(tmp_path: Path) -> None:
    """Was: a BOM made OTel's line 1 invalid_json and a pretty OTel document unreadable."""
    values = []
    for kind in ("plain", "bom"):
        db = empty_warehouse(tmp_path / kind / "w.duckdb")
        paths = []
        for name in TEXT_SAMPLES:
            path = SAMPLES[name].write(tmp_path / kind / name)
            if kind == "bom":
                path.write_bytes(BOM.encode() + path.read_bytes())
            paths.append(path)
        for name, report in zip(TEXT_SAMPLES, ingest(paths, warehouse=db).files, strict=True):
            sample = SAMPLES[name]
            assert (report.format, report.rows_read, report.ingested) == (
                sample.format, sample.rows_read, sample.ingested,
            ), (kind, name)  # fmt: skip
        stored = (
            "SELECT file_id, line, arrival_s, prompt_tokens, output_tokens, task, model, prompt_text, "
            "prefix_hash_ids, status FROM marts.requests ORDER BY file_id, line, sample_index"
        )
        values.append(
            _q(db, "SELECT file_id, line, record_index, reason FROM raw.quarantine ORDER BY ALL")
            + _q(db, stored)
        )
    assert values[0] == values[1]


def test_canonical_csv_irregular_records_are_rows_not_a_refused_file(tmp_path: Path, wh: Path) -> None:
    """Was: 'Error when sniffing file' for one short, long or quoted row; a blank line vanished."""
    text = (
        "request_id,arrival_s,prompt_tokens,output_tokens,prompt_text\n"
        'r1,0,5,2,"hello, ""you"""\n'  # 2 ok: quoted
        "r2,1,5\n"  # 3 short
        "r3,2,5,2,x,extra\n"  # 4 long
        "\n"  # 5 blank
        '"r6",3,5,2,"multi\nline"\n'  # 6-7 ok, quoted id, a field spanning lines
        'r8,4,5,2,"4"5\n'  # 8 a quote in the middle
        "r9,5,5,2,\n"  # 9 ok
        'r10,6,5,2,"never closed\n'  # 10 unclosed quote to the end
    )
    _, _, reasons = _load(wh, _write(tmp_path / "c.csv", text))
    assert reasons == {
        3: "field_count: expected 5, got 3",
        4: "field_count: expected 5, got 6",
        5: "empty_line",
        8: "csv_error: ',' expected after '\"'",
        10: "csv_error: unexpected end of data",
    }
    assert _q(wh, "SELECT request_id, line, prompt_text FROM marts.requests ORDER BY line") == [
        ("r1", 2, 'hello, "you"'), ("r6", 6, "multi\nline"), ("r9", 9, None),
    ]  # fmt: skip
    assert _q(wh, "SELECT raw_text FROM raw.quarantine WHERE line = 3") == [("r2,1,5",)]


OTEL_SHAPES = [
    {"resourceSpans": [["x"]]},
    {"resourceSpans": [{"scopeSpans": 5}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": {"a": 1}}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": ["span"]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "1", "attributes": 5}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [7]}]}]}]},
    {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"attributes": [{"key": "gen_ai.usage.input_tokens", "value": 3}]}]}]}
        ]
    },
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {"attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": [1]}}]}
                        ]
                    }
                ]
            }
        ]
    },
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": {"x": 1}}]}]}]},
]


def test_otel_shape_errors_are_invalid_otlp(tmp_path: Path, wh: Path) -> None:
    """Was: a Python TypeError inside a DuckDB error refused the file."""
    text = "\n".join(
        [_export(_span(str(T0))), *map(json.dumps, OTEL_SHAPES), _export(_span(str(T0 + 10**9)))]
    )
    report, _, reasons = _load(wh, _write(tmp_path / "s.jsonl", text + "\n"), fmt="otel")
    assert list(reasons) == list(range(2, 2 + len(OTEL_SHAPES)))
    assert all(r.startswith("invalid_otlp: ") for r in reasons.values()), reasons
    assert report.ingested == 2


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_nested_100k_deep_is_a_bad_row_not_a_crash(tmp_path: Path, wh: Path) -> None:
    """Was: RecursionError (a traceback) for Dolly and OTel documents."""
    files = {
        "s.jsonl": f'{_export(_span(str(T0)))}\n{DEEP}\n{{"resourceSpans": {DEEP}}}\n',
        "d.jsonl": f'{{"instruction": "a", "response": "b"}}\n{{"instruction": {DEEP}, "response": "b"}}\n',
        "d.json": f'[{{"instruction": "a", "response": "b"}}, {{"instruction": {DEEP}}}]',
        "trace.jsonl": (
            f'{{"timestamp": 0, "input_length": 1, "output_length": 1}}\n{{"timestamp": {DEEP}}}\n'
        ),
        "c.jsonl": f'{{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}}\n{{"arrival_s": {DEEP}}}\n',
    }
    for name, (report, _, _) in _load_many(wh, {tmp_path / n: t for n, t in files.items()}).items():
        assert report.ingested == 1, name
        assert report.quarantined >= 1, name


def test_a_pretty_otel_document_nested_too_deep_skips_only_that_file(tmp_path: Path, wh: Path) -> None:
    bad = _write(tmp_path / "d" / "spans.json", '{\n"resourceSpans": ' + DEEP + "\n}")
    good = SAMPLES["azure"].write(tmp_path / "d")
    report = ingest([bad, good], warehouse=wh, fmt="auto")
    assert [f.status for f in report.files] == ["skipped", "loaded"]
    assert "nested too deeply" in (report.files[0].reason or "")


# --- A file that is not a trace skips that file; the others load. --------------------------------


def test_non_trace_files_in_a_folder_are_skipped_and_listed(tmp_path: Path, wh: Path) -> None:
    """Was: a notes.txt in the data folder failed the whole folder, every night."""
    d = tmp_path / "data"
    SAMPLES["azure"].write(d)
    _write(d / "notes.txt", "remember to rotate the logs\n")
    _write(d / "garbage.csv", bytes(range(256)) * 10)
    _write(d / "truncated.parquet", (SAMPLES["castillo"].write(tmp_path / "x")).read_bytes()[:200])
    _write(d / "broken.json", '[{"instruction": "a", "response": "b"}, {bad')
    report = ingest([d], warehouse=wh)
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["AzureLLMInferenceTrace_code.csv"].status == "loaded"
    skipped = {name: f.reason for name, f in by_name.items() if f.status == "skipped"}
    assert set(skipped) == {"notes.txt", "garbage.csv", "truncated.parquet", "broken.json"}
    assert "matches no format" in skipped["notes.txt"]
    assert "NUL byte in line 1" in skipped["garbage.csv"]
    assert "Parquet" in skipped["truncated.parquet"]
    assert "cannot read as dolly" in skipped["broken.json"]
    assert report.count("skipped") == report.to_dict()["files_skipped"] == 4
    assert "skipped " + str(d / "notes.txt") in report.summary()
    assert _q(wh, "SELECT count(*), count(DISTINCT file_id) FROM marts.requests") == [(3, 1)]
    assert _q(wh, "SELECT files_loaded, files_skipped FROM raw.load_log") == [(1, 4)]
    # nothing of a skipped file is left behind, and the next load retries it (not a duplicate)
    assert _q(wh, "SELECT count(*) FROM raw.files") == [(1,)]
    assert [f.status for f in ingest([d], warehouse=wh).files].count("skipped") == 4


def test_every_file_skipped_is_an_error_and_publishes_nothing(tmp_path: Path, wh: Path) -> None:
    from warehouse.errors import NoFileLoadedError

    notes = _write(tmp_path / "notes.txt", "hello\n")
    before = wh.read_bytes()
    with pytest.raises(NoFileLoadedError, match=r"notes.txt: CSV header \('hello',\) matches no format"):
        ingest([notes], warehouse=wh)
    assert wh.read_bytes() == before
    assert _q(wh, "SELECT count(*) FROM raw.load_log") == [(0,)]


def test_skipped_files_next_to_known_files_are_not_an_error(tmp_path: Path, wh: Path) -> None:
    azure = SAMPLES["azure"].write(tmp_path)
    ingest([azure], warehouse=wh)
    notes = _write(tmp_path / "notes.txt", "hello\n")
    report = ingest([azure, notes], warehouse=wh)
    assert [f.status for f in report.files] == ["duplicate", "skipped"]
