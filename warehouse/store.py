"""Opening the DuckDB warehouse: read-only connections for analysts, copy-on-write sessions for loads.

Concurrency strategy (see docs/warehouse.md, "Concurrency"): DuckDB lets one read-write process
lock out every other process, read-only ones included. So a load never opens the published file
read-write. It copies the published file to a private temporary file next to it, loads into the
copy, runs the data checks, checkpoints and closes it, then ``os.replace``\\ s it over the published
file (atomic on POSIX). Readers open the published file ``read_only=True`` at any time: they see the
old warehouse until the replace and the new one afterwards, never a half-loaded one. A crash or a
kill before the replace leaves the published file untouched (the next load removes the orphaned
temporary file). Loads are serialised by an advisory ``fcntl`` lock on ``<warehouse>.lock``.

Two kinds of read connection: ``connect_readonly`` for the project's own readers (ops, Parquet
export, training data, checks in tests), and ``connect_analyst`` for SQL an analyst types
(``loadwise sql``), which DuckDB itself keeps from reading or writing anything but the warehouse
(see ``ANALYST_CONFIG``). Every opener first checks that the path holds a complete DuckDB database
and refuses anything else with an ``InvalidWarehouseError`` before any file is created.

Called by ``warehouse.ingest`` (write sessions) and by the CLI / analytics code (read connections).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from warehouse import prompt_split, workload_class
from warehouse.errors import (
    InvalidWarehouseError,
    WarehouseBusyError,
    WarehouseMissingError,
    WarehouseNotWritableError,
)
from warehouse.settings import default_warehouse_path

SQL_FILES = ("schema.sql", "staging.sql", "marts.sql", "comments.sql")


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The warehouse file to use: ``path`` when given, else ``default_warehouse_path()``."""
    return Path(path).expanduser().resolve() if path is not None else default_warehouse_path()


def sql_text(name: str) -> str:
    """The text of ``warehouse/sql/<name>`` (package data)."""
    return resources.files("warehouse").joinpath("sql", name).read_text(encoding="utf-8")


def schema_version() -> str:
    """A hash of the SQL: changes whenever the schema, views, macros or comments change."""
    digest = hashlib.sha256(workload_class.SQL.encode())
    digest.update(prompt_split.SQL.encode())
    for name in SQL_FILES:
        digest.update(sql_text(name).encode())
    return digest.hexdigest()[:16]


RENAMED_COLUMNS = (("marts", "eval_results", "run_id", "evaluation_id"),)
"""``(schema, table, old, new)``: columns renamed since a release (DuckDB has no ``RENAME COLUMN IF
EXISTS``, so ``apply_schema`` renames them here, before the SQL files, on warehouses that have the old
name)."""


def _rename_old_columns(con: duckdb.DuckDBPyConnection) -> None:
    for schema, table, old, new in RENAMED_COLUMNS:
        found = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ? AND column_name = ?",
            [schema, table, old],
        ).fetchone()
        if found and found[0]:
            con.execute(f'ALTER TABLE {schema}.{table} RENAME COLUMN "{old}" TO "{new}"')


