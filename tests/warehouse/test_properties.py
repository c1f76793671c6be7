"""Fuzzing every reader (issue 13): random valid rows plus random corruptions, in every format.

For each reader (Azure, BurstGPT, Vidur, Mooncake, OTel JSON lines and documents, CASTILLO,
AlpacaEval, Dolly array and JSON lines, canonical CSV / JSON lines / Parquet) an example draws a file
of valid records (whose canonical values it knows) mixed with corrupt ones (bad numbers, NaN, inf,
huge values, out-of-range times, blank lines, wrong field counts, NUL bytes, bytes that are not
UTF-8, over-long lines, deep JSON nesting, shape errors...) and file-level variations (bare CR, CRLF
or mixed line endings, a BOM, a missing final newline, Parquet column types). Then it asserts:

- no traceback: ``ingest`` returns and the file is ``loaded``;
- ``rows_read == ingested + quarantined`` and ``rows_read`` is the number of records written;
- every valid record is in ``marts.requests`` at its line with every value equal to the input's
  (arrivals relative to the first valid one), every corrupt record is in ``raw.quarantine`` with a
  reason, and (line formats) the quarantined text is the source line.

The default run is small and seeded (``derandomize``); ``-m slow`` runs the same properties longer.
Line limits are lowered for the run (``FAST_LINE_BYTES`` 256, ``MAX_LINE_BYTES`` 1024) so that the
long-line paths are exercised without writing megabytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.warehouse.samples import empty_warehouse
from warehouse import lines as lines_module
from warehouse.ingest import ingest
from warehouse.store import connect_readonly

FAST, MAX = 256, 1024
EPOCH = datetime(1970, 1, 1)
BOM = b"\xef\xbb\xbf"
MAX_TOKENS = 10_000_000
MAX_CLOCK = 4102444800.0
T0_NS = 1_700_000_000_000_000_000

Key = tuple[int, int | None]  # (line, record index: CASTILLO sample / OTel span; None otherwise)


@dataclass
class Case:
    """One generated file: what to write, and what the warehouse must hold afterwards."""

    name: str
    content: bytes | pa.Table
    fmt: str = "auto"
    rows_read: int = 0
    valid: dict[Key, dict[str, Any]] = field(default_factory=dict)
    corrupt: set[Key] = field(default_factory=set)
    raw: dict[int, str] = field(default_factory=dict)  # line -> quarantined text (line formats)


# --- text pieces -------------------------------------------------------------------------------

WORD = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=8)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# A NUL byte quarantines a CSV line (nul_byte): valid canonical CSV text has none.
TEXT_NO_NUL = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
JUNK_BYTES = st.binary(max_size=12).map(lambda b: b"x" + b.replace(b"\r", b"").replace(b"\n", b""))
DEEP = b"[" * 5000 + b"]" * 5000


def _int_text(data: st.DataObject, n: int) -> str:
    return data.draw(st.sampled_from([str(n), f"{n}.0", f" {n} ", f"{n}"]), label="int text")


def _float_text(data: st.DataObject, t: float) -> str:
    return data.draw(st.sampled_from([repr(t), f" {t!r} ", repr(t)]), label="float text")


def _tokens(data: st.DataObject, low: int = 1) -> int:
    return data.draw(st.one_of(st.integers(low, 5000), st.integers(low, MAX_TOKENS)), label="tokens")


BAD_CLOCK = [
    b"abc",
    b"",
    b"nan",
    b"inf",
    b"-inf",
    b"1e308",
    b"-1e300",
    b"-5",
    b"4102444800",
    b"1\x002",
    b"\xff1",
]
BAD_PROMPT = [
    b"abc",
    b"",
    b"12.5",
    b"nan",
    b"inf",
    b"0",
    b"-5",
    b"10000001",
    b"9223372036854775807",
    b"18446744073709551616",
    b"1e308",
    b"1\x002",
    b"\xff",
    b"0x10",
]
BAD_OUTPUT = [*BAD_PROMPT[:5], b"-1", b"10000001", b"9223372036854775807", b"1e400"]
BAD_OUTPUT_NONZERO = [*BAD_OUTPUT, b"0"]
BAD_AZURE_TS = [
    b"abc",
    b"",
    b"nan",
    b"infinity",
    b"-infinity",
    b"0001-01-01 00:00:00",
    b"9999-12-31 23:59:59",
    b"2100-01-01",
    b"1999-12-31 23:59:59.9999999",
    b"2023-02-30 00:00:00",
    b"\xff2023-11-16",
]


def _endings(data: st.DataObject, rows: list[bytes]) -> bytes:
    """Join lines with drawn line endings (\\n, \\r\\n, bare \\r or mixed), maybe a BOM and no final one."""
    style = data.draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]), label="line endings")
    ends = [data.draw(st.sampled_from(["\n", "\r\n", "\r"])) if style == "mixed" else style for _ in rows]
    for i in range(1, len(rows)):  # a bare \r before an empty line ending in \n would read as one \r\n
        if ends[i - 1] == "\r" and rows[i] == b"" and ends[i] == "\n":
            ends[i] = "\r\n"
    trailing = data.draw(st.booleans(), label="final newline") or rows[-1] == b""
    body = b"".join(r + e.encode() for r, e in zip(rows, ends, strict=True))
    if not trailing:
        body = body[: -len(ends[-1])]
    return (BOM if data.draw(st.booleans(), label="BOM") else b"") + body


def _line_corruption(
    data: st.DataObject, valid_line: bytes, fields: list[bytes], bad: list[list[bytes]]
) -> bytes:
    """A line that must be quarantined: a bad field or field count, blank, junk, NUL, bad UTF-8, long."""
    kind = data.draw(
        st.sampled_from(["field", "field", "count", "blank", "junk", "nul", "utf8", "long"]),
        label="corruption",
    )
    if kind == "field":
        i = data.draw(st.integers(0, len(bad) - 1), label="field")
        out = list(fields)
        out[i] = data.draw(st.sampled_from(bad[i]), label="bad value")
        return b",".join(out)
    if kind == "count":
        return b",".join(fields[:-1] if data.draw(st.booleans()) else [*fields, b"7"])
    if kind == "blank":
        return data.draw(st.sampled_from([b"", b"   ", b"\t"]))
    if kind == "junk":
        return data.draw(JUNK_BYTES)
    if kind == "nul":
        return valid_line[:1] + b"\x00" + valid_line[1:]
    if kind == "utf8":
        return valid_line + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9t\xe9", b"\xed\xa0\x80"]))
    return valid_line + b" " * (MAX + 10)


def _raw_text(line: bytes) -> str:
    """The quarantined text of a line: itself, bad bytes as \\x escapes, nothing when too long."""
    if len(line) > MAX:
        return ""
    return line.decode("utf-8", errors="backslashreplace")


def _maybe_long(data: st.DataObject, line: bytes) -> bytes:
    """A valid line, sometimes padded past FAST_LINE_BYTES (still valid: read by the Python reader)."""
    return line + b" " * (FAST + 5) if data.draw(st.integers(0, 5), label="pad") == 0 else line


def _n_rows(data: st.DataObject) -> int:
    return data.draw(st.integers(1, 10), label="rows")


def _times(data: st.DataObject, n: int, low: float, high: float) -> list[float]:
    return sorted(data.draw(st.lists(st.floats(low, high), min_size=n, max_size=n), label="times"))


# --- line formats ------------------------------------------------------------------------------


def _line_case(
    data: st.DataObject,
    name: str,
    header: bytes | None,
    make: Callable[[int, float], tuple[bytes, list[bytes], list[list[bytes]], dict[str, Any]]],
    times: list[float],
) -> Case:
    """A line-format file: ``make(i, t)`` gives (valid line, its fields, bad values per field, values)."""
    case = Case(name, b"")
    rows: list[bytes] = [header] if header is not None else []
    first_line = 2 if header is not None else 1
    valid_times: list[tuple[int, float]] = []
    for i, t in enumerate(times):
        line_no = first_line + i
        valid_line, fields, bad, values = make(i, t)
        # (without a header, line 1 is what detection reads: it stays valid)
        if (header is not None or i > 0) and data.draw(st.integers(0, 9), label="corrupt?") < 4:
            line = _line_corruption(data, valid_line, fields, bad)
            case.corrupt.add((line_no, None))
            case.raw[line_no] = _raw_text(line)
        else:
            line = _maybe_long(data, valid_line)
            case.valid[(line_no, None)] = values
            valid_times.append((line_no, t))
        rows.append(line)
    case.rows_read = len(times)
    if valid_times:
        start = valid_times[0][1]
        for line_no, t in valid_times:
            case.valid[(line_no, None)]["arrival_s"] = t - start
    case.content = _endings(data, rows)
    return case


def build_vidur(data: st.DataObject) -> Case:
    n = _n_rows(data)

    def make(i: int, t: float) -> tuple[bytes, list[bytes], list[list[bytes]], dict[str, Any]]:
        p, o = _tokens(data), _tokens(data)
        fields = [_float_text(data, t).encode(), _int_text(data, p).encode(), _int_text(data, o).encode()]
        values = {"prompt_tokens": p, "output_tokens": o, "task": "conv", "status": "ok"}
        return b",".join(fields), fields, [BAD_CLOCK, BAD_PROMPT, BAD_OUTPUT_NONZERO], values

    return _line_case(
        data,
        "splitwise_conv.csv",
        b"arrived_at,num_prefill_tokens,num_decode_tokens",
        make,
        _times(data, n, 0.0, 1e7),
    )


def build_burstgpt(data: st.DataObject) -> Case:
    n = _n_rows(data)
    log_types = {
        "Conversation log": "conv",
        "API log": "api",
        " api LOG ": "api",
        "Other": "other",
        "": "unknown",
    }

    def make(i: int, t: float) -> tuple[bytes, list[bytes], list[list[bytes]], dict[str, Any]]:
        p, o = _tokens(data), data.draw(st.one_of(st.just(0), st.integers(1, 5000)), label="response")
        model = data.draw(WORD, label="model")
        log = data.draw(st.sampled_from(sorted(log_types)), label="log type")
        fields = [
            _float_text(data, t).encode(),
            f" {model} ".encode(),
            _int_text(data, p).encode(),
            _int_text(data, o).encode(),
            str(p + o).encode(),
            log.encode(),
        ]
        values = {
            "prompt_tokens": p,
            "output_tokens": o,
            "model": model,
            "task": log_types[log],
            "status": "failed" if o == 0 else "ok",
        }
        bad = [BAD_CLOCK, [], BAD_PROMPT, BAD_OUTPUT, [], []]
        bad = [b or [b"\x00"] for b in bad]  # a NUL anywhere quarantines the line
        return b",".join(fields), fields, bad, values

    return _line_case(
        data,
        "BurstGPT_1.csv",
        b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
        make,
        _times(data, n, 0.0, 1e7),
    )


def build_azure(data: st.DataObject) -> Case:
    n = _n_rows(data)
    base = data.draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 1)), label="start")
    offsets = sorted(data.draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n), label="offsets us"))
    stamps = [base + timedelta(microseconds=us) for us in offsets]

    def make(i: int, t: float) -> tuple[bytes, list[bytes], list[list[bytes]], dict[str, Any]]:
        ts = stamps[i]
        text = ts.strftime("%Y-%m-%d %H:%M:%S")
        if ts.microsecond or data.draw(st.booleans(), label="fraction"):
            text += f".{ts.microsecond:06d}{data.draw(st.integers(0, 9), label='7th digit')}"
        p, o = _tokens(data), _tokens(data)
        fields = [text.encode(), _int_text(data, p).encode(), _int_text(data, o).encode()]
        values = {"prompt_tokens": p, "output_tokens": o, "task": "code", "status": "ok", "arrival_ts": ts}
        return b",".join(fields), fields, [BAD_AZURE_TS, BAD_PROMPT, BAD_OUTPUT_NONZERO], values

    us = [(s - EPOCH) // timedelta(microseconds=1) for s in stamps]
    case = _line_case(
        data,
        "AzureLLMInferenceTrace_code.csv",
        b"TIMESTAMP,ContextTokens,GeneratedTokens",
        make,
        [u / 1e6 for u in us],
    )
    return case


def build_mooncake(data: st.DataObject) -> Case:
    n = _n_rows(data)
    times_ms = sorted(
        data.draw(st.lists(st.one_of(st.integers(0, 10**9), st.floats(0, 1e9)), min_size=n, max_size=n))
    )
    bad_values = {
        "timestamp": ["abc", -1e300, 1e308, -5, None, [1], {"a": 1}, "nan"],
        "input_length": [12.5, "x", 0, -1, MAX_TOKENS + 1, 2**63 - 1, 2**64, None, [1]],
        "output_length": [12.5, "x", 0, -1, MAX_TOKENS + 1, 2**64, None, True],
        "hash_ids": [["a"], [1.5], "x", [None], [2**64], {"a": 1}],
    }

    def make(i: int, t: float) -> tuple[bytes, list[bytes], list[list[bytes]], dict[str, Any]]:
        p, o = _tokens(data), _tokens(data)
        record: dict[str, Any] = {"timestamp": times_ms[i], "input_length": p, "output_length": o}
        hashes = data.draw(
            st.one_of(st.none(), st.just("absent"), st.lists(st.integers(0, 2**63 - 1), max_size=4))
        )
        if hashes != "absent":
            record["hash_ids"] = hashes
        values = {
            "prompt_tokens": p,
            "output_tokens": o,
            "task": "conversation",
            "status": "ok",
            "prefix_hash_ids": hashes if isinstance(hashes, list) else None,
        }
        key = data.draw(st.sampled_from(sorted(bad_values)), label="bad key")
        broken = dict(record)
        if data.draw(st.booleans(), label="drop key") and key != "hash_ids":
            broken.pop(key)
        else:
            broken[key] = data.draw(st.sampled_from(bad_values[key]), label="bad json value")
        whole = data.draw(
            st.sampled_from(
                [json.dumps(broken), "[1]", '"x"', "{bad", "{}", f'{{"timestamp": {DEEP.decode()}}}']
            )
        )
        return json.dumps(record).encode(), [whole.encode()], [[whole.encode()]], values

    case = _line_case(data, "conversation_trace.jsonl", None, make, [float(t) for t in times_ms])
    for values in case.valid.values():  # arrivals in ms on the file: relative seconds are ms / 1000
        values["arrival_s"] = None
    valid = sorted(case.valid)
    if valid:
        start = times_ms[valid[0][0] - 1] / 1000.0
        for line, idx in valid:
            case.valid[(line, idx)]["arrival_s"] = times_ms[line - 1] / 1000.0 - start
    return case


# --- OTel --------------------------------------------------------------------------------------


def _otel_span(data: st.DataObject) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A span and its canonical values (None when it must be quarantined)."""
    start = T0_NS + data.draw(st.integers(-(10**17), 10**17), label="start ns")
    p, o = _tokens(data), _tokens(data)
    model = data.draw(st.one_of(st.none(), WORD), label="model")
    op = data.draw(st.one_of(st.none(), WORD), label="operation")
    span: dict[str, Any] = {"startTimeUnixNano": data.draw(st.sampled_from([str(start), start]))}
    attrs = [
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": data.draw(st.sampled_from([str(p), p]))}},
        {
            "key": data.draw(
                st.sampled_from(["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"])
            ),
            "value": {"intValue": str(o)},
        },
    ]
    if model is not None:
        attrs.append({"key": "gen_ai.request.model", "value": {"stringValue": model}})
    if op is not None:
        attrs.append({"key": "gen_ai.operation.name", "value": {"stringValue": op}})
    span["attributes"] = attrs
    if data.draw(st.integers(0, 9), label="bad span?") < 3:
        bad = data.draw(st.sampled_from(["-1", str(2**63), 2**64, "x", "1", None]), label="bad start")
        if data.draw(st.booleans()):
            span["startTimeUnixNano"] = bad
        else:
            attrs[0]["value"] = {"intValue": data.draw(st.sampled_from(["12.5", "x", "0", str(2**63), "-3"]))}
        return span, None
    values = {
        "prompt_tokens": p,
        "output_tokens": o,
        "model": model,
        "task": op or "unknown",
        "status": "ok",
        "start_ns": start,
        "arrival_ts": EPOCH + timedelta(microseconds=start // 1000),
    }
    return span, values


def build_otel(data: st.DataObject) -> Case:
    container = data.draw(st.sampled_from(["jsonl", "jsonl", "json"]), label="container")
    case = Case("spans.jsonl" if container == "jsonl" else "spans.json", b"", fmt="otel")
    rows: list[bytes] = []
    span_index = 0
    exports = []
    for line in range(1, _n_rows(data) + 1):
        if container == "jsonl" and data.draw(st.integers(0, 9), label="bad line?") < 3:
            bad = data.draw(
                st.sampled_from(
                    [
                        b"{bad",
                        b"",
                        b"  ",
                        b'{"resourceSpans": 3}',
                        b'{"resourceSpans": [["x"]]}',
                        b"[1]",
                        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": 5}]}]}]}',
                        DEEP,
                        b'{"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}',
                        b"\xff{",
                        b"{\x00}",
                    ]
                ),
                label="bad line",
            )
            if line == 1 and (not bad.strip() or b"\xff" in bad or b"\x00" in bad):
                bad = b"{bad"  # a blank file is empty; a line 1 that is not UTF-8 text makes it binary
            rows.append(bad)
            case.corrupt.add((line, span_index))
            span_index += 1
            continue
        spans = [_otel_span(data) for _ in range(data.draw(st.integers(0, 3), label="spans"))]
        export = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [s for s, _ in spans]}]}]}
        exports.append(export)
        rows.append(json.dumps(export).encode())
        if container == "jsonl" and len(rows[-1]) > MAX:  # one line_too_long row instead of its spans
            case.corrupt.add((line, span_index))
            span_index += 1
            continue
        for _, values in spans:
            key = (line if container == "jsonl" else 1, span_index)
            if values is None:
                case.corrupt.add(key)
            else:
                case.valid[key] = values
            span_index += 1
    case.rows_read = span_index
    if container == "jsonl":
        case.content = _endings(data, rows)
    else:
        document: Any = exports if len(exports) != 1 or data.draw(st.booleans()) else exports[0]
        text = json.dumps(document, indent=data.draw(st.sampled_from([None, 2])))
        case.content = (BOM if data.draw(st.booleans(), label="BOM") else b"") + text.encode()
    if case.valid:
        start = min(v["start_ns"] for v in case.valid.values()) / 1e9
        for values in case.valid.values():
            values["arrival_s"] = values.pop("start_ns") / 1e9 - start
    if not (case.valid or case.corrupt):  # an empty file is not a trace: keep one valid span
        return build_otel_minimal(data)
    return case


