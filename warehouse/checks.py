"""Data checks run after every load, before publishing (dbt-style: keys, not-null, accepted values).

Called by ``warehouse.ingest.ingest`` inside the write session (a failure raises
``DataCheckError`` and nothing is published) and by ``loadwise check``-style callers on a read-only
connection. Each check is one SQL query counting offending rows over the whole table; for a failing
check a second query names up to ``EXAMPLES`` offending rows by file and line, so the message says
where to look.

Since every row-level problem is quarantined by staging (``warehouse/sql/staging.sql``), a failing
check means a bug or a hand-edited warehouse, not a bad input row.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

EXAMPLES = 3

NOT_NULL = (
    "request_id", "source", "trace_id", "arrival_s", "prompt_tokens", "output_tokens", "task", "status",
    "format", "file_id", "line",
)  # fmt: skip

# Checks on single rows of marts.requests: name -> the condition an offending row meets.
ROW_CHECKS: dict[str, str] = {
    **{f"marts.requests.{c} not null": f"{c} IS NULL" for c in NOT_NULL},
    "marts.requests.status in (ok, failed)": "status NOT IN ('ok', 'failed')",
    "marts.requests.split in (train, validate, test)": "split NOT IN ('train', 'validate', 'test')",
    "marts.requests.prompt_tokens > 0": "prompt_tokens <= 0",
    "marts.requests.output_tokens >= 1 when ok, >= 0 when failed": (
        "output_tokens < CASE WHEN status = 'ok' THEN 1 ELSE 0 END"
    ),
    "marts.requests.arrival_s finite and >= 0": "NOT (arrival_s >= 0 AND isfinite(arrival_s))",
}

# The tables of trace rows under the marts.requests view (marts.sql): (file_id, line) and no id.
TRACE_TABLES = ("marts.trace_requests", "marts.trace_requests_timed", "marts.trace_requests_labelled")
TRACE_ROWS = " UNION ALL ".join(f"SELECT file_id, line FROM {t}" for t in TRACE_TABLES)

# Rows of the four tables under the marts.requests view (marts.sql).
STORED_ROWS = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM {t})" for t in (*TRACE_TABLES, "marts.requests_stored")
)

# ``request_id IS NULL`` counted without building the ids: a trace row's id is
# ``raw.files.id_prefix || line`` (NULL iff the prefix or the line is NULL, or no file matches: the
# view's LEFT JOIN), a stored row's is its own column. Building every id string to test it was ~0.06 s
# of a 1 M-row load. ``run_checks(full=True)`` tests the view's column itself.
REQUEST_ID_NULL_FAST = (
    f"WITH t AS ({TRACE_ROWS}) "
    "SELECT (SELECT count(*) FROM marts.requests_stored WHERE request_id IS NULL) "
    "+ (SELECT count(*) FROM t LEFT JOIN raw.files AS f USING (file_id) "
    "WHERE f.id_prefix IS NULL OR t.line IS NULL)"
)
REQUEST_ID_NOT_NULL = "marts.requests.request_id not null"

# The request-id check but the (file_id, line) uniqueness of the trace rows (TABLE_CHECKS below).
_ID_REST = (
    f"WITH t AS ({TRACE_ROWS}) "
    "SELECT (SELECT count(id_prefix) - count(DISTINCT id_prefix) FROM raw.files) "
    "+ (SELECT count(request_id) - count(DISTINCT request_id) FROM marts.requests_stored) "
    "+ (SELECT count(*) FROM marts.requests_stored AS s "
    "JOIN raw.files AS f ON starts_with(s.request_id, f.id_prefix) "
    "JOIN t ON t.file_id = f.file_id "
    "AND t.line = TRY_CAST(substr(s.request_id, length(f.id_prefix) + 1) AS BIGINT) "
    "AND f.id_prefix || t.line = s.request_id)"
)


def _in_order(table: str) -> str:
    """SQL: 0 when, read in storage order, ``table``'s rows of each file form one block with strictly
    increasing lines (then its (file_id, line) pairs are unique); else a positive count."""
    return (
        "SELECT count(*) FILTER (WHERE pf = file_id AND line <= pl) "
        "+ count(*) FILTER (WHERE pf IS DISTINCT FROM file_id) - count(DISTINCT file_id) "
        f"FROM (SELECT file_id, line, lag(file_id) OVER () AS pf, lag(line) OVER () AS pl FROM {table})"
    )


# A proof, in one streaming pass, that the trace rows' (file_id, line) pairs are unique: each trace
# table holds each file as one block of increasing lines (how a load appends it: the staged rows in
# line order) and no file is in two tables. When it holds (0), the hash of every (file_id, line)
# pair -- 4 s of a 17 s load into a 10 M-row warehouse -- is skipped: the check counts only the rest
# (_ID_REST). When it does not (a hand edit, or an order the proof does not recognise), the exact
# count runs, so the proof never makes a check fail; it only makes a passing one cheap.
TRACE_PAIRS_PROVED_UNIQUE = (
    "SELECT "
    + " + ".join(f"({_in_order(t)})" for t in TRACE_TABLES)
    + " + (SELECT count(*) - count(DISTINCT file_id) FROM ("
    + " UNION ALL ".join(f"SELECT DISTINCT file_id FROM {t}" for t in TRACE_TABLES)
    + "))"
)
REQUEST_ID_UNIQUE = "marts.requests.request_id unique"

# Other checks: name -> (SQL counting offenders, SQL giving (path, line) of some offenders or None).
TABLE_CHECKS: dict[str, tuple[str, str | None]] = {
    # marts.requests is a view (marts.sql): a trace row's id is raw.files.id_prefix || line, so the ids
    # are unique iff (file_id, line) is unique among the trace rows, the prefixes are unique (an id
    # prefix ends with ':' and a line has none, so different prefixes never give the same id), the
    # stored ids are unique, and no stored id equals a trace row's id. Counted on integers and the
    # few stored ids that start with a prefix, instead of building and hashing every id string.
    "marts.requests.request_id unique": (
        f"WITH t AS ({TRACE_ROWS}) "
        "SELECT (SELECT count(*) FROM t) - (SELECT count(*) FROM (SELECT DISTINCT file_id, line FROM t)) "
        f"+ ({_ID_REST})",
        "SELECT f.path, r.line FROM marts.requests AS r LEFT JOIN raw.files AS f USING (file_id) "
        "WHERE r.request_id IN (SELECT request_id FROM marts.requests GROUP BY 1 HAVING count(*) > 1) "
        "ORDER BY r.file_id, r.line",
    ),
    "raw.files rows_read = ingested + quarantined": (
        "SELECT count(*) FROM raw.files WHERE rows_read IS DISTINCT FROM ingested + quarantined",
        "SELECT path, NULL FROM raw.files WHERE rows_read IS DISTINCT FROM ingested + quarantined",
    ),
    "raw.files.file_id unique": (
        "SELECT count(*) - count(DISTINCT file_id) FROM raw.files",
        "SELECT path, NULL FROM raw.files WHERE file_id IN "
        "(SELECT file_id FROM raw.files GROUP BY 1 HAVING count(*) > 1)",
    ),
    "raw.files.content_hash unique": (
        "SELECT count(*) - count(DISTINCT content_hash) FROM raw.files",
        "SELECT path, NULL FROM raw.files WHERE content_hash IN "
        "(SELECT content_hash FROM raw.files GROUP BY 1 HAVING count(*) > 1)",
    ),
    # The view's rows are the three tables' rows, each LEFT JOINed to raw.files on file_id: as many
    # as the tables hold when file_id is unique in raw.files (checked below), so the tables are counted
    # (their row counts are in DuckDB's metadata) instead of the joined view (~0.05 s per 1 M rows).
    "marts.requests rows = raw.files ingested": (
        f"SELECT abs(({STORED_ROWS}) - (SELECT coalesce(sum(ingested), 0) FROM raw.files))",
        "SELECT f.path, NULL FROM raw.files AS f WHERE f.ingested IS DISTINCT FROM "
        "(SELECT count(*) FROM marts.requests AS r WHERE r.file_id = f.file_id)",
    ),
    "marts.latency_profile exactly one active": (
        "SELECT abs(1 - count(*) FILTER (WHERE active)) FROM marts.latency_profile",
        None,
    ),
}


def all_checks() -> dict[str, tuple[str, str | None]]:
    """Every check: name -> (SQL counting offenders, SQL naming ``(path, line)`` of some, or None)."""
    rows = {
        name: (
            f"SELECT count(*) FROM marts.requests WHERE {cond}",
            "SELECT f.path, r.line FROM (SELECT file_id, line FROM marts.requests "
            f"WHERE {cond}) AS r LEFT JOIN raw.files AS f USING (file_id) ORDER BY r.file_id, r.line",
        )
        for name, cond in ROW_CHECKS.items()
    }
    return {**rows, **TABLE_CHECKS}


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, how many rows offend it (0 = pass), and where some of them come from."""

    name: str
    offending: int
    examples: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.offending == 0