def _requests_table_to_view(con: duckdb.DuckDBPyConnection) -> None:
    """Warehouses made before ``marts.requests`` was a view have it as a table: its rows (every column
    stored) become ``marts.requests_stored``, which the view presents as they were (``marts.sql``)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'marts' AND table_name = 'requests'"
    ).fetchone()
    if found and found[0]:
        con.execute("ALTER TABLE marts.requests RENAME TO requests_stored")


def _sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


STAGING_TEMPLATE = "stg_canonical"
"""The staging view whose column descriptions (``comments.sql``) every staging view shares."""


def _copy_staging_comments(con: duckdb.DuckDBPyConnection) -> None:
    """Give each staging view's columns the descriptions of ``STAGING_TEMPLATE``'s (the views have
    the same columns: ``staging.sql``), so ``comments.sql`` states each of them once."""
    rows = con.execute(
        "SELECT v.table_name, v.column_name, t.comment FROM duckdb_columns() AS v "
        "JOIN duckdb_columns() AS t ON t.database_name = v.database_name AND t.schema_name = v.schema_name "
        "AND t.table_name = ? AND t.column_name = v.column_name "
        "WHERE v.database_name = current_database() AND v.schema_name = 'staging' AND v.table_name <> ? "
        "AND t.comment IS NOT NULL",
        [STAGING_TEMPLATE, STAGING_TEMPLATE],
    ).fetchall()
    statements = [
        f'COMMENT ON COLUMN staging."{view}"."{column}" IS {_sql_string(str(comment))}'
        for view, column, comment in rows
    ]
    if statements:
        con.execute(";\n".join(statements))


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables (if missing) and (re)create the macros, the staging and marts views and
    comments: first the workload-class macros (``warehouse.workload_class.SQL``) and the prompt-split
    macro (``warehouse.prompt_split.SQL``), then ``SQL_FILES``. Before them, columns renamed since a
    release are renamed (``RENAMED_COLUMNS``); after them, the staging views get their shared column
    descriptions (``_copy_staging_comments``), so every table, view and column has one. A
    ``marts.requests`` table of an older release becomes ``marts.requests_stored`` under the view.

    Skipped when ``raw.schema_version`` already holds this code's ``schema_version()`` (saves
    ~0.7 s per load: the views and ~400 comments are re-created only when the SQL changed).
    """
    version = schema_version()
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = 'schema_version'"
    ).fetchone()
    if (
        exists
        and exists[0]
        and con.execute("SELECT version FROM raw.schema_version").fetchall() == [(version,)]
    ):
        return
    _rename_old_columns(con)
    _requests_table_to_view(con)
    con.execute(workload_class.SQL)
    con.execute(prompt_split.SQL)
    for name in SQL_FILES:
        con.execute(sql_text(name))
    _copy_staging_comments(con)
    con.execute("CREATE OR REPLACE TABLE raw.schema_version AS SELECT ? AS version", [version])
    con.execute(
        "COMMENT ON TABLE raw.schema_version IS "
        "'Hash of the warehouse SQL that made this schema (warehouse.store.schema_version)'"
    )
    con.execute("COMMENT ON COLUMN raw.schema_version.version IS 'The hash (16 hex digits)'")


def _is_lock_error(exc: BaseException) -> bool:
    """DuckDB's 'Could not set lock on file ... Conflicting lock is held' (not "block": a damaged file)."""
    text = str(exc).lower()
    return "set lock on file" in text or "conflicting lock" in text


# DuckDB settings of the analyst's connection (``loadwise sql``). Enforced by the engine, whatever
# the statement: with external access off, COPY ... TO, EXPORT/IMPORT DATABASE, ATTACH, INSTALL and
# every file or URL reader (read_text, read_csv, read_blob, glob, read_parquet('https://...'))
# raise PermissionException; only the warehouse file itself (and DuckDB's own spill folder next to
# it) stays reachable. The configuration lock makes SET / RESET / PRAGMA x = ... raise, so none of
# this can be switched back on. Checked on DuckDB 2.0 by tests/warehouse/test_sql_security.py.
ANALYST_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,  # no stored S3/HTTP credentials in the session
    "python_enable_replacements": False,  # no Python variable of the caller read as a table
    # Exports leave the locked connection as Arrow: keep HUGEINT, UUID, TIME WITH TIME ZONE and BIT
    # as DuckDB types (plain Arrow would turn them into doubles, strings or blobs).
    "arrow_lossless_conversion": True,
    "lock_configuration": True,
}

# The DuckDB storage format: a 4 KiB main header whose bytes 8..11 are the magic "DUCK", two 4 KiB
# database headers, then whole blocks of ``block_size`` bytes (PRAGMA database_size), free ones trimmed.
_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8
_HEADER_BYTES = 3 * 4096


def _check_database_file(file: Path) -> None:
    """Raise ``InvalidWarehouseError`` unless ``file`` (which exists) starts with DuckDB's header.

    Reads 12 bytes; opens nothing in DuckDB and creates no file. Called before every open and before
    a load creates its lock file or copy, so ``--store /etc/passwd`` or a folder is refused untouched.
    """
    if file.is_dir():
        raise InvalidWarehouseError(
            f"{file} is a folder, not a warehouse file: pass the DuckDB file in it, "
            f"e.g. {file / 'warehouse.duckdb'}"
        )
    try:
        with open(file, "rb") as handle:
            head = handle.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError as exc:
        raise InvalidWarehouseError(f"cannot read the warehouse {file}: {exc.strerror or exc}") from None
    if not head:
        raise InvalidWarehouseError(
            f"{file} is empty, not a DuckDB database: delete it or pass another path to start a new warehouse"
        )
    if head[_MAGIC_OFFSET:] != _MAGIC:
        raise InvalidWarehouseError(
            f"{file} is not a DuckDB database (no DuckDB header): pass a warehouse file, or a path that "
            "does not exist yet to create one"
        )