def build_otel_minimal(data: st.DataObject) -> Case:
    span = {
        "startTimeUnixNano": str(T0_NS),
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "2"}},
        ],
    }
    text = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    values = {"prompt_tokens": 3, "output_tokens": 2, "arrival_s": 0.0, "task": "unknown", "model": None}
    return Case("spans.jsonl", text.encode() + b"\n", "otel", 1, {(1, 0): values})


# --- Parquet: CASTILLO, AlpacaEval, canonical --------------------------------------------------

TYPES = ["int64", "float64", "string"]
BAD_BY_TYPE: dict[str, list[Any]] = {
    "int64": [0, -5, MAX_TOKENS + 1, 2**63 - 1, None],
    "float64": [12.5, math.nan, math.inf, -1.0, 1e20, None, 0.0],
    "string": ["x", "12.5", "", "nan", None, "0", "1e400"],
}


def _typed(data: st.DataObject, kind: str, n: int) -> Any:
    """A valid whole number ``n`` in a column of ``kind``."""
    if kind == "int64":
        return n
    if kind == "float64":
        return float(n)
    return data.draw(st.sampled_from([str(n), f"{n}.0", f" {n} "]), label="number as text")


def _array(values: list[Any], kind: str) -> pa.Array:
    return pa.array(values, type={"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}[kind])


def build_castillo(data: st.DataObject) -> Case:
    in_kind = data.draw(st.sampled_from(TYPES), label="input_size type")
    out_kind = data.draw(st.sampled_from(TYPES), label="output_sizes type")
    case = Case("castillo_lengths.parquet", b"")
    columns: dict[str, list[Any]] = {
        c: []
        for c in (
            "sample_id",
            "prompt_id",
            "model",
            "dataset",
            "category",
            "prompt_text",
            "input_size",
            "output_sizes",
            "split",
        )
    }
    for line in range(1, _n_rows(data) + 1):
        p = _tokens(data)
        input_bad = data.draw(st.integers(0, 9), label="bad input?") < 2
        dataset = data.draw(st.sampled_from(["Alpaca", "DollyDataset", "Mbpp", None]))
        category = data.draw(st.sampled_from(["open_qa", "undefined", None]))
        split = data.draw(st.sampled_from(["train", "validate", "test", None, "train", "dev"]))
        model, text = data.draw(WORD), data.draw(st.one_of(st.none(), ANY_TEXT))
        row = {
            "sample_id": f"s{line}",
            "prompt_id": f"p{line}",
            "model": model,
            "dataset": dataset,
            "category": category,
            "prompt_text": text,
            "split": split,
            "input_size": data.draw(st.sampled_from(BAD_BY_TYPE[in_kind]))
            if input_bad
            else _typed(data, in_kind, p),
        }
        sizes = data.draw(
            st.one_of(st.none(), st.just([]), st.lists(st.integers(0, 20), min_size=1, max_size=10)),
            label="samples",
        )
        if not sizes:
            row["output_sizes"] = sizes
            case.corrupt.add((line, None))
            case.rows_read += 1
        else:
            elements = []
            for si in range(len(sizes)):
                o = _tokens(data)
                if data.draw(st.integers(0, 9), label="bad output?") < 2:
                    elements.append(data.draw(st.sampled_from(BAD_BY_TYPE[out_kind])))
                    case.corrupt.add((line, si))
                elif input_bad or split == "dev":
                    elements.append(_typed(data, out_kind, o))
                    case.corrupt.add((line, si))
                else:
                    elements.append(_typed(data, out_kind, o))
                    task = (
                        f"DollyDataset/{category or 'undefined'}"
                        if dataset == "DollyDataset"
                        else dataset or "unknown"
                    )
                    case.valid[(line, si)] = {
                        "prompt_tokens": p,
                        "output_tokens": o,
                        "task": task,
                        "model": model,
                        "prompt_text": text,
                        "split": split,
                        "sample_index": si,
                        "arrival_s": 0.0,
                        "status": "ok",
                    }
            row["output_sizes"] = elements
            case.rows_read += len(sizes)
        for c in columns:
            columns[c].append(row[c])
    types = {"input_size": _array([], in_kind).type, "output_sizes": pa.list_(_array([], out_kind).type)}
    case.content = pa.table({c: pa.array(v, type=types.get(c)) for c, v in columns.items()})
    return case


def build_alpaca_eval(data: st.DataObject) -> Case:
    in_kind = data.draw(st.sampled_from(TYPES), label="instruction tokens type")
    out_kind = data.draw(st.sampled_from(TYPES), label="output tokens type")
    case = Case("alpaca_eval_outputs.parquet", b"")
    columns: dict[str, list[Any]] = {
        c: []
        for c in (
            "idx",
            "generator",
            "dataset",
            "instruction",
            "instruction_tokens_llama2",
            "output_tokens_llama2",
        )
    }
    for line in range(1, _n_rows(data) + 1):
        p, o = _tokens(data), _tokens(data)
        gen, dataset, text = (
            data.draw(WORD),
            data.draw(st.one_of(st.none(), WORD)),
            data.draw(st.one_of(st.none(), ANY_TEXT)),
        )
        bad = data.draw(st.sampled_from([None, None, "in", "out"]), label="bad column")
        columns["idx"].append(line)
        columns["generator"].append(gen)
        columns["dataset"].append(dataset)
        columns["instruction"].append(text)
        columns["instruction_tokens_llama2"].append(
            data.draw(st.sampled_from(BAD_BY_TYPE[in_kind])) if bad == "in" else _typed(data, in_kind, p)
        )
        columns["output_tokens_llama2"].append(
            data.draw(st.sampled_from(BAD_BY_TYPE[out_kind])) if bad == "out" else _typed(data, out_kind, o)
        )
        if bad:
            case.corrupt.add((line, None))
        else:
            case.valid[(line, None)] = {
                "prompt_tokens": p,
                "output_tokens": o,
                "task": dataset or "unknown",
                "model": gen,
                "prompt_text": text,
                "arrival_s": 0.0,
            }
        case.rows_read += 1
    types = {
        "instruction_tokens_llama2": _array([], in_kind).type,
        "output_tokens_llama2": _array([], out_kind).type,
    }
    case.content = pa.table({c: pa.array(v, type=types.get(c)) for c, v in columns.items()})
    return case


# --- Dolly -------------------------------------------------------------------------------------

DOLLY_TEXT = st.text(alphabet="ab\u00e9\u0436 \t\n", max_size=14)


def _approx(x: str | None) -> int:
    """staging.approx_tokens, as DuckDB computes it (trim() removes spaces only; \\s is ASCII)."""
    if x is None or x.strip(" ") == "":
        return 0
    return -(-13 * len(re.split(r"[\t\n\f\r ]+", x.strip(" "))) // 10)


def build_dolly(data: st.DataObject) -> Case:
    container = data.draw(st.sampled_from(["json", "jsonl"]), label="container")
    case = Case("dolly_sample.json" if container == "json" else "dolly_sample.jsonl", b"")
    items: list[bytes] = []
    for line in range(1, _n_rows(data) + 1):
        record: dict[str, Any] = {
            "instruction": data.draw(DOLLY_TEXT),
            "context": data.draw(st.one_of(st.none(), DOLLY_TEXT)),
            "response": data.draw(DOLLY_TEXT),
            "category": data.draw(st.one_of(st.none(), st.just(""), WORD)),
        }
        if line == 1:  # detection reads the first record
            record["instruction"] = record["instruction"] + "a"
            record["response"] = record["response"] + "a"
        kind = data.draw(st.sampled_from(["ok", "ok", "ok", "field", "element", "text"]), label="corruption")
        if line > 1 and kind == "field":
            record[data.draw(st.sampled_from(["instruction", "context", "response", "category"]))] = (
                data.draw(st.sampled_from([5, [1], {"a": 1}, True, 1.5]))
            )
            items.append(json.dumps(record).encode())
            case.corrupt.add((line, None))
        elif line > 1 and kind == "element":
            items.append(data.draw(st.sampled_from([b"5", b'"x"', b"null", b"[1]"])))
            case.corrupt.add((line, None))
        elif line > 1 and kind == "text" and container == "jsonl":
            items.append(
                data.draw(
                    st.sampled_from([b"{bad", b"", b"   ", b"\xff{}", b'{"instruction": "\x00"}', DEEP])
                )
            )
            case.corrupt.add((line, None))
        else:
            items.append(json.dumps(record, ensure_ascii=data.draw(st.booleans())).encode())
            pt = _approx(" ".join(x for x in (record["instruction"], record["context"]) if x is not None))
            ot = _approx(record["response"])
            if pt <= 0 or ot <= 0:
                case.corrupt.add((line, None))
            else:
                ctx = record["context"]
                text = (
                    record["instruction"]
                    if ctx is None or ctx.strip(" ") == ""
                    else f"{record['instruction']}\n\n{ctx}"
                )
                case.valid[(line, None)] = {
                    "prompt_tokens": pt,
                    "output_tokens": ot,
                    "prompt_text": text,
                    "task": record["category"] or "unknown",
                    "model": "human",
                    "arrival_s": 0.0,
                }
        case.rows_read += 1
    if container == "jsonl":
        case.content = _endings(data, items)
    else:
        sep = data.draw(st.sampled_from([b",", b",\n  ", b", "]))
        case.content = (BOM if data.draw(st.booleans()) else b"") + b"[" + sep.join(items) + b"]"
    return case


# --- canonical ---------------------------------------------------------------------------------

OPTIONAL = [
    "request_id",
    "task",
    "model",
    "prompt_text",
    "prefix_hash_ids",
    "status",
    "sample_index",
    "split",
    "arrival_ts",
]
CANON_BAD: dict[str, list[Any]] = {
    "arrival_s": ["x", -1.0, 1e308, "nan", "inf", ""],
    "prompt_tokens": ["x", 12.5, 0, -1, MAX_TOKENS + 1, "nan", ""],
    "output_tokens": ["x", 12.5, -1, MAX_TOKENS + 1, ""],
    "status": ["maybe", "OK"],
    "prefix_hash_ids": ['["a"]', "[1.5]", "x", "[1, null]"],
    "sample_index": ["x", -1, 1.5],
    "split": ["dev"],
    "arrival_ts": ["x", "9999-01-01 00:00:00", "1999-12-31 23:59:59"],
}


def build_canonical(data: st.DataObject) -> Case:
    container = data.draw(st.sampled_from(["csv", "jsonl", "parquet"]), label="container")
    cols = ["arrival_s", "prompt_tokens", "output_tokens"] + [
        c for c in OPTIONAL if data.draw(st.booleans(), label=f"column {c}")
    ]
    data.draw(st.randoms(use_true_random=False)).shuffle(cols)
    case = Case(f"canonical.{container}", b"")
    records: list[dict[str, Any] | bytes] = []
    for i in range(_n_rows(data)):
        status = data.draw(st.sampled_from(["ok", "failed", None])) if "status" in cols else None
        p, o = _tokens(data), _tokens(data, 0 if status == "failed" else 1)
        ts = data.draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 1, 1)), label="arrival_ts")
        rec: dict[str, Any] = {
            "request_id": f"{container}-{i}",
            "arrival_s": data.draw(st.floats(0, 1e9), label="arrival_s"),
            "prompt_tokens": p,
            "output_tokens": o,
            "task": data.draw(st.one_of(st.none(), WORD)),
            "model": data.draw(st.one_of(st.none(), WORD)),
            "prompt_text": data.draw(st.one_of(st.none(), TEXT_NO_NUL.filter(bool)), label="prompt_text"),
            "prefix_hash_ids": data.draw(
                st.one_of(st.none(), st.lists(st.integers(0, 2**63 - 1), max_size=3))
            ),
            "status": status,
            "sample_index": data.draw(st.one_of(st.none(), st.integers(0, 9))),
            "split": data.draw(st.sampled_from([None, "train", "validate", "test"])),
            "arrival_ts": ts.isoformat(sep=" ") if data.draw(st.booleans()) else None,
        }
        rec = {c: rec[c] for c in cols}
        bad_col = data.draw(
            st.sampled_from([None, None, *[c for c in cols if c in CANON_BAD]]), label="bad column"
        )
        if bad_col is not None:
            rec[bad_col] = data.draw(st.sampled_from(CANON_BAD[bad_col]), label="bad value")
        line_bad = container != "parquet" and data.draw(st.integers(0, 9), label="bad line?") == 0
        case.rows_read += 1
        key = (i, None)  # the line is fixed below, once the file is written
        if line_bad:
            records.append(
                data.draw(
                    st.sampled_from(
                        [b"", b"{bad", b"1,2", b"\xff\xfe,1", b"a,\x00"]
                        if container == "csv"
                        else [b"", b"{bad", b"[1]", DEEP, b"\xff"]
                    )
                )
            )
            case.corrupt.add(key)
            continue
        records.append(rec)
        if bad_col is not None:
            case.corrupt.add(key)
            continue
        hashes = rec.get("prefix_hash_ids")
        case.valid[key] = {
            "arrival_s": rec["arrival_s"],
            "prompt_tokens": p,
            "output_tokens": o,
            "task": rec.get("task") or "unknown",
            "model": rec.get("model"),
            "prompt_text": rec.get("prompt_text"),
            "prefix_hash_ids": hashes,
            "status": rec.get("status") or "ok",
            "sample_index": rec.get("sample_index"),
            "split": rec.get("split"),
            "arrival_ts": datetime.fromisoformat(rec["arrival_ts"]) if rec.get("arrival_ts") else None,
        }
        if rec.get("request_id") is not None:  # else derived: source:hash:line
            case.valid[key]["request_id"] = rec["request_id"]
    line_of = _write_canonical(data, case, container, cols, records)
    case.valid = {(line_of[i], None): v for (i, _), v in case.valid.items()}
    case.corrupt = {(line_of[i], None) for i, _ in case.corrupt}
    return case


