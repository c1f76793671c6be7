"""Read-only summaries of the warehouse for the CLI and the pipeline (small frames, not raw rows).

Called by ``loadwise run`` (the pipeline's summary step) and the ``ingest-traces`` flow's artifact.
Each function takes an open connection (read-only is enough) and returns column names and rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from warehouse.workload_class import CLASSES, HEAVY_DECODE_S, HEAVY_PREFILL_S


@dataclass(frozen=True)
class Table:
    """A small result: a title, column names and rows (for rich tables and Prefect artifacts)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def query_table(con: duckdb.DuckDBPyConnection, title: str, sql: str) -> Table:
    """Run ``sql`` and return its result as a ``Table``."""
    cursor = con.execute(sql)
    columns = tuple(d[0] for d in cursor.description or ())
    return Table(title, columns, tuple(tuple(r) for r in cursor.fetchall()))


def counts_per_source(con: duckdb.DuckDBPyConnection) -> Table:
    """Requests, failed requests and traces per source (all tasks together)."""
    return query_table(
        con,
        "Requests per source",
        "SELECT source, count(DISTINCT task) AS tasks, count(*) AS requests, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, count(DISTINCT trace_id) AS traces "
        "FROM marts.requests GROUP BY source ORDER BY source",
    )


def summary_tables(con: duckdb.DuckDBPyConnection, max_tasks: int = 30) -> list[Table]:
    """The pipeline's analytics summary: counts, token percentiles and workload classes per task."""
    return [
        counts_per_source(con),
        query_table(
            con,
            "Requests per source and task",
            "SELECT source, task, requests, failed FROM marts.source_summary ORDER BY source, task "
            f"LIMIT {max_tasks}",
        ),
        query_table(
            con,
            "Token percentiles per task [tokens]",
            "SELECT source, task, requests, prompt_p50, prompt_p90, prompt_p99, output_p50, output_p90, "
            f"output_p99 FROM marts.token_percentiles ORDER BY source, task LIMIT {max_tasks}",
        ),
        query_table(
            con,
            f"Workload classes (paper profile: H = heavy prefill >= {HEAVY_PREFILL_S:g} s / heavy decode "
            f">= {HEAVY_DECODE_S:g} s)",
            "PIVOT (SELECT source, task, workload_class, round(share, 3) AS share "
            "FROM marts.workload_classes) "
            f"ON workload_class IN ({', '.join(repr(c) for c in CLASSES)}) USING first(share) "
            f"ORDER BY source, task LIMIT {max_tasks}",
        ),
        query_table(
            con,
            "Quarantine reasons",
            "SELECT f.source, q.reason, count(*) AS rows "
            "FROM raw.quarantine q JOIN raw.files f USING (file_id) "
            "GROUP BY ALL ORDER BY rows DESC LIMIT 20",
        ),
    ]