def _damaged(file: Path, reason: str) -> InvalidWarehouseError:
    return InvalidWarehouseError(
        f"{file} is a damaged DuckDB database ({reason}): restore it from a backup, or move it away and "
        "ingest again; nothing was changed"
    )


def _check_complete(con: duckdb.DuckDBPyConnection, file: Path, opened: Path | None = None) -> None:
    """Raise ``InvalidWarehouseError`` when ``file`` cannot hold the blocks its header says are in use.

    A truncated file opens fine and fails later, mid-query or mid-load, on the first missing block;
    this one cheap PRAGMA catches it at open. A healthy file is the headers plus whole blocks, at
    least ``used_blocks`` of them (not ``total_blocks``: DuckDB trims free blocks off the end of the
    file while the header still counts them). ``con`` is a connection to ``opened`` (a load's copy
    of ``file``) or to ``file`` itself.
    """
    row = con.execute("PRAGMA database_size").fetchone()
    if row is None:
        return
    block_size, used_blocks = int(row[2]), int(row[4])
    size = (opened or file).stat().st_size
    if block_size <= 0 or size < _HEADER_BYTES:
        return  # nothing checkpointed yet (an in-memory-sized or brand-new file)
    if (size - _HEADER_BYTES) % block_size:
        raise _damaged(file, f"truncated: {size} bytes is not the headers plus whole {block_size} B blocks")
    if size < _HEADER_BYTES + used_blocks * block_size:
        raise _damaged(file, f"truncated: {size} bytes, but {used_blocks} blocks are in use")


_VERIFIED: dict[Path, tuple[int, int, int, int]] = {}
"""Published files this process found complete (``_check_complete``), with the ``_stat_key`` they had
then: ``_check_write_target`` does not open such a file again while it is unchanged (a load's
registry look-up has just opened it; a second open was ~0.02-0.07 s of every load)."""


