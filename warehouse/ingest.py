"""Ingest trace files into the warehouse: detect, read into ``raw``, stage, quarantine, publish.

Called by the ``loadwise ingest`` CLI, the ``ingest-traces`` Prefect flow and the pipeline; once per
command, with any number of files. One call is one load: it runs in a copy-on-write session
(``warehouse.store.write_session``), so either every loaded file is published together, with the
data checks passing, or nothing is.

Per file: detection (``warehouse.formats``) and one pass over its bytes that computes its SHA-256
content hash and scans it for what DuckDB's line scan would misread (``warehouse.lines.scan_file``).
A known hash is a duplicate: the file is skipped, ``duplicates_skipped`` counts the rows it held
when first ingested. Otherwise, for the line formats (Azure, BurstGPT, Vidur, Mooncake) the file
itself is the raw layer: its lines are read from it (numbered, with the reader's ``parse_error``)
straight into the format's staging macro (a CSV trace file that DuckDB's CSV reader splits as the
line reader would is split on every core instead: ``_stage_fast``), nothing of them is copied to
disk; for the other formats
the records go into ``raw.<format>``. The format's staging casts and checks each row against the
plausible ranges (``warehouse/sql/staging.sql``), rejected rows go to ``raw.quarantine`` with the
reason and the source line's text, and the rest are appended to the narrow tables under the
``marts.requests`` view (``marts.trace_requests``, ``_timed``, ``_labelled``) or to
``marts.requests_stored`` (``warehouse/sql/marts.sql``). Per file
``rows_read == ingested + quarantined`` (checked). Rows are counted after the CSV header and, for
CASTILLO, per generation sample (a record whose ``output_sizes`` is missing counts as one row).

**A bad row never stops a load; a bad file never stops the others.** Row-level problems are
quarantined. File-level problems (no format matches, not text, unreadable, a JSON document or
Parquet file that cannot be parsed) *skip that file*: it is reported with ``status = 'skipped'``
and its ``reason``, nothing of it is written, and the other files load. A load in which no file
could be loaded or was already known raises ``NoFileLoadedError`` (every file skipped: exit 1,
nothing published). Data checks that still fail after quarantine refuse the load
(``DataCheckError``) naming the file and line of the offending rows.
"""

from __future__ import annotations

import contextlib
import csv
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import checks
from warehouse.errors import (
    DataCheckError,
    NoFileLoadedError,
    UnknownFormatError,
    UnreadableFileError,
    WarehouseError,
)
from warehouse.formats import (
    CANONICAL_COLUMNS,
    CSV_FIELDS,
    FORMAT_CHOICES,
    Detected,
    detect,
    task_from_filename,
)
from warehouse.lines import LINES_SCHEMA, MAX_LINE_BYTES, FileScan, read_lines, scan_file
from warehouse.store import resolve_path, write_session

TEXT_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".txt")
LINE_FORMATS = ("azure", "burstgpt", "vidur", "mooncake")
NARROW_FORMATS = ("azure", "vidur")  # their rows go to narrow tables (no per-row labels): Azure's
TIMED_FORMATS = ("azure",)  # to marts.trace_requests_timed (arrival_s derived), Vidur's to trace_requests
RAW_TABLE = {
    "azure": "raw.azure",
    "burstgpt": "raw.burstgpt",
    "vidur": "raw.vidur",
    "mooncake": "raw.mooncake",
    "otel": "raw.otel",
    "castillo": "raw.castillo",
    "alpaca-eval": "raw.alpaca_eval",
    "dolly": "raw.dolly",
    "canonical": "raw.canonical",
}


@dataclass(frozen=True)
class FileReport:
    """The outcome of one file in a load: ``status`` is ``loaded``, ``duplicate`` or ``skipped``.

    A skipped file has a ``reason`` (one line: what is wrong with it) and zero counts; its
    ``format`` is the forced or detected one, ``unknown`` when detection failed.
    """

    path: str
    format: str
    source: str
    status: str
    content_hash: str
    rows_read: int
    ingested: int
    quarantined: int
    duplicates_skipped: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IngestReport:
    """The outcome of one load (one ``ingest`` call): totals are sums over ``files``."""

    warehouse: str
    load_id: str
    files: tuple[FileReport, ...] = field(default_factory=tuple)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def ingested(self) -> int:
        return sum(f.ingested for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    @property
    def duplicates_skipped(self) -> int:
        return sum(f.duplicates_skipped for f in self.files)

    def count(self, status: str) -> int:
        """How many files of the load have ``status`` (``loaded``, ``duplicate`` or ``skipped``)."""
        return sum(f.status == status for f in self.files)

    @property
    def skipped(self) -> tuple[FileReport, ...]:
        """The files skipped as unreadable, with their reasons."""
        return tuple(f for f in self.files if f.status == "skipped")

    def to_dict(self) -> dict[str, Any]:
        """The ``loadwise ingest --json`` object."""
        return {
            "rows_read": self.rows_read,
            "ingested": self.ingested,
            "quarantined": self.quarantined,
            "duplicates_skipped": self.duplicates_skipped,
            "files_loaded": self.count("loaded"),
            "files_duplicate": self.count("duplicate"),
            "files_skipped": self.count("skipped"),
            "warehouse": self.warehouse,
            "load_id": self.load_id,
            "files": [f.to_dict() for f in self.files],
        }

    def summary(self) -> str:
        """One line (plus one per skipped file): the reconciliation an operator wants to see."""
        line = (
            f"{len(self.files)} file(s): {self.count('loaded')} loaded, {self.count('duplicate')} duplicate, "
            f"{self.count('skipped')} skipped; {self.rows_read} rows read = {self.ingested} ingested + "
            f"{self.quarantined} quarantined; {self.duplicates_skipped} rows in duplicate files skipped"
        )
        return "\n".join([line, *(f"skipped {f.path}: {f.reason}" for f in self.skipped)])


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, plus the data files (by suffix, not hidden) under directories named, sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            out.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in TEXT_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                    and not p.name.lower().startswith(("readme", "missing_files", "license"))
                )
            )
        elif path.exists():
            out.append(path)
        else:
            raise UnreadableFileError(f"{path}: no such file or directory")
    return [p.resolve() for p in out]


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of the file's bytes (hex): the idempotency key of the file registry."""
    return scan_file(path, text=False, chunk=chunk).content_hash


