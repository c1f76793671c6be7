"""Ingest trace files into the warehouse: detect, read into ``raw``, stage, quarantine, publish.

Called by the ``loadwise ingest`` CLI, the ``ingest-traces`` Prefect flow and the pipeline; once per
command, with any number of files. One call is one load: it runs in a copy-on-write session
(``warehouse.store.write_session``), so either every file is published together, with the data
checks passing, or nothing is.

Per file: its SHA-256 content hash is looked up in ``raw.files`` (a known hash is a duplicate: the
file is skipped, ``duplicates_skipped`` counts the rows it held when first ingested); otherwise
DuckDB reads it into ``raw.<format>`` (text formats line by line, so every line has its number and
text), the format's staging view casts and checks each row, rejected rows go to ``raw.quarantine``
with the reason and the source line, and the rest are appended to ``marts.requests``. Per file
``rows_read == ingested + quarantined`` (checked). Rows are counted after the CSV header and, for
CASTILLO, per generation sample (a record whose ``output_sizes`` is missing counts as one row).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from warehouse import checks
from warehouse.errors import DataCheckError, UnreadableFileError, WarehouseError
from warehouse.formats import CANONICAL_COLUMNS, CSV_FIELDS, Detected, detect, task_from_filename
from warehouse.store import resolve_path, write_session

TEXT_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".txt")
LINE_FORMATS = ("azure", "burstgpt", "vidur", "mooncake")
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
    """The outcome of one file in a load. ``status`` is ``loaded`` or ``duplicate``."""

    path: str
    format: str
    source: str
    status: str
    content_hash: str
    rows_read: int
    ingested: int
    quarantined: int
    duplicates_skipped: int

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

    def to_dict(self) -> dict[str, Any]:
        """The ``loadwise ingest --json`` object."""
        return {
            "rows_read": self.rows_read,
            "ingested": self.ingested,
            "quarantined": self.quarantined,
            "duplicates_skipped": self.duplicates_skipped,
            "warehouse": self.warehouse,
            "load_id": self.load_id,
            "files": [f.to_dict() for f in self.files],
        }

    def summary(self) -> str:
        """One line: the reconciliation an operator wants to see."""
        return (
            f"{len(self.files)} file(s): {self.rows_read} rows read = {self.ingested} ingested + "
            f"{self.quarantined} quarantined; {self.duplicates_skipped} rows in duplicate files skipped"
        )


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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _q(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


_DQ = "quote='\"', escape='\"'"  # standard CSV quoting, not sniffed
_LINES = (
    "read_csv({path}, columns={{'text': 'VARCHAR'}}, delim=chr(0), quote='', escape='', "
    "header=false, auto_detect=false, strict_mode=false, new_line='\\r\\n')"
)


def _load_raw(con: duckdb.DuckDBPyConnection, path: Path, file_id: int, det: Detected) -> None:
    """Copy the file's records into its ``raw`` table (DuckDB reads the file; Python streams OTel)."""
    p = _q(str(path))
    table = RAW_TABLE[det.format]
    fmt = det.format
    if fmt in LINE_FORMATS:
        con.execute(
            f"INSERT INTO {table} SELECT {file_id}, row_number() OVER (), text FROM {_LINES.format(path=p)}"
        )
    elif fmt == "otel":
        import pyarrow as pa

        from warehouse.otel import SCHEMA, read_otel

        reader = pa.RecordBatchReader.from_batches(SCHEMA, read_otel(path, det.container))
        cols = ", ".join(SCHEMA.names)
        con.register("_otel_batches", reader)
        try:
            con.execute(f"INSERT INTO raw.otel (file_id, {cols}) SELECT {file_id}, {cols} FROM _otel_batches")
        finally:
            con.unregister("_otel_batches")
    elif fmt in ("castillo", "alpaca-eval"):
        wanted = {
            "castillo": (
                "sample_id",
                "prompt_id",
                "model",
                "dataset",
                "category",
                "prompt_text",
                "input_size",
                "output_sizes",
                "split",
            ),
            "alpaca-eval": (
                "idx",
                "generator",
                "dataset",
                "instruction",
                "instruction_tokens_llama2",
                "output_tokens_llama2",
            ),
        }[fmt]
        from warehouse.formats import parquet_columns

        have = parquet_columns(path)
        select = ", ".join(c if c in have else "NULL" for c in wanted)
        con.execute(
            f"INSERT INTO {table} (file_id, line, {', '.join(wanted)}) "
            f"SELECT {file_id}, file_row_number + 1, {select} FROM read_parquet({p}, file_row_number=true)"
        )
    elif fmt == "dolly":
        fields = ("instruction", "context", "response", "category")
        if det.container == "jsonl":
            extract = ", ".join(
                f"CASE WHEN json_valid(text) THEN json_extract_string(text, '$.{c}') END" for c in fields
            )
            source = f"SELECT row_number() OVER () AS n, text FROM {_LINES.format(path=p)}"
            con.execute(f"INSERT INTO raw.dolly SELECT {file_id}, n, {extract} FROM ({source})")
        else:
            spec = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in fields) + "}"
            con.execute(
                f"INSERT INTO raw.dolly SELECT {file_id}, row_number() OVER (), {', '.join(fields)} "
                f"FROM read_json({p}, format='array', columns={spec})"
            )
    elif fmt == "canonical":
        cols = ", ".join(CANONICAL_COLUMNS)
        if det.container == "parquet":
            from warehouse.formats import parquet_columns

            have = parquet_columns(path)
            select = ", ".join(
                (f"to_json({c})::VARCHAR" if c == "prefix_hash_ids" else f"{c}::VARCHAR")
                if c in have
                else "NULL"
                for c in CANONICAL_COLUMNS
            )
            con.execute(
                f"INSERT INTO raw.canonical (file_id, line, text, {cols}) SELECT {file_id}, "
                f"file_row_number + 1, NULL, {select} FROM read_parquet({p}, file_row_number=true)"
            )
        elif det.container == "csv":
            select = ", ".join(f'"{c}"' if c in det.header else "NULL" for c in CANONICAL_COLUMNS)
            con.execute(
                f"INSERT INTO raw.canonical (file_id, line, text, {cols}) SELECT {file_id}, "
                f"row_number() OVER () + 1, NULL, {select} "
                f"FROM read_csv({p}, all_varchar=true, header=true, delim=',', {_DQ}, normalize_names=false)"
            )
        else:
            extract = ", ".join(
                f"CASE WHEN json_valid(text) AND json_type(text) = 'OBJECT' THEN "
                f"json_extract_string(text, '$.{c}') END"
                if c != "prefix_hash_ids"
                else "CASE WHEN json_valid(text) AND json_type(text) = 'OBJECT' THEN "
                "nullif(json_extract(text, '$.prefix_hash_ids')::VARCHAR, 'null') END"
                for c in CANONICAL_COLUMNS
            )
            con.execute(
                f"INSERT INTO raw.canonical (file_id, line, text, {cols}) SELECT {file_id}, n, "
                f"coalesce(text, ''), {extract} FROM (SELECT row_number() OVER () AS n, text "
                f"FROM {_LINES.format(path=p)})"
            )
    else:  # pragma: no cover - FORMATS and RAW_TABLE are kept in step by a test
        raise WarehouseError(f"no reader for format {fmt}")


