"""Read-only queries for analysts (``loadwise sql``): run, export, and a guard for clear messages.

Called by the CLI once per command. The enforcement is DuckDB's, not this module's: every query
runs on ``warehouse.store.connect_analyst`` (``read_only``, external access off, no extension
install or load, configuration locked), so a statement the guard misses still cannot write a file,
read one outside the warehouse, attach a database, load an extension or change a setting. The guard
(``check_read_only``) only gives the common refusals a clearer message first, and maps what DuckDB
refuses to one line (``ReadOnlyQueryError``).

Every output but the ``table`` view is written by DuckDB, never by hand and never by SQL the analyst
types: the result leaves the locked connection once, as Arrow, and a private in-memory DuckDB that
holds only that table writes it (CSV, Parquet, a JSON array or JSON Lines: DuckDB's exact values,
LF line ends). Exports (``--out``, ``--csv``, ``--parquet``) go to a temporary file next to the
target, which is then renamed over it: a failure leaves no file, and the warehouse and its side
files are refused as targets. Stdout (``--format csv|json|jsonl``) gets the bytes of the same writer
(``write_stdout``), so a printed result and an exported one are the same bytes.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import duckdb
import pyarrow as pa

from warehouse.analytics import Table
from warehouse.errors import ExportError, QueryError, ReadOnlyQueryError, WarehouseError
from warehouse.store import connect_analyst, resolve_path

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
EXPORT_FORMATS = ("csv", "parquet", "json", "jsonl")
"""What DuckDB writes: CSV (header, LF), Parquet, a JSON array (one object per line), JSON Lines."""
STDOUT_FORMATS = ("csv", "json", "jsonl")
"""The formats ``loadwise sql`` prints on stdout (Parquet is binary: ``--out`` only)."""
READ_ONLY = (
    "loadwise sql is read-only: reading files, writing, attaching, extensions and settings are disabled"
)
_ALLOWED_TEXT = "SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN of one of these"
_EXPLAIN = re.compile(r"EXPLAIN\b", re.IGNORECASE)
_ANALYZE = re.compile(r"ANALY[SZ]E\b", re.IGNORECASE)


def _skip_blank(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not a space or a comment.

    DuckDB's comments: ``-- to end of line`` and ``/* ... */``, which nest.
    """
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


