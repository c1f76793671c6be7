"""Opening the DuckDB warehouse: read-only connections for analysts, copy-on-write sessions for loads.

Concurrency strategy (see docs/warehouse.md, "Concurrency"): DuckDB lets one read-write process
lock out every other process, read-only ones included. So a load never opens the published file
read-write. It copies the published file to a private temporary file next to it, loads into the
copy, runs the data checks, checkpoints and closes it, then ``os.replace``\\ s it over the published
file (atomic on POSIX). Readers open the published file ``read_only=True`` at any time: they see the
old warehouse until the replace and the new one afterwards, never a half-loaded one. A crash or a
kill before the replace leaves the published file untouched (the next load removes the orphaned
temporary file). Loads are serialised by an advisory ``fcntl`` lock on ``<warehouse>.lock``.

Called by ``warehouse.ingest`` (write sessions) and by the CLI / analytics code (read connections).
"""

from __future__ import annotations

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

import duckdb

from warehouse.errors import WarehouseBusyError, WarehouseMissingError
from warehouse.paths import default_warehouse_path

SQL_FILES = ("schema.sql", "staging.sql", "marts.sql", "comments.sql")


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The warehouse file to use: ``path`` when given, else ``default_warehouse_path()``."""
    return Path(path).expanduser().resolve() if path is not None else default_warehouse_path()


def sql_text(name: str) -> str:
    """The text of ``warehouse/sql/<name>`` (package data)."""
    return resources.files("warehouse").joinpath("sql", name).read_text(encoding="utf-8")


def schema_version() -> str:
    """A hash of the SQL files: changes whenever the schema, views or comments change."""
    digest = hashlib.sha256()
    for name in SQL_FILES:
        digest.update(sql_text(name).encode())
    return digest.hexdigest()[:16]


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables (if missing) and (re)create the staging and marts views and comments.

    Skipped when ``raw.schema_version`` already holds this code's ``schema_version()`` (saves
    ~0.3 s per load: the views and ~50 comments are re-created only when the SQL changed).
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
    for name in SQL_FILES:
        con.execute(sql_text(name))
    con.execute("CREATE OR REPLACE TABLE raw.schema_version AS SELECT ? AS version", [version])


def _is_lock_error(exc: BaseException) -> bool:
    return "lock" in str(exc).lower()


def connect_readonly(
    path: str | os.PathLike[str] | None = None, *, retry_s: float = 5.0
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published warehouse; retries for ``retry_s`` on lock errors.

    Lock errors only happen when some other process holds the file read-write (loadwise's own loads
    never do); the retry covers a short publish by such a tool. Raises ``WarehouseMissingError``
    when nothing was ingested yet, ``WarehouseBusyError`` when the lock outlasts the retry window.
    """
    file = resolve_path(path)
    if not file.exists():
        raise WarehouseMissingError(f"no warehouse at {file}: run `loadwise ingest PATH...` first")
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(file), read_only=True)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                if _is_lock_error(exc):
                    raise WarehouseBusyError(
                        f"{file} is locked by another read-write process: {exc}"
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@contextmanager
def _load_lock(file: Path, timeout_s: float) -> Iterator[None]:
    """Serialise loads of one warehouse across processes (advisory lock, released on exit or death)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    lock_path = file.with_name(file.name + ".lock")
    with open(lock_path, "a+") as handle:
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
    with _load_lock(file, lock_timeout_s):
        for stale in file.parent.glob(_tmp_glob(file)):  # orphans of killed loads (we hold the lock)
            _remove_db_files(stale)
        tmp = file.with_name(f".{file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.loading")
        if file.exists():
            shutil.copyfile(file, tmp)
            wal = file.with_name(file.name + ".wal")
            if wal.exists():  # left by a foreign read-write process: DuckDB replays it on open
                shutil.copyfile(wal, tmp.with_name(tmp.name + ".wal"))
        con = duckdb.connect(str(tmp))
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
