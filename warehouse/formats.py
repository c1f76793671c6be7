"""Trace formats: their names, and detection from the extension plus the header / first record.

Called by ``warehouse.ingest`` once per file before reading it. Detection reads at most the first
64 KiB of a text file (or a Parquet footer), never the whole file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from warehouse.errors import UnknownFormatError, UnreadableFileError
from warehouse.lines import BOM, MAX_LINE_BYTES

FORMATS: tuple[str, ...] = (
    "azure",
    "mooncake",
    "burstgpt",
    "vidur",
    "otel",
    "castillo",
    "alpaca-eval",
    "dolly",
    "canonical",
)
FORMAT_CHOICES: tuple[str, ...] = ("auto", *FORMATS)

# CSV headers the line readers expect, in the order their staging views read the fields.
CSV_FIELDS: dict[str, tuple[str, ...]] = {
    "azure": ("timestamp", "contexttokens", "generatedtokens"),
    "burstgpt": ("timestamp", "model", "request tokens", "response tokens", "total tokens", "log type"),
    "vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
}
CANONICAL_COLUMNS: tuple[str, ...] = (
    "request_id",
    "source",
    "trace_id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "task",
    "model",
    "prompt_text",
    "prefix_hash_ids",
    "status",
    "sample_index",
    "split",
    "arrival_ts",
)
CANONICAL_REQUIRED: frozenset[str] = frozenset({"arrival_s", "prompt_tokens", "output_tokens"})
PARQUET_SIGNATURES: dict[str, frozenset[str]] = {
    "castillo": frozenset({"output_sizes", "input_size", "prompt_text", "model", "dataset"}),
    "alpaca-eval": frozenset({"output_tokens_llama2", "instruction_tokens_llama2", "generator"}),
    "canonical": CANONICAL_REQUIRED,
}
EXPECTED = (
    "Azure CSV (TIMESTAMP,ContextTokens,GeneratedTokens), BurstGPT CSV, Vidur CSV (arrived_at,...), "
    "Mooncake JSONL, OTLP JSON(L), Dolly JSON array, CASTILLO / AlpacaEval Parquet, or the canonical "
    "schema as CSV / JSONL / Parquet"
)


@dataclass(frozen=True)
class Detected:
    """What detection found: the format, the container (csv/jsonl/json/parquet), the CSV header."""

    format: str
    container: str
    header: tuple[str, ...] = ()


def _norm(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def _head_bytes(path: Path, limit: int = 65536) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(limit)
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc
    return head.removeprefix(BOM)


def first_line(path: Path) -> bytes:
    """The first line of ``path`` without its terminator (``\\n``, ``\\r\\n`` or ``\\r``) or BOM.

    Reads past the 64 KiB head only when line 1 is longer (up to ``MAX_LINE_BYTES``; a longer first
    line makes the file unreadable).
    """
    try:
        with open(path, "rb") as handle:
            buf = b""
            while len(buf) <= MAX_LINE_BYTES:
                block = handle.read(65536)
                buf += block
                end = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
                if end >= 0:
                    return buf[:end].removeprefix(BOM)
                if not block:
                    return buf.removeprefix(BOM)
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc
    raise UnreadableFileError(
        f"{path}: the first line is longer than {MAX_LINE_BYTES} bytes; not a trace file"
    )


def _first_record(path: Path, head: bytes) -> bytes:
    """The first non-blank line (JSON lines detection looks at the first record, not a blank line)."""
    for line in re.split(rb"\r\n|\r|\n", head)[:-1]:  # the last piece may be cut by the head's end
        if line.strip():
            return line
    return first_line(path)


def _text_line(path: Path, line: bytes) -> str:
    """Line 1 decoded; a NUL byte or bytes that are not UTF-8 there mean the file is not text."""
    if b"\x00" in line:
        raise UnreadableFileError(f"{path}: binary content (a NUL byte in line 1); expected {EXPECTED}")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(
            f"{path}: line 1 is not UTF-8 text (byte {exc.start}: {line[exc.start : exc.start + 1]!r}); "
            f"convert the file to UTF-8; expected {EXPECTED}"
        ) from None


def csv_header(path: Path) -> tuple[str, ...]:
    """The normalised (lower-case, trimmed) header fields of a CSV file (line 1, standard quoting)."""
    line = _text_line(path, first_line(path))
    if not line.strip():
        return ()
    try:
        fields = next(csv.reader([line]))
    except csv.Error:
        fields = line.split(",")
    return tuple(_norm(f) for f in fields)


def _csv_format(path: Path, header: tuple[str, ...]) -> str | None:
    cols = set(header)
    for name, fields in CSV_FIELDS.items():
        if set(fields) <= cols:
            return name
    if cols >= CANONICAL_REQUIRED:
        return "canonical"
    return None


def _json_format(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if "resourceSpans" in keys:
        return "otel"
    if {"input_length", "output_length"} <= keys:
        return "mooncake"
    if {"instruction", "response"} <= keys:
        return "dolly"
    if keys >= CANONICAL_REQUIRED:
        return "canonical"
    return None


def parquet_columns(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise UnreadableFileError(f"{path}: not a readable Parquet file ({exc})") from exc


def detect(path: Path, fmt: str = "auto") -> Detected:
    """Detect (or check) the format of ``path``.

    ``fmt`` other than ``auto`` skips the guess but still finds the container and, for CSV, checks
    that the header has the fields the reader needs. Raises ``UnknownFormatError`` (with what was
    expected) or ``UnreadableFileError``.
    """
    if fmt not in FORMAT_CHOICES:
        raise UnknownFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_CHOICES)}")
    suffix = path.suffix.lower()
    if suffix == ".parquet" or (fmt in ("castillo", "alpaca-eval") and suffix != ".json"):
        cols = parquet_columns(path)
        if fmt == "auto":
            for name, needed in PARQUET_SIGNATURES.items():
                if needed <= cols:
                    return Detected(name, "parquet")
            raise UnknownFormatError(
                f"{path}: Parquet columns {sorted(cols)} match no format; expected {EXPECTED}"
            )
        signature = PARQUET_SIGNATURES.get(fmt)
        if signature is None or not signature <= cols:
            raise UnreadableFileError(f"{path}: not a {fmt} Parquet file (columns {sorted(cols)})")
        return Detected(fmt, "parquet")
    head = _head_bytes(path)
    stripped = head.lstrip()
    if not stripped:
        raise UnreadableFileError(f"{path}: empty file; expected {EXPECTED}")
    if suffix in (".csv", ".txt", ".tsv") or stripped[:1] not in (b"[", b"{"):
        header = csv_header(path)
        found = _csv_format(path, header)
        if fmt != "auto":
            if fmt not in CSV_FIELDS and fmt != "canonical":
                raise UnreadableFileError(f"{path}: looks like CSV, but {fmt} is not a CSV format")
            if found != fmt:
                need = CSV_FIELDS.get(fmt, tuple(sorted(CANONICAL_REQUIRED)))
                raise UnreadableFileError(f"{path}: header {header} lacks the {fmt} fields {need}")
            return Detected(fmt, "csv", header)
        if found is None:
            raise UnknownFormatError(f"{path}: CSV header {header} matches no format; expected {EXPECTED}")
        return Detected(found, "csv", header)
    obj: object = None
    jsonl_suffix = suffix in (".jsonl", ".ndjson")
    if stripped[:1] == b"[" and not jsonl_suffix:
        container = "json"
        text = stripped[1:].decode("utf-8", errors="replace").lstrip()
        try:
            obj, _ = json.JSONDecoder().raw_decode(text)
        except (json.JSONDecodeError, RecursionError):
            obj = None
    else:
        text = _text_line(path, _first_record(path, head))
        try:
            obj = json.loads(text)
            container = "jsonl"
        except RecursionError:  # a complete line nested too deeply to parse here: JSON lines
            container = "jsonl"
        except json.JSONDecodeError:
            # a pretty-printed single document (OTLP export), unless the name says JSON lines
            container = "jsonl" if jsonl_suffix else "json"
            obj = {"resourceSpans": []} if container == "json" and b'"resourceSpans"' in head else None
    found = _json_format(obj)
    if fmt != "auto":
        return Detected(fmt, container)
    if found is None:
        raise UnknownFormatError(f"{path}: first JSON record matches no format; expected {EXPECTED}")
    return Detected(found, container)


def task_from_filename(path: Path) -> str:
    """The task a file's name implies: the last ``_``-separated word of the stem, minus ``trace``.

    ``AzureLLMInferenceTrace_code.csv`` → ``code``; ``splitwise_conv.csv`` → ``conv``;
    ``conversation_trace.jsonl`` → ``conversation``. Used for trace formats without a task column.
    """
    words = [w for w in path.stem.lower().replace("-", "_").split("_") if w]
    if len(words) > 1 and words[-1] == "trace":
        words = words[:-1]
    return words[-1] if words else "unknown"