def _q(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


_LINES = (
    "read_csv({path}, columns={{'text': 'VARCHAR'}}, delim=chr(0), quote='', escape='', "
    "header=false, auto_detect=false, strict_mode=false, new_line='\\r\\n')"
)


@dataclass(frozen=True)
class _Planned:
    path: Path
    detected: Detected
    scan: FileScan
    source: str

    @property
    def content_hash(self) -> str:
        return self.scan.content_hash


class _Registered:
    """Arrow streams registered on the connection for one statement, unregistered on exit."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.names: list[str] = []

    def add(self, name: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> str:
        self.con.register(name, pa.RecordBatchReader.from_batches(schema, batches))
        self.names.append(name)
        return name

    def __enter__(self) -> _Registered:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            self.con.unregister(name)


def _line_source(item: _Planned, reg: _Registered) -> str:
    """A SELECT of ``(n, text, parse_error)``, one row per line of the file (``warehouse.lines``).

    DuckDB's CSV scan when the scan found nothing it misreads (the fast path; it reads an empty line
    as NULL, made '' as the Python reader gives); else the Python line reader, streamed as Arrow
    batches.
    """
    if item.scan.duckdb_safe:
        return (
            "SELECT row_number() OVER () AS n, coalesce(text, '') AS text, NULL::VARCHAR AS parse_error "
            f"FROM {_LINES.format(path=_q(str(item.path)))}"
        )
    reg.add("_line_stream", LINES_SCHEMA, read_lines(item.path))
    return "SELECT n, text, parse_error FROM _line_stream"


def _json_record_error(fields: Sequence[str]) -> str:
    """SQL: the parse_error of a JSON record ``text`` whose object is ``j`` (NULL when readable)."""
    not_string = " ".join(
        f"WHEN coalesce(json_type(j, '$.{c}'), 'NULL') NOT IN ('VARCHAR', 'NULL') "
        f"THEN 'invalid_record: {c} is not a string'"
        for c in fields
    )
    return (
        "CASE WHEN parse_error IS NOT NULL THEN parse_error "
        "WHEN staging.is_blank(text) THEN 'empty_line' "
        f"WHEN j IS NULL THEN 'invalid_json' {not_string} END"
    )


def _json_records(source: str) -> str:
    """Wrap a ``(n, text, parse_error)`` SELECT with ``j``: the text as a JSON object, else NULL."""
    return (
        "SELECT n, text, parse_error, CASE WHEN parse_error IS NULL AND json_valid(text) "
        f"AND json_type(text) = 'OBJECT' THEN text::JSON END AS j FROM ({source})"
    )


def _parquet_types(path: Path) -> dict[str, pa.DataType]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise UnreadableFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    return {f.name: f.type for f in schema}


def _as_text(column: str, types: dict[str, pa.DataType], *, as_list: bool = False) -> str:
    """SQL: a Parquet column as text (``as_list``: as a list of text), NULL when absent.

    TRY_CAST never fails, whatever the column's type: a NaN double becomes 'nan', a string stays
    itself, and staging decides. A list column kept as a list (or JSON text) so that an element
    holding a comma is never split.
    """
    if column not in types:
        return "NULL"
    if as_list:
        return f'TRY_CAST("{column}" AS VARCHAR[])'
    if pa.types.is_list(types[column]) or pa.types.is_large_list(types[column]):
        return f'to_json("{column}")::VARCHAR'
    return f'TRY_CAST("{column}" AS VARCHAR)'


def _open_lines(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int, reg: _Registered) -> None:
    """Make ``_lines``: the lines of a line-format file, in line order, with the file's constants
    (``file_id, line, text, parse_error, field_pos, n_fields, task``: what ``staging.stg_<format>_lines``
    reads; ``staging.sql``).

    The source file is the raw layer of the line formats: nothing of it is copied to disk. When
    DuckDB's scan reads the file right (``FileScan.duckdb_safe``), ``_lines`` is a temporary view
    over the file (staging reads it once; the quarantine reads it again only when some line was
    rejected, for the rejected lines' text); else the Python line reader's lines are held in a
    temporary table (in memory, spilling to DuckDB's temporary directory).
    """
    source = _line_source(item, reg)
    # The table of the Python reader's lines is written in line order (ORDER BY): the staging macro's
    # time_backwards running max reads it in that order. The view's lines come in file order already.
    kind, order = ("VIEW", "") if item.scan.duckdb_safe else ("TABLE", " ORDER BY line")
    con.execute(
        f"CREATE OR REPLACE TEMP {kind} _lines AS SELECT {file_id}::INTEGER AS file_id, n AS line, text, "
        f"parse_error, {_line_constants(item)} FROM ({source}){order}"
    )


def _line_constants(item: _Planned) -> str:
    """SQL: the file's constants that a line format's staging macro reads on every line
    (``field_pos, n_fields, task``)."""
    field_pos, n_fields = _field_pos(item.detected)
    positions = "NULL" if field_pos is None else "[" + ", ".join(map(str, field_pos)) + "]"
    task = task_from_filename(item.path)
    fields = "NULL" if n_fields is None else str(n_fields)
    return (
        f"{positions}::INTEGER[] AS field_pos, {fields}::INTEGER AS n_fields, "
        f"{'NULL' if task is None else _q(task)}::VARCHAR AS task"
    )


def _load_raw(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int) -> None:
    """Copy the file's records into its ``raw`` table (DuckDB reads the file, or a Python reader
    streams Arrow batches: OTel, the canonical CSV, text files DuckDB would misread); for the line
    formats, only open the file's lines as ``_lines`` (``_open_lines``)."""
    path, det = item.path, item.detected
    p = _q(str(path))
    table = RAW_TABLE[det.format]
    fmt = det.format
    with _Registered(con) as reg:
        if fmt in LINE_FORMATS:
            _open_lines(con, item, file_id, reg)
        elif fmt == "otel":
            from warehouse.otel import SCHEMA, read_otel

            batches = read_otel(path, det.container)
            first = next(batches, None)  # a whole-document problem raises here, outside DuckDB
            reg.add("_otel_batches", SCHEMA, _chain(first, batches))
            cols = ", ".join(SCHEMA.names)
            con.execute(f"INSERT INTO raw.otel (file_id, {cols}) SELECT {file_id}, {cols} FROM _otel_batches")
        elif fmt in ("castillo", "alpaca-eval"):
            types = _parquet_types(path)
            wanted = {
                "castillo": (
                    "sample_id", "prompt_id", "model", "dataset", "category", "prompt_text",
                    "input_size", "output_sizes", "split",
                ),
                "alpaca-eval": (
                    "idx", "generator", "dataset", "instruction", "instruction_tokens_llama2",
                    "output_tokens_llama2",
                ),
            }[fmt]  # fmt: skip
            select = ", ".join(_as_text(c, types, as_list=c == "output_sizes") for c in wanted)
            con.execute(
                f"INSERT INTO {table} (file_id, line, {', '.join(wanted)}) "
                f"SELECT {file_id}, file_row_number + 1, {select} "
                f"FROM read_parquet({p}, file_row_number=true)"
            )
        elif fmt == "dolly":
            fields = ("instruction", "context", "response", "category")
            if det.container == "jsonl":
                source = _line_source(item, reg)
            else:  # a JSON array: one row per element, as JSON (a non-object element is a bad row)
                source = (
                    "SELECT row_number() OVER () AS n, coalesce(json::VARCHAR, 'null') AS text, "
                    f"NULL::VARCHAR AS parse_error FROM read_json({p}, format='array', records=false, "
                    "columns={'json': 'JSON'})"
                )
            values = ", ".join(f"j ->> '{c}'" for c in fields)
            con.execute(
                f"INSERT INTO raw.dolly (file_id, line, text, parse_error, {', '.join(fields)}) "
                f"SELECT {file_id}, n, text, {_json_record_error(fields)}, {values} "
                f"FROM ({_json_records(source)})"
            )
        elif fmt == "canonical":
            cols = ", ".join(CANONICAL_COLUMNS)
            if det.container == "parquet":
                types = _parquet_types(path)
                select = ", ".join(_as_text(c, types) for c in CANONICAL_COLUMNS)
                con.execute(
                    f"INSERT INTO raw.canonical (file_id, line, text, {cols}) SELECT {file_id}, "
                    f"file_row_number + 1, NULL, {select} FROM read_parquet({p}, file_row_number=true)"
                )
            elif det.container == "csv":
                reg.add("_canonical_csv", CANONICAL_CSV_SCHEMA, read_canonical_csv(path, item.scan))
                con.execute(
                    f"INSERT INTO raw.canonical (file_id, line, text, parse_error, {cols}) "
                    f"SELECT {file_id}, n, text, parse_error, {cols} FROM _canonical_csv"
                )
            else:
                values = ", ".join(
                    "nullif((j -> 'prefix_hash_ids')::VARCHAR, 'null')"
                    if c == "prefix_hash_ids"
                    else f"j ->> '{c}'"
                    for c in CANONICAL_COLUMNS
                )
                con.execute(
                    f"INSERT INTO raw.canonical (file_id, line, text, parse_error, {cols}) "
                    f"SELECT {file_id}, n, coalesce(text, ''), {_json_record_error(())}, {values} "
                    f"FROM ({_json_records(_line_source(item, reg))})"
                )
        else:  # pragma: no cover - FORMATS and RAW_TABLE are kept in step by a test
            raise WarehouseError(f"no reader for format {fmt}")


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if first is not None:
        yield first
        yield from rest


CANONICAL_CSV_SCHEMA = pa.schema(
    [pa.field("n", pa.int64()), pa.field("text", pa.string()), pa.field("parse_error", pa.string())]
    + [pa.field(c, pa.string()) for c in CANONICAL_COLUMNS]
)


def read_canonical_csv(path: Path, scan: FileScan, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The records of a canonical CSV file (standard quoting, quoted fields may span lines).

    Python's ``csv`` module in strict mode, not DuckDB's sniffer, so that a short, long, quoted or
    blank record, or a byte that is not UTF-8, is one quarantined row instead of a refused file.
    Columns ``n`` (the line the record starts on, same line rules as ``warehouse.lines``), ``text``
    (the record as written, without its final line break), ``parse_error`` (``empty_line``,
    ``field_count: expected N, got M``, ``csv_error: ...``, ``invalid_utf8``, ``nul_byte``) and the
    canonical columns named in the header (text; an empty field is NULL). Unknown columns are
    ignored.
    """
    csv.field_size_limit(MAX_LINE_BYTES)  # the default (128 KiB) would refuse long prompt texts
    consumed: list[str] = []
    out: dict[str, list[Any]] = {name: [] for name in CANONICAL_CSV_SCHEMA.names}

    def batch() -> pa.RecordBatch:
        result = pa.RecordBatch.from_pydict(out, schema=CANONICAL_CSV_SCHEMA)
        for values in out.values():
            values.clear()
        return result

    def physical(handle: Iterable[str]) -> Iterator[str]:
        for text in handle:
            consumed.append(text)
            yield text

    def add(n: int, text: str, error: str | None, values: dict[str, str | None]) -> None:
        out["n"].append(n)
        out["text"].append(text)
        out["parse_error"].append(error)
        for c in CANONICAL_COLUMNS:
            out[c].append(values.get(c))

    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.reader(physical(handle), strict=True)
            try:
                header = [_norm_name(h) for h in next(reader)]
            except (StopIteration, csv.Error):
                return
            index = {name: i for i, name in reversed(list(enumerate(header))) if name in CANONICAL_COLUMNS}
            consumed.clear()
            last_line = reader.line_num
            while True:
                start = last_line + 1
                error: str | None = None
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    record, error = [], f"csv_error: {exc}"
                last_line = reader.line_num
                text = "".join(consumed)
                consumed.clear()
                text = (
                    text[:-2] if text.endswith("\r\n") else text[:-1] if text[-1:] in ("\r", "\n") else text
                )
                if scan.not_utf8:
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        bad = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                        add(start, bad, "invalid_utf8", {})
                        continue
                if error is None and scan.nul and "\x00" in text:
                    error = "nul_byte"
                if error is None and not record:
                    error = "empty_line"
                if error is None and len(record) != len(header):
                    error = f"field_count: expected {len(header)}, got {len(record)}"
                values = {} if error else {c: (record[i] or None) for c, i in index.items()}
                add(start, text, error, values)
                if len(out["n"]) >= batch_rows:
                    yield batch()
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if out["n"]:
        yield batch()


def _norm_name(name: str) -> str:
    return name.strip().strip('"').strip().lower()


# Line formats (see _load_file): the columns their staging views leave NULL on every row (a test
# checks this), and the staged columns the load keeps (raw_text is raw.<format>.text).
LINE_FORMAT_NULL_COLUMNS = (
    "record_index", "request_id", "source", "trace_id", "prompt_text", "sample_index", "split",
)  # fmt: skip
_LINE_STAGED_COLUMNS = (
    "file_id, line, reject_reason, arrival_abs_s, arrival_ts, prompt_tokens, output_tokens, task, model, "
    "prefix_hash_ids, status"
)
# What the narrow formats stage (their task and status are the file's; see _stage_lines).
_NARROW_STAGED_COLUMNS = (
    "file_id, line, reject_reason, arrival_abs_s, arrival_ts, prompt_tokens, output_tokens"
)


def _field_pos(det: Detected) -> tuple[list[int] | None, int | None]:
    fields = CSV_FIELDS.get(det.format)
    if fields is None or det.container != "csv":
        return None, None
    return [det.header.index(f) + 1 for f in fields], len(det.header)


def _skipped(path: Path, fmt: str, source: str | None, reason: str, content_hash: str = "") -> FileReport:
    return FileReport(str(path), fmt, source or fmt, "skipped", content_hash, 0, 0, 0, 0, reason)


def _reason(path: Path, exc: BaseException) -> str:
    """One line: the error's message without the path it starts with (the report names the file)."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def plan(paths: Sequence[Path], fmt: str = "auto", source: str | None = None) -> list[_Planned | FileReport]:
    """Detect, hash and scan every file before anything is written (one read of each file).

    A file that cannot be detected or read becomes a ``skipped`` ``FileReport`` with the reason; the
    others are planned for loading.
    """
    out: list[_Planned | FileReport] = []
    for path in paths:
        try:
            det = detect(path, fmt)
            scan = scan_file(path, text=det.container != "parquet", csv=det.format in CSV_FIELDS)
        except WarehouseError as exc:
            out.append(_skipped(path, fmt if fmt != "auto" else "unknown", source, _reason(path, exc)))
            continue
        out.append(_Planned(path, det, scan, source or det.format))
    return out


class _NothingNew(Exception):
    """Raised inside the write session when no file was loaded: discard the copy, publish nothing."""


def ingest(
    paths: Iterable[str | os.PathLike[str]],
    *,
    warehouse: str | os.PathLike[str] | None = None,
    fmt: str = "auto",
    source: str | None = None,
    on_file: Callable[[FileReport], None] | None = None,
) -> IngestReport:
    """Ingest ``paths`` (files or directories) in one atomic, idempotent load; see the module doc.

    ``fmt`` forces a format (else detected per file); ``source`` overrides the source label (else the
    format name). ``on_file`` is called after each file is staged (or found a duplicate, or
    skipped), before the publish (progress reporting; tests use it to kill a load mid-way). Raises
    ``WarehouseError`` subclasses: ``NoFileLoadedError`` when every file was skipped,
    ``DataCheckError`` when a post-load check fails.
    """
    if fmt not in FORMAT_CHOICES:  # a usage error, not a problem of each file
        raise UnknownFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_CHOICES)}")
    files = expand_paths(paths)
    if not files:
        raise UnreadableFileError("no data files found in the given paths")
    db_path = resolve_path(warehouse)
    started = datetime.now(UTC)
    # The published registry is read (DuckDB, GIL released) while the files are hashed and scanned.
    with ThreadPoolExecutor(1) as pool:
        registry = pool.submit(_known_hashes, db_path)
        entries = plan(files, fmt, source)
        planned = [e for e in entries if isinstance(e, _Planned)]
        if not planned:  # the registry's answer (or its error: a bad target) does not matter
            registry.cancel()
            with contextlib.suppress(Exception):
                registry.result()
            raise NoFileLoadedError([(f.path, f.reason or "") for f in entries if isinstance(f, FileReport)])
        known_before = registry.result()
    load_id = uuid.uuid4().hex
    if known_before is not None and all(item.content_hash in known_before for item in planned):
        # Nothing new: report the duplicates without copying or republishing the warehouse.
        return IngestReport(
            str(db_path),
            load_id,
            tuple(e if isinstance(e, FileReport) else _duplicate(e, known_before) for e in entries),
        )
    reports: list[FileReport] = []
    try:
        with write_session(db_path) as con:
            known = {
                h: int(n or 0)
                for h, n in con.execute("SELECT content_hash, rows_read FROM raw.files").fetchall()
            }
            next_id = int(con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM raw.files").fetchall()[0][0])
            for entry in entries:
                if isinstance(entry, FileReport):
                    report = entry
                elif entry.content_hash in known:
                    report = _duplicate(entry, known)
                else:
                    report = _load_file(con, entry, next_id, load_id)
                    if report.status == "loaded":
                        known[entry.content_hash] = report.rows_read
                        next_id += 1
                reports.append(report)
                if on_file is not None:
                    on_file(report)
            if not any(r.status == "loaded" for r in reports):
                raise _NothingNew
            failures = checks.failed(checks.run_checks(con))
            if failures:
                raise DataCheckError(failures)
            result = IngestReport(str(db_path), load_id, tuple(reports))
            con.execute(
                "INSERT INTO raw.load_log (load_id, started_at, finished_at, files_loaded, files_duplicate, "
                "rows_read, ingested, quarantined, duplicates_skipped, files_skipped) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    load_id, started, datetime.now(UTC), result.count("loaded"), result.count("duplicate"),
                    result.rows_read, result.ingested, result.quarantined, result.duplicates_skipped,
                    result.count("skipped"),
                ],
            )  # fmt: skip
    except _NothingNew:
        result = IngestReport(str(db_path), load_id, tuple(reports))
        if not result.count("duplicate"):
            raise NoFileLoadedError([(f.path, f.reason or "") for f in result.files]) from None
    return result


