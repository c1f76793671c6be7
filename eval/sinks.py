"""Result sinks: where evaluation reports are stored. The DuckDB one writes ``marts.eval_results``.

Who calls this: ``eval.harness.evaluate(..., sink=...)``, once per run. The table is long-format:
one row per (run, router, group, metric, statistic), so analysts can pivot it in SQL. It uses the
warehouse's copy-on-write write session and creates its table if missing (the columns are the
contract).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from eval.report import LATENCY_METRICS, EvalReport, GroupMetrics

EVAL_RESULTS_DDL = """
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE IF NOT EXISTS marts.eval_results (
    run_id VARCHAR NOT NULL,          -- hash of the report (same inputs -> same id)
    workload VARCHAR NOT NULL,
    synthetic BOOLEAN NOT NULL,
    latency_model VARCHAR NOT NULL,
    router VARCHAR NOT NULL,
    oracle BOOLEAN NOT NULL,
    predictor VARCHAR NOT NULL,
    group_kind VARCHAR NOT NULL,      -- overall | task | class
    group_name VARCHAR NOT NULL,      -- 'all', a task label, or LL/LH/HL/HH
    metric VARCHAR NOT NULL,          -- e2e_s, ttft_s, tbt_s, router_wait_s, queue_wait_s, preemptions_*
    stat VARCHAR NOT NULL,            -- mean, p50, p90, p99, value
    mean DOUBLE,                      -- over seeds; seconds for latencies
    ci95 DOUBLE,                      -- 95 % t half-width over seeds
    n_seeds INTEGER NOT NULL,
    vs_round_robin_pct DOUBLE,        -- paired E2E-mean improvement, on the overall e2e_s/mean row only
    PRIMARY KEY (run_id, router, group_kind, group_name, metric, stat)
);
"""


def report_rows(report: EvalReport) -> list[tuple]:
    """The report as ``marts.eval_results`` rows."""
    run_id = hashlib.sha256(report.model_dump_json().encode()).hexdigest()[:16]
    n_seeds = len(report.seeds)
    rows: list[tuple] = []

    def add(router, kind: str, name: str, g: GroupMetrics) -> None:
        head: tuple[object, ...] = (run_id, report.workload, report.synthetic, report.latency_model)
        head += (router.name, router.oracle, router.predictor, kind, name)
        for m in LATENCY_METRICS:
            summary = getattr(g, m)
            for stat in ("mean", "p50", "p90", "p99"):
                s = getattr(summary, stat)
                vs = None
                if kind == "overall" and m == "e2e_s" and stat == "mean" and router.vs_baseline_pct:
                    vs = router.vs_baseline_pct["e2e_mean"].mean
                rows.append((*head, m, stat, s.mean, s.ci95, n_seeds, vs))
        for m in ("preemptions_per_request", "preemptions_total"):
            s = getattr(g, m)
            rows.append((*head, m, "value", s.mean, s.ci95, n_seeds, None))

    for r in report.routers.values():
        add(r, "overall", "all", r.overall)
        for t, g in r.by_task.items():
            add(r, "task", t, g)
        for c, g in r.by_class.items():
            add(r, "class", c, g)
    return rows


class DuckDBSink:
    """Writes reports into ``marts.eval_results`` of the warehouse (idempotent per report).

    The write goes through the warehouse's copy-on-write session (``warehouse.store.write_session``):
    analysts' read-only connections keep working during it, and a failure publishes nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, report: EvalReport) -> None:
        from warehouse.store import write_session

        rows = report_rows(report)
        with write_session(self.path) as con:
            con.execute(EVAL_RESULTS_DDL)
            con.execute("DELETE FROM marts.eval_results WHERE run_id = ?", [rows[0][0]] if rows else [""])
            con.executemany(
                "INSERT INTO marts.eval_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