def _write_canonical(
    data: st.DataObject, case: Case, container: str, cols: list[str], records: list[dict[str, Any] | bytes]
) -> dict[int, int]:
    """Write ``records`` into ``case.content``; returns record index -> its (first) line number."""
    line_of: dict[int, int] = {}
    if container == "parquet":
        columns = {c: [r.get(c) if isinstance(r, dict) else None for r in records] for c in cols}
        typed = {}
        for c, values in columns.items():
            if c == "prefix_hash_ids" and not any(isinstance(v, str) for v in values):
                typed[c] = pa.array(values, type=pa.list_(pa.int64()))
            elif c in ("arrival_s", "prompt_tokens", "output_tokens", "sample_index") and not any(
                isinstance(v, str) for v in values
            ):
                typed[c] = pa.array([None if v is None else float(v) for v in values], type=pa.float64())
            else:
                typed[c] = pa.array(
                    [
                        None
                        if v is None
                        else v
                        if isinstance(v, str)
                        else json.dumps(v)
                        if isinstance(v, list)
                        else repr(v)
                        for v in values
                    ],
                    type=pa.string(),
                )
        case.content = pa.table(typed)
        return {i: i + 1 for i in range(len(records))}
    if container == "jsonl":
        rows = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
        if isinstance(records[0], bytes) or not records:  # detection needs a record first
            rows.insert(
                0,
                json.dumps(
                    {"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "request_id": "first"}
                ).encode(),
            )
            case.valid[(-1, None)] = {"request_id": "first", "prompt_tokens": 1}
            case.rows_read += 1
            offset = 2
        else:
            offset = 1
        case.content = _endings(data, rows)
        line_of = {i: i + offset for i in range(len(records))}
        line_of[-1] = 1
        return line_of
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=data.draw(st.sampled_from(["\n", "\r\n"]), label="csv newline"))
    writer.writerow(cols)
    text = buf.getvalue().encode()
    line = 2
    for i, r in enumerate(records):
        line_of[i] = line
        if isinstance(r, bytes):
            chunk = r + writer.dialect.lineterminator.encode()
        else:
            buf = io.StringIO()
            csv.writer(buf, lineterminator=writer.dialect.lineterminator).writerow(
                [
                    "" if r.get(c) is None else json.dumps(r[c]) if isinstance(r.get(c), list) else r[c]
                    for c in cols
                ]
            )
            chunk = buf.getvalue().encode("utf-8", errors="surrogatepass")
        text += chunk
        line += len(re.findall(rb"\r\n|\r|\n", chunk))
    case.content = (BOM if data.draw(st.booleans(), label="BOM") else b"") + text
    return line_of


