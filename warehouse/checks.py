"""Data checks run after every load, before publishing (dbt-style: keys, not-null, accepted values).

Called by ``warehouse.ingest.ingest`` inside the write session (a failure raises
``DataCheckError`` and nothing is published) and by ``loadwise check``-style callers on a read-only
connection. Each check is one SQL query counting offending rows over the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

NOT_NULL = (
    "request_id", "source", "trace_id", "arrival_s", "prompt_tokens", "output_tokens", "task", "status",
    "format", "file_id", "line",
)  # fmt: skip

CHECKS: dict[str, str] = {
    "marts.requests.request_id unique": ("SELECT count(*) - count(DISTINCT request_id) FROM marts.requests"),
    **{
        f"marts.requests.{c} not null": f"SELECT count(*) FROM marts.requests WHERE {c} IS NULL"
        for c in NOT_NULL
    },
    "marts.requests.status in (ok, failed)": (
        "SELECT count(*) FROM marts.requests WHERE status NOT IN ('ok', 'failed')"
    ),
    "marts.requests.split in (train, validate, test)": (
        "SELECT count(*) FROM marts.requests WHERE split NOT IN ('train', 'validate', 'test')"
    ),
    "marts.requests.prompt_tokens > 0": "SELECT count(*) FROM marts.requests WHERE prompt_tokens <= 0",
    "marts.requests.output_tokens >= 1 when ok, >= 0 when failed": (
        "SELECT count(*) FROM marts.requests WHERE output_tokens < CASE WHEN status = 'ok' THEN 1 ELSE 0 END"
    ),
    "marts.requests.arrival_s finite and >= 0": (
        "SELECT count(*) FROM marts.requests WHERE NOT (arrival_s >= 0 AND isfinite(arrival_s))"
    ),
    "raw.files rows_read = ingested + quarantined": (
        "SELECT count(*) FROM raw.files WHERE rows_read IS DISTINCT FROM ingested + quarantined"
    ),
    "raw.files.content_hash unique": "SELECT count(*) - count(DISTINCT content_hash) FROM raw.files",
    "marts.requests rows = raw.files ingested": (
        "SELECT abs((SELECT count(*) FROM marts.requests) "
        "- (SELECT coalesce(sum(ingested), 0) FROM raw.files))"
    ),
    "marts.latency_profile exactly one active": (
        "SELECT abs(1 - count(*) FILTER (WHERE active)) FROM marts.latency_profile"
    ),
}


@dataclass(frozen=True)
class CheckResult:
    """One check: its name and how many rows offend it (0 = pass)."""

    name: str
    offending: int

    @property
    def ok(self) -> bool:
        return self.offending == 0


def run_checks(con: duckdb.DuckDBPyConnection) -> list[CheckResult]:
    """Run every check in ``CHECKS`` on ``con`` (read-only is enough)."""
    results = []
    for name, sql in CHECKS.items():
        row = con.execute(sql).fetchone()
        results.append(CheckResult(name, int(row[0]) if row and row[0] is not None else 0))
    return results


def failed(results: list[CheckResult]) -> list[str]:
    """Human-readable lines for the failing checks (empty when all pass)."""
    return [f"{r.name}: {r.offending} offending row(s)" for r in results if not r.ok]