# The full form of the checks whose default form counts the tables under the view (``run_checks``).
FULL_COUNTS: dict[str, str] = {
    "marts.requests rows = raw.files ingested": (
        "SELECT abs((SELECT count(*) FROM marts.requests) "
        "- (SELECT coalesce(sum(ingested), 0) FROM raw.files))"
    ),
}


def run_checks(con: duckdb.DuckDBPyConnection, *, full: bool = False) -> list[CheckResult]:
    """Run every check of ``all_checks()`` on ``con`` (read-only is enough); name where failures are.

    The row checks are counted in one scan of ``marts.requests`` (one ``count(*) FILTER`` each),
    the table checks one query each; a failing check's examples take one more query. By default
    (every load) three checks take a cheaper route to the same count: ``request_id`` not null from
    the prefixes and lines (``REQUEST_ID_NULL_FAST``), the row count from the tables under the view
    (exact while ``raw.files.file_id unique`` passes), the request-id uniqueness from
    ``TRACE_PAIRS_PROVED_UNIQUE`` when it holds. ``full`` evaluates every check on the view's own
    columns (``FULL_COUNTS``, the generic id hash): tests compare the two on hand-edited warehouses.
    """
    conds = {n: c for n, c in ROW_CHECKS.items() if full or n != REQUEST_ID_NOT_NULL}
    filters = ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in conds.values())
    counts = con.execute(f"SELECT {filters} FROM marts.requests").fetchall()[0]
    row_counts = dict(zip(conds, counts, strict=True))
    results = []
    for name, (sql, where) in all_checks().items():
        if name in row_counts:
            count = row_counts[name]
        elif name == REQUEST_ID_NOT_NULL:
            count = con.execute(REQUEST_ID_NULL_FAST).fetchall()[0][0]
        elif full:
            count = con.execute(FULL_COUNTS.get(name, sql)).fetchall()[0][0]
        elif name == REQUEST_ID_UNIQUE and con.execute(TRACE_PAIRS_PROVED_UNIQUE).fetchall()[0][0] == 0:
            count = con.execute(_ID_REST).fetchall()[0][0]
        else:
            count = con.execute(sql).fetchall()[0][0]
        offending = int(count) if count is not None else 0
        examples: tuple[str, ...] = ()
        if offending and where is not None:
            rows = con.execute(f"{where} LIMIT {EXAMPLES}").fetchall()
            examples = tuple(f"{path} line {line}" if line is not None else str(path) for path, line in rows)
        results.append(CheckResult(name, offending, examples))
    return results


def failed(results: list[CheckResult]) -> list[str]:
    """Human-readable lines for the failing checks (empty when all pass), naming file and line."""
    return [
        f"{r.name}: {r.offending} offending row(s)"
        + (f" (e.g. {', '.join(r.examples)})" if r.examples else "")
        for r in results
        if not r.ok
    ]