def _duplicate(item: _Planned, known: dict[str, int]) -> FileReport:
    return FileReport(
        str(item.path), item.detected.format, item.source, "duplicate",
        item.content_hash, 0, 0, 0, known[item.content_hash],
    )  # fmt: skip


def _known_hashes(db_path: Path) -> dict[str, int] | None:
    """Content hash → rows_read of the published registry (None when there is no warehouse yet)."""
    if not db_path.exists():
        return None
    from warehouse.store import connect_readonly

    con = connect_readonly(db_path)
    try:
        if not con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = 'files'"
        ).fetchone()[0]:  # type: ignore[index]
            return None
        return {
            h: int(n or 0) for h, n in con.execute("SELECT content_hash, rows_read FROM raw.files").fetchall()
        }
    finally:
        con.close()


_FILE_TABLES = (
    "raw.quarantine", "marts.trace_requests", "marts.trace_requests_timed", "marts.trace_requests_labelled",
    "marts.requests_stored", "raw.files",
)  # fmt: skip


def _discard(con: duckdb.DuckDBPyConnection, file_id: int, fmt: str) -> None:
    """Remove whatever a file that is being skipped left in the session's copy."""
    for table in (RAW_TABLE[fmt], *_FILE_TABLES):
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])
    _drop_temporaries(con)


