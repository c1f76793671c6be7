"""Result sinks: where evaluation reports are stored. The DuckDB one writes ``marts.eval_results``.

Who calls this: ``eval.harness.evaluate(..., sink=...)``, once per run. The table is long-format:
one row per (evaluation, router, group, metric, statistic), so analysts can pivot it in SQL. Every
row carries the report's ``evaluation_id`` and ``evaluated_at`` (``EvalReport.stored_id``), the
keys ``ops.nightly_runs.evaluation_id`` joins on. The table, its columns and their comments are the
warehouse's schema (``warehouse/sql/schema.sql``, ``comments.sql``), created by its write session.
"""

from __future__ import annotations

from pathlib import Path

from eval.report import LATENCY_METRICS, EvalReport, GroupMetrics

COLUMNS = (
    "evaluation_id", "evaluated_at", "workload", "synthetic", "latency_model", "router", "oracle",
    "predictor", "group_kind", "group_name", "metric", "stat", "mean", "ci95", "n_seeds",
    "vs_round_robin_pct",
)  # fmt: skip
"""The columns ``report_rows`` fills, in its order (the insert names them: old tables order theirs
differently)."""


def report_rows(report: EvalReport) -> list[tuple]:
    """The report as ``marts.eval_results`` rows (values in ``COLUMNS`` order)."""
    n_seeds = len(report.seeds)
    rows: list[tuple] = []

    def add(router, kind: str, name: str, g: GroupMetrics) -> None:
        head: tuple[object, ...] = (report.stored_id(), report.evaluated_at, report.workload)
        head += (report.synthetic, report.latency_model, router.name, router.oracle, router.predictor)
        head += (kind, name)
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
    """Writes reports into ``marts.eval_results`` of the warehouse (idempotent per evaluation id).

    The write goes through the warehouse's copy-on-write session (``warehouse.store.write_session``):
    analysts' read-only connections keep working during it, and a failure publishes nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, report: EvalReport) -> None:
        from warehouse.store import write_session

        rows = report_rows(report)
        insert = (
            f"INSERT INTO marts.eval_results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        with write_session(self.path) as con:
            con.execute("DELETE FROM marts.eval_results WHERE evaluation_id = ?", [report.stored_id()])
            if rows:
                con.executemany(insert, rows)
