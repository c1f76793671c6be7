"""Evaluation replays fanned out over a Dask cluster started here give the same report as in-process."""

from __future__ import annotations

import pytest

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