def _load_file(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int, load_id: str) -> FileReport:
    """Read, stage, quarantine and append one file (inside the caller's write session).

    A file DuckDB or its reader cannot read (a Parquet file that is not one, a JSON document that
    does not parse...) is discarded and returned as ``skipped`` with the reason; the session goes on.
    """
    det, path = item.detected, item.path
    try:
        _load_raw(con, item, file_id)
    except (duckdb.Error, WarehouseError) as exc:  # the file's problem: skip it, keep the load
        _discard(con, file_id, det.format)
        return _skipped(path, det.format, item.source, f"cannot read as {det.format}: {_reason(path, exc)}")
    try:
        return _stage(con, item, file_id, load_id)
    except duckdb.Error as exc:
        _discard(con, file_id, det.format)
        return _skipped(path, det.format, item.source, f"cannot stage as {det.format}: {_reason(path, exc)}")


def _stage(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int, load_id: str) -> FileReport:
    det, path = item.detected, item.path
    trace_id = f"{item.source}/{path.stem}/{item.content_hash[:12]}"
    task = task_from_filename(path) if det.format in LINE_FORMATS else None
    field_pos, n_fields = _field_pos(det)
    id_prefix = f"{item.source}:{item.content_hash[:16]}:"
    con.execute(
        "INSERT INTO raw.files (file_id, content_hash, path, format, source, task, trace_id, field_pos, "
        "n_fields, size_bytes, load_id, ingested_at, id_prefix) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            file_id, item.content_hash, str(path), det.format, item.source, task, trace_id,
            field_pos, n_fields, item.scan.size_bytes, load_id, datetime.now(UTC), id_prefix,
        ],
    )  # fmt: skip
    if det.format in LINE_FORMATS:
        return _stage_lines(con, item, file_id)
    view = "staging.stg_" + det.format.replace("-", "_")
    prefix = _q(id_prefix)
    request_id = f"coalesce(request_id, {prefix} || line || coalesce(':' || record_index, ''))"
    src, trace = f"coalesce(source, {_q(item.source)})", f"coalesce(trace_id, {_q(trace_id)})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _staged AS SELECT * FROM {view} WHERE file_id = {file_id}")
    if det.format == "canonical":
        # Canonical files bring their own request ids: the first row with an id wins, a later row
        # (in this file, or an id already in the warehouse) is quarantined, not a failed load.
        con.execute(
            """
            UPDATE _staged SET reject_reason = 'duplicate_request_id'
            FROM (
                SELECT line, row_number() OVER (PARTITION BY request_id ORDER BY line) AS k,
                       request_id IN (SELECT request_id FROM marts.requests) AS known
                FROM _staged WHERE reject_reason IS NULL AND request_id IS NOT NULL
            ) AS d
            WHERE _staged.line = d.line AND (d.k > 1 OR d.known)
            """
        )
    con.execute(
        "INSERT INTO raw.quarantine SELECT file_id, ?, line, record_index, raw_text, reject_reason "
        "FROM _staged WHERE reject_reason IS NOT NULL",
        [str(path)],
    )
    # Trace start = the first accepted arrival of the file (one scalar, not a window over the rows;
    # accepted arrivals are non-decreasing, so it is also their minimum).
    (start,) = con.execute("SELECT min(arrival_abs_s) FROM _staged WHERE reject_reason IS NULL").fetchall()[0]
    start_s = float(start) if start is not None else 0.0
    arrival = "arrival_abs_s" if det.format == "canonical" else f"arrival_abs_s - {start_s!r}::DOUBLE"
    con.execute(
        f"""
        INSERT INTO marts.requests_stored
        SELECT {request_id}, {src}, {trace}, {arrival}, prompt_tokens, output_tokens, task, model,
               prompt_text, prefix_hash_ids, status, sample_index, split, arrival_ts,
               {_q(det.format)}, file_id, line
        FROM _staged WHERE reject_reason IS NULL
        """
    )
    rows_read, ingested = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reject_reason IS NULL) FROM _staged"
    ).fetchall()[0]
    return _finish(con, item, file_id, rows_read, ingested)