# Line formats (see _load_file): the columns their staging views leave NULL on every row (a test
# checks this), and the staged columns the load keeps (raw_text is raw.<format>.text).
LINE_FORMAT_NULL_COLUMNS = (
    "record_index", "request_id", "source", "trace_id", "prompt_text", "sample_index", "split",
)  # fmt: skip
_LINE_STAGED_COLUMNS = (
    "file_id, line, reject_reason, arrival_abs_s, arrival_ts, prompt_tokens, output_tokens, task, model, "
    "prefix_hash_ids, status"
)


def _field_pos(det: Detected) -> tuple[list[int] | None, int | None]:
    fields = CSV_FIELDS.get(det.format)
    if fields is None or det.container != "csv":
        return None, None
    return [det.header.index(f) + 1 for f in fields], len(det.header)


@dataclass(frozen=True)
class _Planned:
    path: Path
    detected: Detected
    content_hash: str
    source: str


def plan(paths: Sequence[Path], fmt: str = "auto", source: str | None = None) -> list[_Planned]:
    """Detect and hash every file before anything is written (a bad file fails the load early)."""
    return [
        _Planned(path, det, content_hash(path), source or det.format)
        for path in paths
        for det in [detect(path, fmt)]
    ]


def _wrap_read_error(path: Path, fmt: str, exc: Exception) -> UnreadableFileError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UnreadableFileError(f"{path}: cannot read as {fmt}: {message}")


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
    format name). ``on_file`` is called after each file is staged, before the publish (progress
    reporting; tests use it to kill a load mid-way). Raises ``WarehouseError`` subclasses.
    """
    files = expand_paths(paths)
    if not files:
        raise UnreadableFileError("no data files found in the given paths")
    planned = plan(files, fmt, source)
    db_path = resolve_path(warehouse)
    load_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    reports: list[FileReport] = []
    known_before = _known_hashes(db_path)
    if known_before is not None and all(item.content_hash in known_before for item in planned):
        # Nothing new: report the duplicates without copying or republishing the warehouse.
        return IngestReport(
            str(db_path),
            load_id,
            tuple(
                FileReport(
                    str(i.path),
                    i.detected.format,
                    i.source,
                    "duplicate",
                    i.content_hash,
                    0,
                    0,
                    0,
                    known_before[i.content_hash],
                )
                for i in planned
            ),
        )
    with write_session(db_path) as con:
        known = {
            h: int(n or 0) for h, n in con.execute("SELECT content_hash, rows_read FROM raw.files").fetchall()
        }
        next_id = int(con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM raw.files").fetchone()[0])  # type: ignore[index]
        for item in planned:
            if item.content_hash in known:
                report = FileReport(
                    str(item.path), item.detected.format, item.source, "duplicate",
                    item.content_hash, 0, 0, 0, known[item.content_hash],
                )  # fmt: skip
            else:
                report = _load_file(con, item, next_id, load_id)
                known[item.content_hash] = report.rows_read
                next_id += 1
            reports.append(report)
            if on_file is not None:
                on_file(report)
        failures = checks.failed(checks.run_checks(con))
        if failures:
            raise DataCheckError(failures)
        result = IngestReport(str(db_path), load_id, tuple(reports))
        con.execute(
            "INSERT INTO raw.load_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                load_id, started, datetime.now(UTC),
                sum(r.status == "loaded" for r in reports), sum(r.status == "duplicate" for r in reports),
                result.rows_read, result.ingested, result.quarantined, result.duplicates_skipped,
            ],
        )  # fmt: skip
    return result


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


def _load_file(con: duckdb.DuckDBPyConnection, item: _Planned, file_id: int, load_id: str) -> FileReport:
    """Read, stage, quarantine and append one file (inside the caller's write session)."""
    det, path = item.detected, item.path
    trace_id = f"{item.source}/{path.stem}/{item.content_hash[:12]}"
    task = task_from_filename(path) if det.format in LINE_FORMATS else None
    field_pos, n_fields = _field_pos(det)
    con.execute(
        "INSERT INTO raw.files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
        [
            file_id, item.content_hash, str(path), det.format, item.source, task, trace_id,
            field_pos, n_fields, path.stat().st_size, load_id, datetime.now(UTC),
        ],
    )  # fmt: skip
    try:
        _load_raw(con, path, file_id, det)
    except duckdb.Error as exc:  # any DuckDB error while scanning the file is the file's problem
        raise _wrap_read_error(path, det.format, exc) from exc
    view = "staging.stg_" + det.format.replace("-", "_")
    prefix = _q(f"{item.source}:{item.content_hash[:16]}:")
    if det.format in LINE_FORMATS:
        # The staged rows of a line format leave out raw_text and the columns its view leaves NULL:
        # the text is not carried through the time_backwards window nor copied into the temporary
        # table (~0.05-0.1 s per 1M lines); rejected lines get their text back from the raw table.
        staged = _LINE_STAGED_COLUMNS
        quarantine = (
            f"SELECT s.file_id, ?, s.line, NULL, r.text, s.reject_reason FROM _staged AS s "
            f"JOIN {RAW_TABLE[det.format]} AS r ON r.file_id = s.file_id AND r.line = s.line "
            f"WHERE s.reject_reason IS NOT NULL AND r.file_id = {file_id} ORDER BY s.line"
        )
        request_id, src, trace = f"{prefix} || line", _q(item.source), _q(trace_id)
        prompt_text = sample_index = split = "NULL"
    else:
        staged = "*"
        quarantine = (
            "SELECT file_id, ?, line, record_index, raw_text, reject_reason FROM _staged "
            "WHERE reject_reason IS NOT NULL"
        )
        request_id = f"coalesce(request_id, {prefix} || line || coalesce(':' || record_index, ''))"
        src, trace = f"coalesce(source, {_q(item.source)})", f"coalesce(trace_id, {_q(trace_id)})"
        prompt_text, sample_index, split = "prompt_text", "sample_index", "split"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _staged AS SELECT {staged} FROM {view} WHERE file_id = {file_id}"
    )
    con.execute(f"INSERT INTO raw.quarantine {quarantine}", [str(path)])
    # Trace start = the first valid arrival of the file (one scalar, not a window over the rows).
    start = con.execute("SELECT min(arrival_abs_s) FROM _staged WHERE reject_reason IS NULL").fetchone()
    start_s = float(start[0]) if start and start[0] is not None else 0.0
    arrival = "arrival_abs_s" if det.format == "canonical" else f"arrival_abs_s - {start_s!r}::DOUBLE"
    con.execute(
        f"""
        INSERT INTO marts.requests
        SELECT {request_id}, {src}, {trace}, {arrival}, prompt_tokens, output_tokens, task, model,
               {prompt_text}, prefix_hash_ids, status, {sample_index}, {split}, arrival_ts,
               {_q(det.format)}, file_id, line
        FROM _staged WHERE reject_reason IS NULL
        """
    )
    rows_read, ingested = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE reject_reason IS NULL) FROM _staged"
    ).fetchone()  # type: ignore[misc]
    quarantined = rows_read - ingested
    con.execute(
        "UPDATE raw.files SET rows_read = ?, ingested = ?, quarantined = ? WHERE file_id = ?",
        [rows_read, ingested, quarantined, file_id],
    )
    con.execute("DROP TABLE _staged")
    return FileReport(
        str(path), det.format, item.source, "loaded", item.content_hash, rows_read, ingested, quarantined, 0
    )
