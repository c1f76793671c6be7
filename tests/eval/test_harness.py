"""The evaluation harness on a tiny workload: report fields, CI math, baseline sign, outputs, sinks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.harness import (
    check_routers,
    check_seeds,
    evaluate,
    length_threshold_tokens,
    run_evaluation,
    split_threshold_tokens,
    workload_classes,
)
from eval.report import EVALUATION_FIELDS, EvalReport, ci95_halfwidth
from eval.sinks import DuckDBSink
from tests.training.routing.temporary import unregister
from training.routing import registry
from training.simulator.interface import DELAY
from training.simulator.request import Request

ROUTERS = ("round_robin", "least_request", "decode_balancer")


@pytest.fixture(scope="module")
def report(tiny_workload, tiny_cluster, paper_latency) -> EvalReport:
    return evaluate(ROUTERS, tiny_workload, tiny_cluster, paper_latency, seeds=(0, 1, 2))


def test_report_fields(report):
    assert list(report.routers) == list(ROUTERS)
    assert report.seeds == (0, 1, 2)
    assert report.synthetic
    assert report.baseline == "round_robin"
    rr = report.routers["round_robin"]
    assert rr.vs_baseline_pct is None
    assert rr.overall.n_requests == 80
    for m in ("e2e_s", "ttft_s", "tbt_s", "router_wait_s", "queue_wait_s"):
        summary = getattr(rr.overall, m)
        assert len(summary.mean.per_seed) == 3
        assert summary.p50.mean <= summary.p90.mean <= summary.p99.mean
    assert set(rr.by_task) == {"LH", "HL"}
    assert set(rr.by_class) <= {"LL", "LH", "HL", "HH"}
    assert rr.by_class
    assert sum(g.n_requests for g in rr.by_task.values()) == pytest.approx(80)
    assert sum(g.n_requests for g in rr.by_class.values()) == pytest.approx(80)


def test_oracle_router_is_labelled_and_uses_true_lengths(report):
    assert report.routers["decode_balancer"].oracle
    assert report.routers["decode_balancer"].predictor == "oracle"
    assert report.routers["least_request"].predictor == "task_mean"
    assert not report.routers["least_request"].oracle


def test_ci_is_t_interval_over_seeds(report):
    stat = report.routers["least_request"].overall.e2e_s.mean
    assert stat.mean == pytest.approx(np.mean(stat.per_seed))
    assert stat.ci95 == pytest.approx(ci95_halfwidth(stat.per_seed))
    assert stat.ci95 > 0  # the trace differs per seed


def test_vs_round_robin_is_paired_and_signed(report):
    rr = report.routers["round_robin"].overall.e2e_s.mean.per_seed
    lr = report.routers["least_request"].overall.e2e_s.mean.per_seed
    vs = report.routers["least_request"].vs_baseline_pct["e2e_mean"]
    assert vs.per_seed == pytest.approx(tuple(100 * (b - r) / b for b, r in zip(rr, lr, strict=True)))
    assert report.summary()["least_request"]["vs_round_robin_pct"] == pytest.approx(vs.mean)


class _AllOnZero:
    """Sends everything to instance 0: must come out worse than round robin."""

    name = "all_on_zero"

    def reset(self, num_instances, seed):
        pass

    def route(self, request, cluster):
        return 0 if 0 in cluster.accepting else DELAY


def test_a_bad_router_gets_a_negative_improvement(tiny_workload, tiny_cluster, paper_latency):
    registry.register("all_on_zero", lambda ctx: _AllOnZero(), description="test", mirrors="test")
    try:
        rep = evaluate(["round_robin", "all_on_zero"], tiny_workload, tiny_cluster, paper_latency, seeds=(0,))
    finally:
        unregister("all_on_zero")
    assert rep.routers["all_on_zero"].vs_baseline_pct["e2e_mean"].mean < 0


def _results(report: EvalReport) -> dict:
    """The report without the fields that name the evaluation (``EVALUATION_FIELDS``)."""
    return report.model_dump(exclude=set(EVALUATION_FIELDS))


def test_deterministic_and_json_round_trip(report, tiny_workload, tiny_cluster, paper_latency):
    again = evaluate(ROUTERS, tiny_workload, tiny_cluster, paper_latency, seeds=(0, 1, 2))
    assert _results(again) == _results(report)  # each run is its own evaluation (id, time)
    assert again.evaluation_id != report.evaluation_id
    assert EvalReport.model_validate_json(report.model_dump_json()) == report


def test_outputs_and_sink_written(tmp_path, tiny_workload, tiny_cluster, paper_latency):
    seen = []

    class ListSink:
        def write(self, rep):
            seen.append(rep)

    rep = evaluate(
        ["round_robin", "least_request"],
        tiny_workload,
        tiny_cluster,
        paper_latency,
        seeds=(0,),
        out_dir=tmp_path / "out",
        sink=ListSink(),
    )
    assert seen == [rep]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "report.json",
        "report.md",
        "e2e_cdf.png",
        "queue_round_robin.png",
        "queue_least_request.png",
    } <= files
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| round_robin |" in md
    assert "per workload class" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["workload"] == "table2"


def test_duckdb_sink_writes_marts_eval_results(tmp_path, report):
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "wh.duckdb"
    sink = DuckDBSink(path)
    sink.write(report)
    sink.write(report)  # idempotent per report
    con = duckdb.connect(str(path))
    try:
        rows = con.execute(
            "SELECT router, oracle, mean, vs_round_robin_pct FROM marts.eval_results "
            "WHERE group_kind = 'overall' AND metric = 'e2e_s' AND stat = 'mean' ORDER BY router"
        ).fetchall()
        total = con.execute("SELECT count(*) FROM marts.eval_results").fetchone()[0]
    finally:
        con.close()
    assert [r[0] for r in rows] == sorted(ROUTERS)
    by = {r[0]: r for r in rows}
    assert by["decode_balancer"][1] is True
    assert by["round_robin"][3] is None
    assert by["least_request"][3] is not None
    assert by["round_robin"][2] == pytest.approx(report.routers["round_robin"].overall.e2e_s.mean.mean)
    assert total > len(ROUTERS) * 10


def test_process_workers_give_the_same_report(report, tiny_workload, tiny_cluster, paper_latency):
    par = evaluate(ROUTERS, tiny_workload, tiny_cluster, paper_latency, seeds=(0, 1, 2), workers=2)
    assert _results(par) == _results(report)


def test_first_seed_arrays_kept_for_plots(tiny_workload, tiny_cluster, paper_latency):
    run = run_evaluation(["round_robin"], tiny_workload, tiny_cluster, paper_latency, seeds=(3, 4))
    arrays = run.first_seed["round_robin"]
    assert len(arrays["e2e_s"]) == 80
    assert len(arrays["instance_series"]) == 2


def test_workload_classes_and_threshold(paper_latency):
    reqs = [
        Request("a", 0.0, 100, 10),  # LL
        Request("b", 0.0, 100, 600),  # LH: ~600 x 0.02 s decode
        Request("c", 0.0, 3000, 10),  # HL: 0.96 s prefill
        Request("d", 0.0, 3000, 600),  # HH
    ]
    assert workload_classes(reqs, paper_latency) == ["LL", "LH", "HL", "HH"]
    t = length_threshold_tokens(paper_latency)
    assert 150 < t < 260  # ~5 s of decode at ~0.02-0.03 s per token on the paper's V100


def test_split_threshold_is_the_median_prediction(tiny_workload, report):
    from training.length.baselines import TaskMeanPredictor

    pred = TaskMeanPredictor.fit(list(tiny_workload.train))
    t = split_threshold_tokens(pred, tiny_workload.train)
    assert t == pytest.approx((pred.means["HL"] + pred.means["LH"]) / 2)
    assert report.class_thresholds["short_long_threshold_tokens"] == pytest.approx(t)


def test_split_threshold_balances_discrete_and_continuous_predictions():
    class Fixed:
        name = "fixed"
        is_oracle = False

        def __init__(self, values):
            self.values = np.asarray(values, dtype=np.float64)

        def predict_output_tokens(self, requests):
            return self.values[: len(requests)]

    reqs = [Request(f"r{i}", 0.0, 10, 10) for i in range(100)]
    # classes 100 (30 %), 200 (30 %), 400 (40 %): cutting at 150 sends 70 % long, at 300 40 % long
    assert split_threshold_tokens(Fixed([100] * 30 + [200] * 30 + [400] * 40), reqs) == 300.0
    t = split_threshold_tokens(Fixed(np.arange(1, 101)), reqs)
    assert 50 < t < 52
    assert split_threshold_tokens(Fixed([7.0] * 100), reqs) == 14.0


def test_unknown_router_and_empty_inputs(tiny_workload, tiny_cluster, paper_latency):
    with pytest.raises(KeyError):
        evaluate(["nope"], tiny_workload, tiny_cluster, paper_latency, seeds=(0,))
    with pytest.raises(ValueError, match="no routers"):
        evaluate([], tiny_workload, tiny_cluster, paper_latency, seeds=(0,))


def test_the_harness_refuses_bad_seeds_and_routers_before_any_replay(
    tiny_workload, tiny_cluster, paper_latency
):
    for seeds, match in (((0, 0), "distinct"), ((-1,), ">= 0"), ((), "no seeds"), ((0.5,), "whole")):
        with pytest.raises(ValueError, match=match):
            run_evaluation(["round_robin"], tiny_workload, tiny_cluster, paper_latency, seeds=seeds)
    with pytest.raises(ValueError, match="routers must be distinct; repeated: random"):
        run_evaluation(["random", "round_robin", "random"], tiny_workload, tiny_cluster, paper_latency)
    assert check_seeds([3, 1]) == (3, 1)
    assert check_routers(["a", "b"]) == ["a", "b"]