# time_backwards on the staged rows of a line format (staging.sql): a row that passes every other
# check is rejected when its order_key is below that of an accepted row on an earlier line, which is
# when it is below the running max of the valid rows before it (the argument is in staging.sql).
# _NOT_PROVED_FORWARD is 0 when, read in storage order, the valid rows have increasing lines and
# non-decreasing keys: then no row goes backwards, whatever order the scan used (one streaming lag
# pass, ~0.01 s per 1 M rows). Otherwise _TIME_BACKWARDS computes the running max ordered by line
# (the streaming running max that staging.stg_<format>_lines uses cost ~0.2 s per 1 M rows on every
# load). tests/warehouse/test_hostile_input.py compares the load with the sequential definition.
_NOT_PROVED_FORWARD = (
    "SELECT count(*) FILTER (WHERE k < pk OR line <= pl) FROM (SELECT order_key AS k, line, "
    "lag(order_key) OVER () AS pk, lag(line) OVER () AS pl FROM _staged WHERE reject_reason IS NULL)"
)
_TIME_BACKWARDS = (
    "UPDATE _staged SET reject_reason = 'time_backwards' FROM (SELECT line, order_key < max(order_key) "
    "OVER (ORDER BY line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS back "
    "FROM _staged WHERE reject_reason IS NULL) AS w WHERE _staged.line = w.line AND w.back"
)


