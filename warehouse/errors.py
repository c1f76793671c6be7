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
