"""The distributed evaluation flow (flows/distributed.py): its warehouse evaluation gives the report of
before the evaluation builder (a stored digest), and replays fanned out over a Dask cluster started
here give the same report as in-process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eval.report import EVALUATION_FIELDS
from eval.spec import evaluate_spec
from flows.distributed import task_runner, warehouse_spec
from warehouse.ingest import ingest
from warehouse.synthetic import SyntheticConfig, write_azure_like

ROUTERS = ["round_robin", "least_tokens", "workload_impact_greedy"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("dist")
    wh = d / "w.duckdb"
    ingest(write_azure_like(d / "syn", SyntheticConfig(rows=2000, seed=5)), warehouse=wh)
    return str(wh)


def test_unknown_runner_specs_are_refused():
    with pytest.raises(ValueError, match="Dask scheduler address"):
        task_runner("ray")


@pytest.mark.prefect
def test_dask_cluster_replays_match_in_process(prefect_harness: None, warehouse: str):
    from distributed import LocalCluster

    from flows.distributed import evaluate_routers

    kwargs = {"routers": ROUTERS, "seeds": [0, 1], "num_requests": 400, "synthetic": True}
    local = evaluate_spec(warehouse_spec(warehouse, ROUTERS, [0, 1], 400, synthetic=True))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = evaluate_routers.with_options(task_runner=task_runner(cluster.scheduler_address))(
            warehouse, **kwargs
        )
    for name in ROUTERS:
        ours, theirs = local.routers[name].overall, remote["routers"][name]["overall"]
        assert theirs["e2e_s"]["mean"]["per_seed"] == list(ours.e2e_s.mean.per_seed), name
        assert theirs["e2e_s"]["p99"]["per_seed"] == list(ours.e2e_s.p99.per_seed), name
        assert theirs["n_requests"] == ours.n_requests


WAREHOUSE_DIGEST = "0b98baa5b147d9ee44bda100092fa314bbec87a74b13125af09ca8414cc91866"


def test_the_warehouse_evaluation_gives_the_results_of_before(tmp_path: Path):
    """``evaluate-routers-distributed``'s evaluation (``eval.scheduled`` before), in process."""
    from flows.distributed import warehouse_spec
    from warehouse.ingest import ingest
    from warehouse.synthetic import SyntheticConfig, write_azure_like

    wh = tmp_path / "w.duckdb"
    ingest(
        write_azure_like(tmp_path / "syn", SyntheticConfig(rows=2000, seed=5)),
        warehouse=wh,
        source="synthetic",
    )
    routers = ["round_robin", "least_tokens", "workload_impact_greedy"]
    report = evaluate_spec(warehouse_spec(wh, routers, [0, 1], 300, synthetic=True))
    # the hold-queue settings issue 15 added to the cluster are left out: the rest is byte-identical
    cluster = {k: v for k, v in report.cluster.items() if not k.startswith("router_queue_")}
    report = report.model_copy(update={"cluster": cluster})
    assert _sha(report.model_dump_json(exclude=set(EVALUATION_FIELDS))) == WAREHOUSE_DIGEST


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