def add_time_backwards(con: duckdb.DuckDBPyConnection) -> None:
    """Reject as ``time_backwards`` the rows of the temporary table ``_staged`` (``line``,
    ``reject_reason``, ``order_key``: a line format's ``staging.stg_<format>_rows``) that go back in
    time; called once per line-format file by ``_stage_lines`` (and by the tests)."""
    if con.execute(_NOT_PROVED_FORWARD).fetchall()[0][0]:
        if _temporary(con, "_staged", "VIEW"):  # the fast path's rows, numbered by a view: made a table
            con.execute("CREATE OR REPLACE TEMP TABLE _staged_rows AS SELECT * FROM _staged")
            con.execute("DROP VIEW _staged")
            con.execute("ALTER TABLE _staged_rows RENAME TO _staged")
        con.execute(_TIME_BACKWARDS)


def _stage_lines(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int) -> FileReport:
    """Stage a line-format file (a CSV trace file by DuckDB's parallel reader when ``_stage_fast``
    can, else from ``_lines``, ``_open_lines``); append its narrow rows.

    The staged rows leave out the line text and the columns the format's staging macro leaves NULL
    (``LINE_FORMAT_NULL_COLUMNS``): the text is not carried through the ``time_backwards`` window nor
    copied into the temporary table. Rejected lines get their text from ``_lines`` (for a file read
    by DuckDB: a second scan of the file, only when a line was rejected). The narrow tables get what
    varies per row: ``marts.trace_requests_timed`` (Azure: ``TIMED_FORMATS``; no ``arrival_s``, which
    ``marts.requests`` derives from ``arrival_ts`` and ``raw.files.arrival_origin_s``),
    ``marts.trace_requests`` (Vidur) or ``marts.trace_requests_labelled`` (BurstGPT, Mooncake). The
    file's constants are in ``raw.files``; a task equal to the file's and the status ``ok`` are
    written NULL (``marts.requests`` fills them in; ``marts.sql``).
    """
    det, path = item.detected, item.path
    columns = _NARROW_STAGED_COLUMNS if det.format in NARROW_FORMATS else _LINE_STAGED_COLUMNS
    if not _stage_fast(con, item, file_id, columns):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _staged AS SELECT {columns}, order_key "
            f"FROM staging.stg_{det.format}_rows('_lines')"
        )
    add_time_backwards(con)
    rows_read, ingested, start = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reject_reason IS NULL), "
        "min(arrival_abs_s) FILTER (WHERE reject_reason IS NULL) FROM _staged"
    ).fetchall()[0]
    if rows_read > ingested:
        con.execute(
            "INSERT INTO raw.quarantine SELECT s.file_id, ?, s.line, NULL, l.text, s.reject_reason "
            "FROM _staged AS s JOIN _lines AS l ON l.line = s.line WHERE s.reject_reason IS NOT NULL "
            "ORDER BY s.line",
            [str(path)],
        )
    # Trace start = the first accepted arrival of the file (accepted arrivals are non-decreasing).
    start_s = float(start) if start is not None else 0.0
    arrival = f"arrival_abs_s - {start_s!r}::DOUBLE"
    origin = None
    if det.format in TIMED_FORMATS:  # arrival_s: the same expression, evaluated by marts.requests
        table, select = "marts.trace_requests_timed", "prompt_tokens, output_tokens, arrival_ts"
        origin = start_s
    elif det.format in NARROW_FORMATS:
        table, select = "marts.trace_requests", f"{arrival}, prompt_tokens, output_tokens, arrival_ts"
    else:
        file_task = _q(task_from_filename(path) or "unknown")
        table, select = (
            "marts.trace_requests_labelled",
            f"{arrival}, prompt_tokens, output_tokens, nullif(task, {file_task}), model, "
            "nullif(status, 'ok'), prefix_hash_ids",
        )
    con.execute(
        f"INSERT INTO {table} SELECT file_id, line, {select} FROM _staged WHERE reject_reason IS NULL"
    )
    return _finish(con, item, file_id, rows_read, ingested, arrival_origin_s=origin)


