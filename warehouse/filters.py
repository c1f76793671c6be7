"""Checking a ``where`` filter over ``marts.requests`` before any work is done.

Who calls this: config validators (``NightlyConfig.where``; ``RouterTrainConfig.where`` when the
workload is the warehouse), when a config is read; cached per filter text, so once per process.

A filter is pasted into queries as ``... WHERE status = 'ok' AND ({where})``
(``training.workloads.sources``, ``warehouse.ops``), so it must be exactly one SQL expression: no
second statement, no comment that swallows the closing parenthesis, no ``) UNION SELECT (``. It is
parsed by DuckDB's own expression parser (``duckdb.SQLExpression``) and bound, in that same wrapped
form, against an in-memory database with the warehouse schema (``warehouse.store.apply_schema``), so
a misspelt column, a type error or an aggregate is caught before any warehouse exists. The check's
connection has external access disabled and its configuration locked: checking a config never reads
a file or installs an extension, and a filter that would (``read_text('/etc/passwd')``) is refused.
"""

from __future__ import annotations

import functools

EXAMPLE = "format = 'azure'"


@functools.lru_cache(maxsize=128)
def check_where(where: str) -> str:
    """``where`` when it is one boolean SQL condition over ``marts.requests`` columns.

    Raises ``ValueError`` (one line, with DuckDB's reason) otherwise. Takes ~0.1 s the first time
    for a given text (an in-memory schema), nothing after.
    """
    if not where.strip():
        raise ValueError(f"empty: give a SQL condition over marts.requests such as {EXAMPLE}")
    parse_error = _parse_error(where)
    if parse_error:
        raise ValueError(f"{where!r} is not one SQL expression: {parse_error}")
    kind, bind_error = _bound_type(where)
    if bind_error:
        raise ValueError(f"{where!r} is not a condition over marts.requests: {bind_error}")
    if kind not in ("BOOLEAN", '"NULL"', "NULL"):
        raise ValueError(f"{where!r} is a {kind}, not a condition (BOOLEAN) such as {EXAMPLE}")
    return where


# The two helpers return DuckDB's message instead of raising from inside an ``except`` block: the
# ``ValueError`` then carries no DuckDB exception (``__context__``) whose traceback would keep the
# check's connection alive for as long as the error is kept (a Prefect state, a test report), past
# interpreter exit (nanobind's "leaked instance ... DuckDBPyConnection").
def _parse_error(where: str) -> str | None:
    import duckdb

    try:
        duckdb.SQLExpression(where)
    except Exception as exc:  # ParserException, InvalidInputException (several expressions)
        return _first_line(exc)
    return None


def _bound_type(where: str) -> tuple[str, str | None]:
    """(type of ``where`` bound in the run's wrapped form, None) or ("", DuckDB's reason)."""
    import duckdb

    from warehouse.store import apply_schema

    con = duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        apply_schema(con)
        con.execute("SET lock_configuration = true")
        query = f"SELECT ({where}) AS keep FROM marts.requests WHERE status = 'ok' AND ({where}) LIMIT 0"
        return str(con.sql(query).types[0]), None
    except duckdb.Error as exc:
        return "", _first_line(exc)
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