BUILDERS: dict[str, Callable[[st.DataObject], Case]] = {
    "azure": build_azure,
    "burstgpt": build_burstgpt,
    "vidur": build_vidur,
    "mooncake": build_mooncake,
    "otel": build_otel,
    "castillo": build_castillo,
    "alpaca-eval": build_alpaca_eval,
    "dolly": build_dolly,
    "canonical": build_canonical,
}

COLUMNS = (
    "line",
    "sample_index",
    "request_id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "task",
    "model",
    "prompt_text",
    "prefix_hash_ids",
    "status",
    "split",
    "arrival_ts",
)


def _check(case: Case, tmp: Path) -> None:
    path = tmp / case.name
    if isinstance(case.content, pa.Table):
        pq.write_table(case.content, path)
    else:
        path.write_bytes(case.content)
    db = empty_warehouse(tmp / "w.duckdb")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lines_module, "FAST_LINE_BYTES", FAST)
        m.setattr(lines_module, "MAX_LINE_BYTES", MAX)
        (report,) = ingest([path], warehouse=db, fmt=case.fmt).files
    assert report.status == "loaded", report.reason
    assert report.rows_read == report.ingested + report.quarantined
    assert report.rows_read == case.rows_read
    con = connect_readonly(db)
    try:
        stored = [
            dict(zip(COLUMNS, row, strict=True))
            for row in con.execute(f"SELECT {', '.join(COLUMNS)} FROM marts.requests").fetchall()
        ]
        quarantined = con.execute(
            "SELECT line, record_index, reason, raw_text FROM raw.quarantine"
        ).fetchall()
    finally:
        con.close()
    assert all(reason for _, _, reason, _ in quarantined)
    bad_keys = {
        (line, idx if report.format in ("castillo", "otel") else None) for line, idx, _, _ in quarantined
    }
    got: dict[Key, dict[str, Any]] = {}
    for row in stored:
        idx = (
            row["sample_index"]
            if report.format == "castillo"
            else int(row["request_id"].rsplit(":", 1)[1])
            if report.format == "otel"
            else None
        )
        got[(row["line"], idx)] = row
    valid = case.valid
    assert set(got) == set(valid), (sorted(got), sorted(valid))
    assert bad_keys == case.corrupt
    for key, want in valid.items():
        row = got[key]
        for column, value in want.items():
            assert row[column] == value, (key, column, row[column], value)
    for line, _, _, raw_text in quarantined:
        if line in case.raw:
            assert raw_text == case.raw[line], line


SETTINGS = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SLOW = settings(SETTINGS, max_examples=150)


@pytest.mark.parametrize("reader", sorted(BUILDERS))
@SETTINGS
@given(data=st.data())
def test_every_reader_stores_valid_rows_exactly_and_quarantines_the_rest(
    reader: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _check(BUILDERS[reader](data), tmp_path_factory.mktemp(reader))


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(BUILDERS))
@SLOW
@given(data=st.data())
def test_every_reader_long_fuzz(
    reader: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _check(BUILDERS[reader](data), tmp_path_factory.mktemp(reader))