def _fast_csv(item: _Planned) -> bool:
    """Whether a file may take the fast path (``_stage_fast``): a CSV line format whose lines DuckDB's
    scan reads as they are (``FileScan.duckdb_safe``) and that all end the same way (DuckDB's CSV
    reader refuses, or reads nothing of, a file that mixes ``\\n`` and ``\\r\\n``), and no line ends with a
    comma (the reader drops empty fields after the last column: ``FileScan.trailing_comma``)."""
    det, scan = item.detected, item.scan
    return (
        det.format in CSV_FIELDS
        and det.container == "csv"
        and scan.duckdb_safe
        and scan.one_line_ending
        and not scan.trailing_comma
    )


def _csv_fields(item: _Planned, file_id: int) -> str:
    """A SELECT of the file's data lines split by DuckDB's parallel CSV reader, for the format's
    ``staging.stg_<format>_fields`` macro: ``file_id, file_task, f1, f2, ...`` (the header's columns
    at ``field_pos``, as text: no type detection, no quoting, an empty field is '' as in
    ``string_split``). Lines without exactly ``n_fields`` fields are left out (``ignore_errors``);
    blank lines too (DuckDB skips them): ``_stage_fast`` counts and numbers what is left out."""
    field_pos, n_fields = _field_pos(item.detected)
    if field_pos is None or n_fields is None:  # pragma: no cover - _fast_csv: a CSV line format
        raise WarehouseError(f"{item.path}: not a CSV line format")
    names = [f"c{i}" for i in range(1, n_fields + 1)]
    columns = "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in names) + "}"
    fields = ", ".join(f"c{p} AS f{i}" for i, p in enumerate(field_pos, start=1))
    task = task_from_filename(item.path)
    return (
        f"SELECT {file_id}::INTEGER AS file_id, {_q(task)}::VARCHAR AS file_task, {fields} "
        f"FROM read_csv({_q(str(item.path))}, columns={columns}, delim=',', quote='', escape='', "
        "header=true, skip=0, comment='', auto_detect=false, strict_mode=true, ignore_errors=true, "
        f"null_padding=false, force_not_null=[{', '.join(_q(n) for n in names)}])"
    )


# The staged columns that ``_fast`` does not store: the fast path derives them from the columns it
# stores, exactly as the format's ``staging.stg_<format>_fields`` macro defines them (staging.sql: the
# same expression on the same value, so the same result bit for bit). Every stored column costs the
# temporary table's write and the marts insert's read: for an Azure file the 6 staged columns were
# 4 to store (~5-10 % of the staging statement, 1 M rows). tests/warehouse/test_fast_csv.py checks
# each expression against the macro's column.
FAST_DERIVED: dict[str, dict[str, str]] = {
    "azure": {"arrival_abs_s": "epoch_us(arrival_ts) / 1e6", "order_key": "arrival_ts"},
    "vidur": {"arrival_ts": "NULL::TIMESTAMP", "order_key": "arrival_abs_s"},
    "burstgpt": {
        "arrival_ts": "NULL::TIMESTAMP",
        "prefix_hash_ids": "NULL::BIGINT[]",
        "order_key": "arrival_abs_s",
    },
}


def _fast_columns(fmt: str, staged: str) -> tuple[str, str]:
    """SQL column lists for ``_stage_fast``: what ``_fast`` stores of the ``staged`` columns (a
    comma-separated list), and the ``staged`` columns, in order, rebuilt from ``_fast``
    (``FAST_DERIVED``)."""
    derived = FAST_DERIVED[fmt]
    names = [c.strip() for c in staged.split(",")]
    stored = ", ".join(c for c in names if c not in derived)
    rebuilt = ", ".join(f"{derived[c]} AS {c}" if c in derived else c for c in names)
    return stored, rebuilt