def _skip_parens(text: str, i: int) -> int | None:
    """The index just past the parenthesised group opening at ``text[i]`` (quotes respected)."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                return None
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _explained(text: str) -> list[duckdb.Statement] | None:
    """The statements that the ``EXPLAIN [ANALYZE] [(options)] ...`` in ``text`` explains.

    None when that cannot be told (the caller refuses then). Only for messages: the engine refuses
    whatever an EXPLAIN ANALYZE would run that is not read-only anyway.
    """
    match = _EXPLAIN.match(text, _skip_blank(text, 0))
    if match is None:
        return None
    i = _skip_blank(text, match.end())
    analyze = _ANALYZE.match(text, i)
    if analyze is not None:
        i = _skip_blank(text, analyze.end())
    if text.startswith("(", i):
        end = _skip_parens(text, i)
        if end is None:
            return None
        i = _skip_blank(text, end)
    try:
        inner = duckdb.extract_statements(text[i:])
    except duckdb.Error:
        return None
    return inner or None


def _article(word: str) -> str:
    return "an" if word[:1] in "AEIOU" else "a"


def _check_statement(statement: duckdb.Statement, inside_explain: bool = False) -> None:
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _explained(statement.query)
        if inner is None:
            raise ReadOnlyQueryError(
                f"cannot tell which statement EXPLAIN explains; EXPLAIN only {_ALLOWED_TEXT}"
            )
        for explained in inner:
            _check_statement(explained, inside_explain=True)
        return
    if kind not in ALLOWED:
        name = kind.name.replace("_", " ")
        where = " inside EXPLAIN (EXPLAIN ANALYZE runs it)" if inside_explain else ""
        raise ReadOnlyQueryError(
            f"only read-only queries are allowed ({_ALLOWED_TEXT}); "
            f"got {_article(name)} {name} statement{where}"
        )


def check_read_only(query: str) -> None:
    """Raise ``ReadOnlyQueryError`` unless every statement of ``query`` is a read-only query.

    Read-only: SELECT / WITH / FROM / DESCRIBE / SHOW / SUMMARIZE, or EXPLAIN [ANALYZE] of one of
    those. Comments, casing and several statements are parsed by DuckDB itself. This is for the
    message only; ``connect_analyst`` enforces it.
    """
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyQueryError(f"cannot parse the query: {_first_line(exc)}") from exc
    if not statements:
        raise ReadOnlyQueryError("empty query")
    for statement in statements:
        _check_statement(statement)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _query_error(exc: duckdb.Error) -> WarehouseError:
    """One line for a DuckDB error on the analyst's query; the engine's refusals get ``READ_ONLY``."""
    line = _first_line(exc)
    refused = isinstance(exc, duckdb.PermissionException) or any(
        marker in line for marker in ("configuration has been locked", "read-only mode")
    )
    return ReadOnlyQueryError(f"{READ_ONLY} ({line})") if refused else QueryError(line)


def run_query(
    query: str, warehouse: str | os.PathLike[str] | None = None, max_rows: int | None = None
) -> Table:
    """Run a read-only ``query`` on the published warehouse; at most ``max_rows`` rows are fetched.

    Raises a ``WarehouseError`` (``ReadOnlyQueryError``, ``QueryError``, or one of the store's) with
    a one-line message; never a DuckDB exception.
    """
    check_read_only(query)
    con = connect_analyst(warehouse)
    try:
        cursor = con.execute(query)
        columns = tuple(d[0] for d in cursor.description or ())
        rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows)
        return Table("query", columns, tuple(tuple(r) for r in rows))
    except duckdb.Error as exc:
        raise _query_error(exc) from exc
    finally:
        con.close()


def fetch_arrow(query: str, warehouse: str | os.PathLike[str] | None = None) -> pa.Table:
    """The whole result of a read-only ``query`` as an Arrow table (run once, on the analyst's connection).

    DuckDB types without a plain Arrow equivalent (HUGEINT, UUID, TIME WITH TIME ZONE, BIT) travel
    as DuckDB's Arrow extension types (``arrow_lossless_conversion``), so an export keeps them.
    """
    check_read_only(query)
    con = connect_analyst(warehouse)
    try:
        relation = con.sql(query)
        if relation is None:
            raise QueryError("the query returned no result to export")
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        raise _query_error(exc) from exc
    finally:
        con.close()


def _protected(file: Path) -> tuple[set[Path], Path, str]:
    """The warehouse ``file``'s own paths: itself and its side files, its spill folder, its load copies."""
    name = file.name
    own = {file, *(file.with_name(name + suffix) for suffix in (".wal", ".lock", ".tmp"))}
    return own, file.with_name(name + ".tmp"), f".{name}.*.loading*"


def _check_target(out: Path, fmt: str, file: Path) -> Path:
    """The resolved path to write ``out`` to; ``ExportError`` when it may not or cannot be written."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"export format must be {', '.join(EXPORT_FORMATS)} (from --format or the file name's "
            f"extension), got {fmt!r}"
        )
    target = out.expanduser().resolve()
    own, spill, copies = _protected(file)
    if (
        target in own
        or spill in target.parents
        or (target.parent == file.parent and fnmatch.fnmatch(target.name, copies))
        or (target.exists() and file.exists() and os.path.samefile(target, file))
    ):
        raise ExportError(
            f"refusing to export to {out}: it is the warehouse {file} or one of its side files; "
            "pick another path"
        )
    if target.is_dir():
        raise ExportError(f"cannot export to {out}: it is a folder; give a file name")
    return target


_COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "parquet": "FORMAT parquet",
    "json": "FORMAT json, ARRAY true",
    "jsonl": "FORMAT json",
}


def _duckdb_write(result: pa.Table, file: Path, fmt: str) -> None:
    """DuckDB's ``COPY`` of ``result`` to ``file`` in ``fmt`` (one of ``EXPORT_FORMATS``).

    The writer is a private in-memory DuckDB holding only ``result``: it can reach no other data.
    Values are DuckDB's own text for each type (doubles round-trip exactly, DECIMAL and HUGEINT
    are numbers in JSON; CSV has a header and LF line ends). Raises ``duckdb.Error`` / ``OSError``.
    """
    with duckdb.connect() as writer:
        writer.register("result", result)
        path = str(file).replace("'", "''")
        writer.execute(f"COPY result TO '{path}' ({_COPY_OPTIONS[fmt]})")


def _write(result: pa.Table, target: Path, fmt: str) -> Path:
    """Write ``result`` to a temporary file next to ``target`` (same extension); returns that file."""
    tmp = target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _duckdb_write(result, tmp, fmt)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, duckdb.Error) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        raise ExportError(f"cannot write {target}: {reason}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def export_query(
    query: str,
    targets: Sequence[tuple[Path, str]],
    warehouse: str | os.PathLike[str] | None = None,
) -> int:
    """Write the result of a read-only ``query`` to each ``(path, format)``; returns its rows.

    Every target is checked before the query runs (format, not the warehouse or its side files,
    not a folder); the query runs once; each file appears complete (temporary file, ``fsync``,
    rename) or not at all, and the files are renamed only once all were written. Formats:
    ``EXPORT_FORMATS``; CSV has a header, Parquet keeps DuckDB's types. Raises ``ExportError`` (or
    the errors of ``run_query``).
    """
    if not targets:
        raise ExportError("no export target given")
    file = resolve_path(warehouse)
    resolved = [(_check_target(Path(out), fmt, file), fmt) for out, fmt in targets]
    if len({target for target, _ in resolved}) != len(resolved):
        raise ExportError("the same file is given twice as an export target")
    result = fetch_arrow(query, warehouse)
    written: list[tuple[Path, Path]] = []
    try:
        for target, fmt in resolved:
            written.append((_write(result, target, fmt), target))
        for tmp, target in written:
            os.replace(tmp, target)
    except OSError as exc:
        raise ExportError(f"cannot write the export: {exc.strerror or exc}") from exc
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    return result.num_rows


def write_stdout(
    query: str, fmt: str, stream: BinaryIO, warehouse: str | os.PathLike[str] | None = None
) -> int:
    """Write the result of a read-only ``query`` to ``stream`` as DuckDB writes ``fmt``; returns its rows.

    ``fmt``: one of ``STDOUT_FORMATS``. Called by ``loadwise sql --format csv|json|jsonl`` once. The
    bytes are those of an export to a file (``export_query``): DuckDB writes a private temporary
    file (removed afterwards), which is copied to ``stream``. Nothing is written to ``stream`` when
    the query or the writer fails. Raises ``ExportError`` (or the errors of ``run_query``).
    """
    if fmt not in STDOUT_FORMATS:
        raise ExportError(f"stdout format must be {', '.join(STDOUT_FORMATS)}, got {fmt!r}")
    result = fetch_arrow(query, warehouse)
    with tempfile.TemporaryDirectory(prefix="loadwise-sql-") as folder:
        file = Path(folder) / f"result.{fmt}"
        try:
            _duckdb_write(result, file, fmt)
        except (OSError, duckdb.Error) as exc:
            raise ExportError(f"cannot write the result as {fmt}: {_first_line(exc)}") from exc
        with file.open("rb") as written:
            shutil.copyfileobj(written, stream)
    stream.flush()
    return result.num_rows
