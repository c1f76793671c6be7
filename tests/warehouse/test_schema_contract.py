"""What an analyst relies on in the warehouse's schema (issue 19): every table, view and column is
described; evaluations and nightly runs join on an evaluation id and carry their times; the
per-minute view counts only traces with arrival times, with BIGINT token sums."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from eval.report import EvalReport, to_markdown
from eval.sinks import DuckDBSink
from flows.nightly.report import record_success
from flows.nightly.results import DriftResult, RouterOutcome, StepLog
from tests.eval.reports import BASE, hand_report, hand_router
from tests.warehouse.samples import SAMPLES, empty_warehouse
from warehouse.ingest import ingest
from warehouse.query import fetch_arrow
from warehouse.store import connect_readonly, write_session

UNDESCRIBED = """
SELECT schema_name || '.' || table_name FROM duckdb_tables()
WHERE NOT internal AND database_name = current_database() AND comment IS NULL
UNION ALL
SELECT schema_name || '.' || view_name FROM duckdb_views()
WHERE NOT internal AND database_name = current_database() AND comment IS NULL
UNION ALL
SELECT schema_name || '.' || table_name || '.' || column_name FROM duckdb_columns()
WHERE NOT internal AND database_name = current_database() AND comment IS NULL
ORDER BY 1
"""


def test_every_table_view_and_column_has_a_comment(wh: Path) -> None:
    """Every table and view of every schema (raw, staging, marts, ops), and each of their columns, has
    a description an analyst reads with ``duckdb_columns()`` / ``duckdb_tables()`` / ``duckdb_views()``
    (before: eval_results 0/15, nightly_runs 0/13, source_summary 0/7, no view-level comments)."""
    empty_warehouse(wh)  # made by write_session: the schema as every write applies it
    con = connect_readonly(wh)
    try:
        missing = [name for (name,) in con.execute(UNDESCRIBED).fetchall()]
        schemas = {s for (s,) in con.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()}
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()
    finally:
        con.close()
    assert missing == []
    assert {"raw", "marts", "ops"} <= schemas  # the evaluation and run logs exist (empty) from the start
    assert views is not None
    # 19 before issue 16, less the staging views of the four line formats (now table macros over the
    # file's lines: their raw layer is the source file), plus the marts.requests view.
    assert views[0] >= 16


def test_requests_per_minute_counts_only_traces_with_arrival_times(tmp_path: Path, wh: Path) -> None:
    """A prompt set (CASTILLO, AlpacaEval, Dolly: every request at arrival_s 0) is not a minute of
    traffic: it stayed out of the busiest-minute query. Token sums are BIGINT (Arrow int64), not
    DuckDB's HUGEINT (Arrow ``decimal128(38, 0)``)."""
    empty_warehouse(wh)
    ingest(
        [SAMPLES[name].write(tmp_path) for name in ("azure", "castillo", "dolly", "alpaca-eval")],
        warehouse=wh,
    )
    busiest = "SELECT source, requests FROM marts.requests_per_minute ORDER BY requests DESC, source"
    con = connect_readonly(wh)
    try:
        sources = {
            s for (s,) in con.execute("SELECT DISTINCT source FROM marts.requests_per_minute").fetchall()
        }
        total = con.execute("SELECT sum(requests) FROM marts.requests_per_minute").fetchone()
        top = con.execute(busiest).fetchone()
    finally:
        con.close()
    assert sources == {"azure"}
    assert total == (SAMPLES["azure"].ingested,)
    assert top is not None
    assert top[0] == "azure"
    for view in ("requests_per_minute", "daily_summary"):
        got = fetch_arrow(f"SELECT prompt_tokens, output_tokens FROM marts.{view}", wh).schema
        assert [f.type for f in got] == [pa.int64(), pa.int64()], view


def _report() -> EvalReport:
    from eval.report import new_evaluation

    evaluation_id, evaluated_at = new_evaluation()
    return hand_report(
        hand_router("round_robin", BASE), hand_router("challenger", [9.0, 11.0, 10.0])
    ).model_copy(update={"evaluation_id": evaluation_id, "evaluated_at": evaluated_at})


