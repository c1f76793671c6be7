"""Read-only queries for analysts (``loadwise sql``): statement guard, run, export.

Called by the CLI once per command. The connection is opened ``read_only=True`` (DuckDB then
refuses writes anyway); the guard gives a clearer message first and also refuses statements that
would touch the outside world from a read-only session (ATTACH, COPY, INSTALL/LOAD, SET).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from warehouse.analytics import Table
from warehouse.errors import ReadOnlyQueryError
from warehouse.store import connect_readonly

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_read_only(query: str) -> None:
    """Raise ``ReadOnlyQueryError`` unless ``query`` is one or more SELECT/WITH/DESCRIBE/SHOW/EXPLAIN."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlyQueryError(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if not statements:
        raise ReadOnlyQueryError("empty query")
    for statement in statements:
        if statement.type not in ALLOWED:
            raise ReadOnlyQueryError(
                f"only read-only queries are allowed (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, "
                f"EXPLAIN); got a {statement.type.name} statement"
            )


def run_query(
    query: str, warehouse: str | os.PathLike[str] | None = None, max_rows: int | None = None
) -> Table:
    """Run a read-only ``query`` on the published warehouse; at most ``max_rows`` rows are fetched."""
    check_read_only(query)
    con = connect_readonly(warehouse)
    try:
        cursor = con.execute(query)
        columns = tuple(d[0] for d in cursor.description or ())
        rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows)
        return Table("query", columns, tuple(tuple(r) for r in rows))
    finally:
        con.close()


def export_query(query: str, out: Path, fmt: str, warehouse: str | os.PathLike[str] | None = None) -> int:
    """Write the result of a read-only ``query`` to ``out`` as ``csv`` or ``parquet``; returns rows."""
    check_read_only(query)
    if fmt not in ("csv", "parquet"):
        raise ReadOnlyQueryError(f"export format must be csv or parquet, got {fmt!r}")
    con = connect_readonly(warehouse)
    try:
        relation = con.sql(query)
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            relation.write_csv(str(out), header=True)
        else:
            relation.write_parquet(str(out))
        row = con.sql(query).aggregate("count(*)").fetchall()
        return int(row[0][0])
    finally:
        con.close()
