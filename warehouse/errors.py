"""Typed errors of the warehouse. The CLI prints their message (no traceback) and exits non-zero.

Raised by ``warehouse.formats`` (detection), ``warehouse.ingest`` (loads) and ``warehouse.store``
(opening the DuckDB file). Every message names the file and what was expected.
"""

from __future__ import annotations


class WarehouseError(Exception):
    """Base class: anything the warehouse refuses, with a message fit for an analyst."""


class UnknownFormatError(WarehouseError):
    """A file whose format could not be detected (or is not one of the supported names)."""


class UnreadableFileError(WarehouseError):
    """A file that exists but cannot be read as its format (bad encoding, not JSON, bad header...)."""


class DataCheckError(WarehouseError):
    """A post-load data check failed; the load was rolled back and nothing was published."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("data checks failed, nothing was published: " + "; ".join(failures))
        self.failures = failures


class WarehouseMissingError(WarehouseError):
    """The warehouse file does not exist yet (nothing was ingested)."""


class WarehouseBusyError(WarehouseError):
    """The warehouse file stayed locked by another read-write process past the retry window."""


class ReadOnlyQueryError(WarehouseError):
    """``loadwise sql`` got a statement that is not a read-only query."""


class QueryError(WarehouseError):
    """DuckDB refused or failed an analyst's read-only query (syntax, unknown table, runtime error)."""


class ExportError(WarehouseError):
    """``loadwise sql --out/--csv/--parquet`` refused its output path or could not write it."""


class InvalidWarehouseError(WarehouseError):
    """The warehouse path holds something that is not a readable DuckDB database (a folder, another
    kind of file, a truncated or damaged database). Raised before anything is written."""


class WarehouseNotWritableError(WarehouseError):
    """A load cannot create its lock file and private copy next to the warehouse file."""


class NoFileLoadedError(WarehouseError):
    """Every file of a load was skipped (none loaded, none already known); nothing was published."""

    def __init__(self, skipped: list[tuple[str, str]]) -> None:
        super().__init__(
            "no file could be loaded, nothing was published: "
            + "; ".join(f"{path}: {reason}" for path, reason in skipped)
        )
        self.skipped = skipped