def _stage_fast(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int, columns: str) -> bool:
    """Stage a CSV line-format file as ``_staged`` with DuckDB's parallel CSV reader; False (nothing
    staged) when the file must take the line-by-line path (``staging.stg_<format>_rows('_lines')``).

    The line path numbers the lines with ``row_number() OVER ()`` in one thread, and the split,
    casts and checks run in that thread too. Here DuckDB's CSV reader splits the lines on every
    core and the format's ``_fields`` macro casts and checks them (the same macros as the line
    path), into the temporary table ``_fast`` (the columns that ``FAST_DERIVED`` does not rebuild),
    which keeps the rows in file order (insertion order is preserved), so a row's ``rowid`` is its
    rank among the lines the reader kept. The reader keeps exactly the lines with ``n_fields``
    fields; it skips blank lines and lines with another field count, silently. Nothing may be lost,
    so the rows are counted:

    - every data line kept (the file's line count, from the content-hash pass, less the header):
      line = ``rowid + 2``, and ``_staged`` is a view over ``_fast``;
    - else the lines are numbered once by the line path's scan (``_lines``: one thread, only for
      such files), the lines with another comma count are staged by the line path's macro (their
      reasons: ``empty_line``, ``field_count: ...``), the kept rows get the numbers of the other
      lines in order (a positional join), and both go into the table ``_staged``, by line. If the
      kept rows are not exactly the lines with ``n_fields`` fields, the fast path gives up.

    A DuckDB error in the reader (a file it cannot split, e.g. mixed line endings) gives up too.
    """
    if (
        not _fast_csv(item)
        or not con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    ):
        return False  # (without insertion order, rowid would not be the file order)
    fmt = item.detected.format
    staged = columns.removeprefix("file_id, line, ") + ", order_key"
    stored, rebuilt = _fast_columns(fmt, staged)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _fields AS {_csv_fields(item, file_id)}")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _fast AS SELECT {stored} FROM staging.stg_{fmt}_fields('_fields')"
        )
    except duckdb.Error:
        _drop_temporaries(con, ("_fast", "_fields"))
        return False
    kept = int(con.execute("SELECT count(*) FROM _fast").fetchall()[0][0])
    if kept == item.scan.line_count - 1:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _staged AS SELECT {file_id}::INTEGER AS file_id, "
            f"rowid + 2 AS line, {rebuilt} FROM _fast"
        )
        return True
    _, n_fields = _field_pos(item.detected)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _numbered AS SELECT line, ok, CASE WHEN NOT ok THEN text END AS text "
        f"FROM (SELECT line, text, length(text) - length(replace(text, ',', '')) = {n_fields} - 1 AS ok "
        "FROM _lines WHERE line > 1)"
    )
    if int(con.execute("SELECT count(*) FILTER (WHERE ok) FROM _numbered").fetchall()[0][0]) != kept:
        _drop_temporaries(con, ("_numbered", "_fast", "_fields"))
        return False
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _exc_lines AS SELECT {file_id}::INTEGER AS file_id, line, text, "
        f"NULL::VARCHAR AS parse_error, {_line_constants(item)} FROM _numbered WHERE NOT ok"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _staged AS SELECT * FROM ("
        f"SELECT {file_id}::INTEGER AS file_id, n.line, {rebuilt} FROM _fast AS f "
        "POSITIONAL JOIN (SELECT line FROM _numbered WHERE ok) AS n "
        f"UNION ALL BY NAME SELECT {staged} , file_id, line FROM staging.stg_{fmt}_rows('_exc_lines')"
        ") ORDER BY line"
    )
    return True


def _finish(
    con: duckdb.DuckDBPyConnection,
    item: _Planned,
    file_id: int,
    rows_read: int,
    ingested: int,
    *,
    arrival_origin_s: float | None = None,
) -> FileReport:
    """Record the file's counts (and arrival origin, for a timed trace) in ``raw.files``, drop the
    load's temporary tables, report the file."""
    quarantined = rows_read - ingested
    con.execute(
        "UPDATE raw.files SET rows_read = ?, ingested = ?, quarantined = ?, arrival_origin_s = ? "
        "WHERE file_id = ?",
        [rows_read, ingested, quarantined, arrival_origin_s, file_id],
    )
    _drop_temporaries(con)
    return FileReport(
        str(item.path), item.detected.format, item.source, "loaded", item.content_hash,
        rows_read, ingested, quarantined, 0,
    )  # fmt: skip


_TEMPORARIES = ("_staged", "_exc_lines", "_numbered", "_fast", "_fields", "_lines")  # dependents first


def _temporary(con: duckdb.DuckDBPyConnection, name: str, kind: str) -> bool:
    """Whether the connection has a temporary ``kind`` (``TABLE`` or ``VIEW``) called ``name``."""
    sql = (
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?"
        if kind == "TABLE"
        else "SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = ?"
    )
    return bool(con.execute(sql, [name]).fetchall()[0][0])


def _drop_temporaries(con: duckdb.DuckDBPyConnection, names: Sequence[str] = _TEMPORARIES) -> None:
    """Drop the load's temporary tables and views ``names`` (each may be either, or absent), in order."""
    found = dict(
        con.execute(
            "SELECT view_name, 'VIEW' FROM duckdb_views() WHERE temporary "
            "UNION ALL SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE temporary"
        ).fetchall()
    )
    for name in names:
        if name in found:
            con.execute(f"DROP {found[name]} {name}")