def _stat_key(file: Path) -> tuple[int, int, int, int] | None:
    """The file's device, inode, size and modification time [ns] (None when it is gone)."""
    try:
        st = file.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open_published(
    path: str | os.PathLike[str] | None, config: dict[str, Any], retry_s: float
) -> duckdb.DuckDBPyConnection:
    """Open the published warehouse ``read_only`` with ``config``; the shared body of the two openers."""
    file = resolve_path(path)
    if not file.exists():
        raise WarehouseMissingError(f"no warehouse at {file}: run `loadwise ingest PATH...` first")
    _check_database_file(file)
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(file), read_only=True, config=config)
            break
        except duckdb.ConnectionException:
            raise  # same file already open in this process with other settings: a programming error
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise _damaged(file, str(exc).splitlines()[0]) from None
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(f"{file} is locked by another read-write process: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:  # version, serialization or internal errors on a damaged file
            raise _damaged(file, str(exc).splitlines()[0]) from None
    try:
        before = _stat_key(file)
        _check_complete(con, file)
    except BaseException:
        con.close()
        raise
    if before is not None and before == _stat_key(file):
        _VERIFIED[file] = before
    return con


def connect_readonly(
    path: str | os.PathLike[str] | None = None, *, retry_s: float = 5.0
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published warehouse; retries for ``retry_s`` on lock errors.

    For the project's own readers (their SQL is ours, so the session keeps DuckDB's defaults: file
    readers and extensions work). Never hand it SQL from a user: use ``connect_analyst``.
    Lock errors only happen when some other process holds the file read-write (loadwise's own loads
    never do); the retry covers a short publish by such a tool. Raises ``WarehouseMissingError``
    when nothing was ingested yet, ``InvalidWarehouseError`` when the file is not a complete DuckDB
    database, ``WarehouseBusyError`` when the lock outlasts the retry window.
    """
    return _open_published(path, {}, retry_s)


def connect_analyst(
    path: str | os.PathLike[str] | None = None, *, retry_s: float = 5.0
) -> duckdb.DuckDBPyConnection:
    """A read-only, locked-down connection for SQL an analyst types (``loadwise sql``).

    Same file, retries and errors as ``connect_readonly``, plus ``ANALYST_CONFIG``: DuckDB refuses
    any file or URL outside the warehouse, any extension install or load, and any change of settings,
    even for a statement that ``warehouse.query``'s guard would let through. Called by
    ``warehouse.query`` once per ``loadwise sql`` command. The file cannot be opened by the same
    process with ``connect_readonly`` at the same time (DuckDB refuses two configurations of one
    file), which is also what keeps this session from sharing an unlocked one.
    """
    return _open_published(path, ANALYST_CONFIG, retry_s)


@contextmanager
def _load_lock(file: Path, timeout_s: float) -> Iterator[None]:
    """Serialise loads of one warehouse across processes (advisory lock, released on exit or death)."""
    lock_path = file.with_name(file.name + ".lock")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")  # noqa: SIM115 (closed below, after the yield)
    except OSError as exc:
        raise WarehouseNotWritableError(
            f"cannot create the load lock {lock_path}: {exc.strerror or exc}"
        ) from None
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseBusyError(
                        f"another load of {file} is running (lock {lock_path})"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_write_target(file: Path) -> None:
    """Refuse a load whose target is not a complete DuckDB database or whose folder is not writable.

    Runs before the lock file or the copy is created, so a refusal leaves the file system exactly as
    it was (``loadwise compare --store /etc/passwd`` used to leave ``/etc/passwd.lock`` and a
    ``.loading`` copy behind). An existing file is opened read-only once to check it is complete,
    unless another process holds it read-write (the check is then left to the copy, under the lock),
    or this process already found it complete and it is unchanged since (``_VERIFIED``).
    """
    if file.exists() and (file not in _VERIFIED or _VERIFIED[file] != _stat_key(file)):
        # Held read-write by another tool or by this process, or just removed: the copy is checked
        # under the lock instead.
        with contextlib.suppress(WarehouseBusyError, WarehouseMissingError, duckdb.ConnectionException):
            connect_readonly(file, retry_s=0).close()
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WarehouseNotWritableError(f"cannot create the warehouse {file}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WarehouseNotWritableError(
            f"cannot load into {file}: the folder {folder} is not writable (a load writes its lock file "
            "and a private copy next to the warehouse); pick a writable folder or fix its permissions"
        )


def check_write_target(path: str | os.PathLike[str] | None = None) -> Path:
    """``write_session``'s first check, run on its own: callers that write at the end of long work
    (``loadwise run``, ``compare --store``, the nightly flow) refuse a bad target before starting.
    Raises ``InvalidWarehouseError`` / ``WarehouseNotWritableError``; returns the resolved path.
    Creates nothing."""
    file = resolve_path(path)
    _check_write_target(file)
    return file


def _tmp_glob(file: Path) -> str:
    return f".{file.name}.*.loading"


def _remove_db_files(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_copy(file: Path, tmp: Path) -> duckdb.DuckDBPyConnection:
    """Copy the published ``file`` (and a foreign WAL) to ``tmp`` and open the copy read-write.

    Called by ``write_session`` under the load lock. On any failure (disk full, a file that turned
    out to be damaged) the partial copy is removed and a one-line ``WarehouseError`` is raised.
    """
    try:
        if file.exists():
            _check_database_file(file)  # re-checked under the lock: it may have been replaced since
            shutil.copyfile(file, tmp)
            wal = file.with_name(file.name + ".wal")
            if wal.exists():  # left by a foreign read-write process: DuckDB replays it on open
                shutil.copyfile(wal, tmp.with_name(tmp.name + ".wal"))
        con = duckdb.connect(str(tmp))
    except OSError as exc:
        _remove_db_files(tmp)
        raise WarehouseNotWritableError(f"cannot copy {file} to {tmp}: {exc.strerror or exc}") from None
    except duckdb.Error as exc:
        _remove_db_files(tmp)
        raise _damaged(file, str(exc).splitlines()[0]) from None
    except BaseException:
        _remove_db_files(tmp)
        raise
    try:
        if file.exists():
            _check_complete(con, file, tmp)
    except BaseException:
        con.close()
        _remove_db_files(tmp)
        raise
    return con


@contextmanager
def write_session(
    path: str | os.PathLike[str] | None = None, *, lock_timeout_s: float = 600.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a private copy of the warehouse, published on a clean exit.

    The body loads into the yielded connection; when it returns, the copy is checkpointed, closed and
    atomically moved over the published file. When it raises (or the process dies), the copy is
    discarded and the published warehouse is exactly as before. Cost: one file copy per load.
    """
    file = resolve_path(path)
    _check_write_target(file)
    with _load_lock(file, lock_timeout_s):
        for stale in file.parent.glob(_tmp_glob(file)):  # orphans of killed loads (we hold the lock)
            _remove_db_files(stale)
        tmp = file.with_name(f".{file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.loading")
        con = _open_copy(file, tmp)
        published = False
        try:
            apply_schema(con)
            yield con
            con.execute("CHECKPOINT")
            con.close()
            _fsync(tmp)
            os.replace(tmp, file)
            published = True
            dir_fd = os.open(file.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if not published:
                con.close()
                _remove_db_files(tmp)
