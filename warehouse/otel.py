"""Reader for OpenTelemetry GenAI spans exported as OTLP JSON (one document, or JSON lines of them).

Called by ``warehouse.ingest`` for ``--format otel``. DuckDB cannot flatten OTLP's nested
resourceSpans → scopeSpans → spans with key/value attribute lists in one scan, so this reader
streams the file line by line in Python (``warehouse.lines.iter_lines``: the same line rules as every
line reader, a UTF-8 BOM ignored) and yields Arrow record batches of flat span rows (text values,
cast and range-checked later by ``staging.stg_otel``). Every line is accounted for: a line that is
not JSON, is nested deeper than Python's parser can follow, or does not have the OTLP shape becomes
one row with a ``parse_error`` (``invalid_json``, ``invalid_otlp: ...``, or the line reader's
``invalid_utf8`` / ``nul_byte`` / ``line_too_long``). Shape checks cover every level (a list where an
object belongs, attributes that are not a list, ...): no Python ``TypeError`` escapes.

A pretty-printed single document is parsed whole (such exports are small batches); a document that
is not UTF-8 or not JSON makes the file unreadable (``UnreadableFileError``: the load skips it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from warehouse.errors import UnreadableFileError
from warehouse.lines import BOM, iter_lines

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
_SCALARS = (str, int, float, bool)


def _scalar(value: Any, what: str) -> str | None:
    """The text of a JSON scalar; ``ValueError`` (→ ``invalid_otlp``) for a list or an object."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _SCALARS):
        return str(value)
    raise ValueError(f"{what} is not a scalar")


def _value(value: Any, key: str) -> str | None:
    """The text of an OTLP AnyValue (``{"intValue": "12"}``, ``{"stringValue": "x"}``, ...)."""
    if not isinstance(value, dict):
        raise ValueError(f"attribute {key!r}: value is not an AnyValue object")
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in value:
            return _scalar(value[kind], f"attribute {key!r} {kind}")
    return None


def _list(value: Any, what: str) -> list[Any]:
    """``value`` when it is a list, ``[]`` when missing/null; ``ValueError`` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def spans_of(export: Any) -> list[dict[str, Any]]:
    """Flat span dicts of one OTLP export document; raises ``ValueError`` on a wrong shape.

    All or nothing: a document with one malformed span gives no rows (it becomes one
    ``invalid_otlp`` row), so a document is never half-read.
    """
    if not isinstance(export, dict) or not isinstance(export.get("resourceSpans"), list):
        raise ValueError("not an OTLP export (no resourceSpans list)")
    rows: list[dict[str, Any]] = []
    for resource in export["resourceSpans"]:
        resource = _object(resource, "a resourceSpans entry")
        for scope in _list(resource.get("scopeSpans"), "scopeSpans"):
            scope = _object(scope, "a scopeSpans entry")
            for span in _list(scope.get("spans"), "spans"):
                span = _object(span, "a span")
                row: dict[str, Any] = {
                    "text": json.dumps(span, separators=(",", ":")),
                    "otel_trace_id": _scalar(span.get("traceId"), "traceId"),
                    "span_id": _scalar(span.get("spanId"), "spanId"),
                    "name": _scalar(span.get("name"), "name"),
                    "start_ns": _scalar(span.get("startTimeUnixNano"), "startTimeUnixNano"),
                    "end_ns": _scalar(span.get("endTimeUnixNano"), "endTimeUnixNano"),
                }
                for attr in _list(span.get("attributes"), "attributes"):
                    attr = _object(attr, "an attribute")
                    key = attr.get("key")
                    if isinstance(key, str) and key in _ATTRS:
                        row.setdefault(_ATTRS[key], _value(attr.get("value"), key))
                rows.append(row)
    return rows


def _parse(text: str) -> tuple[Any, str | None]:
    """``(document, None)`` or ``(None, reason)`` for one JSON text."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError:
        return None, "invalid_json"
    except RecursionError:
        return None, "invalid_json: nested too deeply"


def _documents(path: Path, container: str) -> Iterator[tuple[int, Any, str, str | None]]:
    """``(line, document, text, error)`` per JSON document of the file (the file, or each line)."""
    if container == "json":
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc
        try:
            text = raw.removeprefix(BOM).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFileError(f"{path}: not UTF-8 text ({exc})") from exc
        document, error = _parse(text)
        if error is not None:
            raise UnreadableFileError(f"{path}: not valid OTLP JSON ({error}); expected one JSON document")
        yield 1, document, "", None
        return
    for line, text, error in iter_lines(path):
        if error is not None:
            yield line, None, text, error
        elif not text.strip():
            yield line, None, text, "empty_line"
        else:
            document, error = _parse(text)
            yield line, document, text, error


def read_otel(path: Path, container: str, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream flat span rows of ``path`` as Arrow batches (schema ``SCHEMA``).

    A document (the file, or one line) may be one export or a JSON list of exports; each export
    gives its spans, or one ``invalid_otlp`` row.
    """
    buffer: list[dict[str, Any]] = []
    span_index = 0
    for line_no, document, text, error in _documents(path, container):
        exports = document if error is None and isinstance(document, list) else [document]
        for export in exports:
            rows: list[dict[str, Any]] = []
            reason = error
            if reason is None:
                try:
                    rows = spans_of(export)
                except ValueError as exc:
                    reason = f"invalid_otlp: {exc}"
                except RecursionError:
                    reason = "invalid_json: nested too deeply"
            if reason is not None:
                raw = text
                if not raw and export is not None:
                    try:
                        raw = json.dumps(export)
                    except RecursionError:
                        raw = ""
                rows = [{"parse_error": reason, "text": raw}]
            for row in rows:
                row["line"] = line_no
                row["span_index"] = span_index
                span_index += 1
                buffer.append(row)
            if len(buffer) >= batch_rows:
                yield pa.RecordBatch.from_pylist(buffer, schema=SCHEMA)
                buffer.clear()
    if buffer:
        yield pa.RecordBatch.from_pylist(buffer, schema=SCHEMA)
