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

# Other checks: name -> (SQL counting offenders, SQL giving (path, line) of some offenders or None).
TABLE_CHECKS: dict[str, tuple[str, str | None]] = {
    "marts.requests.request_id unique": (
        "SELECT count(*) - count(DISTINCT request_id) FROM marts.requests",
        "SELECT f.path, r.line FROM marts.requests AS r LEFT JOIN raw.files AS f USING (file_id) "
        "WHERE r.request_id IN (SELECT request_id FROM marts.requests GROUP BY 1 HAVING count(*) > 1) "
        "ORDER BY r.file_id, r.line",
    ),
    "raw.files rows_read = ingested + quarantined": (
        "SELECT count(*) FROM raw.files WHERE rows_read IS DISTINCT FROM ingested + quarantined",
        "SELECT path, NULL FROM raw.files WHERE rows_read IS DISTINCT FROM ingested + quarantined",
    ),
    "raw.files.content_hash unique": (
        "SELECT count(*) - count(DISTINCT content_hash) FROM raw.files",
        "SELECT path, NULL FROM raw.files WHERE content_hash IN "
        "(SELECT content_hash FROM raw.files GROUP BY 1 HAVING count(*) > 1)",
    ),
    "marts.requests rows = raw.files ingested": (
        "SELECT abs((SELECT count(*) FROM marts.requests) "
        "- (SELECT coalesce(sum(ingested), 0) FROM raw.files))",
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


def run_checks(con: duckdb.DuckDBPyConnection) -> list[CheckResult]:
    """Run every check of ``all_checks()`` on ``con`` (read-only is enough); name where failures are."""
    results = []
    for name, (sql, where) in all_checks().items():
        row = con.execute(sql).fetchall()[0]
        offending = int(row[0]) if row[0] is not None else 0
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
