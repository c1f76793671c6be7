"""Reader for OpenTelemetry GenAI spans exported as OTLP JSON (one document, or JSON lines of them).

Called by ``warehouse.ingest`` for ``--format otel``. DuckDB cannot flatten OTLP's nested
resourceSpans → scopeSpans → spans with key/value attribute lists in one scan, so this reader
streams the file line by line in Python and yields Arrow record batches of flat span rows (text
values, cast later by ``staging.stg_otel``). A line that is not JSON becomes one row with a
``parse_error``, so every line is accounted for. A pretty-printed single document is parsed whole
(such exports are small batches).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from warehouse.errors import UnreadableFileError

OTEL_FIELDS = (
    "line",
    "span_index",
    "text",
    "parse_error",
    "otel_trace_id",
    "span_id",
    "name",
    "start_ns",
    "end_ns",
    "input_tokens",
    "output_tokens",
    "model",
    "operation",
)
SCHEMA = pa.schema(
    [pa.field("line", pa.int64()), pa.field("span_index", pa.int32())]
    + [pa.field(name, pa.string()) for name in OTEL_FIELDS[2:]]
)
_ATTRS = {
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.prompt_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.usage.completion_tokens": "output_tokens",
    "gen_ai.request.model": "model",
    "gen_ai.operation.name": "operation",
}


def _value(value: Any) -> str | None:
    """The text of an OTLP AnyValue (``{"intValue": "12"}``, ``{"stringValue": "x"}``, ...)."""
    if isinstance(value, dict):
        for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if key in value:
                return None if value[key] is None else str(value[key])
        return None
    return None if value is None else str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def spans_of(export: Any) -> Iterator[dict[str, Any]]:
    """Flat span dicts of one OTLP export document; raises ``ValueError`` on a wrong shape."""
    if not isinstance(export, dict) or not isinstance(export.get("resourceSpans"), list):
        raise ValueError("not an OTLP export (no resourceSpans list)")
    for resource in export.get("resourceSpans") or []:
        for scope in (resource or {}).get("scopeSpans") or []:
            for span in (scope or {}).get("spans") or []:
                if not isinstance(span, dict):
                    raise ValueError("span is not an object")
                row: dict[str, Any] = {
                    "text": json.dumps(span, separators=(",", ":"))[:4000],
                    "otel_trace_id": _text(span.get("traceId")),
                    "span_id": _text(span.get("spanId")),
                    "name": _text(span.get("name")),
                    "start_ns": _text(span.get("startTimeUnixNano")),
                    "end_ns": _text(span.get("endTimeUnixNano")),
                }
                for attr in span.get("attributes") or []:
                    if isinstance(attr, dict) and attr.get("key") in _ATTRS:
                        row.setdefault(_ATTRS[attr["key"]], _value(attr.get("value")))
                yield row


def read_otel(path: Path, container: str, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream flat span rows of ``path`` as Arrow batches (schema ``SCHEMA``)."""
    buffer: list[dict[str, Any]] = []
    span_index = 0

    def flush() -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pylist(buffer, schema=SCHEMA)
        buffer.clear()
        return batch

    try:
        if container == "json":
            with open(path, encoding="utf-8") as handle:
                try:
                    document = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise UnreadableFileError(f"{path}: not valid OTLP JSON ({exc})") from exc
            exports = document if isinstance(document, list) else [document]
            lines: Iterator[tuple[int, Any, str | None]] = ((1, e, None) for e in exports)
        else:
            lines = _jsonl(path)
        for line_no, export, error in lines:
            rows: list[dict[str, Any]] = []
            if error is None:
                try:
                    rows = list(spans_of(export))
                except ValueError as exc:
                    error = f"invalid_otlp: {exc}"
            if error is not None:
                text = export if isinstance(export, str) else json.dumps(export)
                rows = [{"parse_error": error, "text": text[:4000]}]
            for row in rows:
                row["line"] = line_no
                row["span_index"] = span_index
                span_index += 1
                buffer.append(row)
            if len(buffer) >= batch_rows:
                yield flush()
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(f"{path}: not UTF-8 text ({exc})") from exc
    if buffer:
        yield flush()


def _jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8", newline=None) as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                yield line_no, text, "empty_line"
                continue
            try:
                yield line_no, json.loads(text), None
            except json.JSONDecodeError:
                yield line_no, text, "invalid_json"