def test_a_nightly_run_joins_its_evaluation(wh: Path) -> None:
    """``marts.eval_results`` and ``ops.nightly_runs`` join on ``evaluation_id`` (before: the one's
    run_id was a report hash, the other's the Prefect flow-run id, and eval rows had no time)."""
    report = _report()
    empty_warehouse(wh)
    DuckDBSink(wh).write(report)
    DuckDBSink(wh).write(_report())  # another evaluation, not this run's
    started = datetime.now(UTC)
    record_success(
        str(wh),
        "flow-run-1",
        started,
        3,
        DriftResult(0, 5, None, ("no reference window (first run)",), ""),
        StepLog(),
        RouterOutcome(evaluation_id=report.stored_id(), challenger_version="1"),
    )
    con = connect_readonly(wh)
    try:
        joined = con.execute(
            "SELECT n.run_id, e.evaluation_id, min(e.evaluated_at), count(DISTINCT e.router) "
            "FROM ops.nightly_runs AS n JOIN marts.eval_results AS e USING (evaluation_id) GROUP BY ALL"
        ).fetchall()
        evaluations = con.execute("SELECT count(DISTINCT evaluation_id) FROM marts.eval_results").fetchone()
    finally:
        con.close()
    assert report.evaluated_at is not None
    assert joined == [("flow-run-1", report.evaluation_id, report.evaluated_at, 2)]
    assert evaluations == (2,)


def test_every_evaluation_gets_its_own_id_and_time() -> None:
    """The harness gives each report a fresh id and time; they survive ``report.json``."""
    from eval.harness import run_evaluation
    from training.simulator import ClusterConfig, default_instance_config, load_latency_model
    from training.workloads.catalog import WorkloadOptions, get_workload

    wl = get_workload("table2", WorkloadOptions(num_requests=20, rate=2.0, num_instances=2))
    cluster = ClusterConfig(num_instances=2, instance=default_instance_config("v100-llama2-7b-paper"))
    model = load_latency_model("v100-llama2-7b-paper")
    before = datetime.now(UTC)
    a = run_evaluation(["round_robin"], wl, cluster, model, (0,)).report
    b = run_evaluation(["round_robin"], wl, cluster, model, (0,)).report
    assert a.evaluation_id
    assert b.evaluation_id
    assert a.evaluation_id != b.evaluation_id
    assert a.evaluated_at is not None
    assert before <= a.evaluated_at <= datetime.now(UTC)
    assert EvalReport.model_validate_json(a.model_dump_json()).stored_id() == a.evaluation_id
    assert (
        f"- evaluation `{a.evaluation_id}`, finished {a.evaluated_at:%Y-%m-%d %H:%M:%S} UTC" in to_markdown(a)
    )


OLD_EVAL_RESULTS = """
CREATE TABLE marts.eval_results (
    run_id VARCHAR NOT NULL, workload VARCHAR NOT NULL, synthetic BOOLEAN NOT NULL,
    latency_model VARCHAR NOT NULL, router VARCHAR NOT NULL, oracle BOOLEAN NOT NULL,
    predictor VARCHAR NOT NULL, group_kind VARCHAR NOT NULL, group_name VARCHAR NOT NULL,
    metric VARCHAR NOT NULL, stat VARCHAR NOT NULL, mean DOUBLE, ci95 DOUBLE, n_seeds INTEGER NOT NULL,
    vs_round_robin_pct DOUBLE,
    PRIMARY KEY (run_id, router, group_kind, group_name, metric, stat)
)
"""
"""``marts.eval_results`` as releases before evaluation ids created it (``eval/sinks.py``)."""


def test_old_eval_results_keep_their_ids_under_the_new_name(wh: Path) -> None:
    """A warehouse written before evaluation ids (``run_id``: the report hash) is migrated on its next
    write: the column becomes ``evaluation_id`` with the same values, ``evaluated_at`` is NULL there,
    and a report made before ids (a cached ``report.json``) still finds its rows by that hash."""
    old = hand_report(hand_router("round_robin", BASE))
    assert old.evaluation_id == ""
    assert old.evaluated_at is None
    empty_warehouse(wh)
    rw = duckdb.connect(str(wh))
    rw.execute("DROP TABLE marts.eval_results; DROP TABLE raw.schema_version")  # as an old release made it
    rw.execute(OLD_EVAL_RESULTS)
    rw.execute(
        "INSERT INTO marts.eval_results VALUES (?, 'w', true, 'm', 'round_robin', false, 'p', 'overall', "
        "'all', 'e2e_s', 'mean', 10.0, 0.5, 3, NULL)",
        [old.stored_id()],
    )
    rw.close()
    with write_session(wh):
        pass
    con = connect_readonly(wh)
    try:
        rows = con.execute("SELECT evaluation_id, evaluated_at FROM marts.eval_results").fetchall()
        undescribed = con.execute(UNDESCRIBED).fetchall()
    finally:
        con.close()
    assert rows == [(old.stored_id(), None)]
    assert undescribed == []
