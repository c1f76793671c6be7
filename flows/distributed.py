"""Parallel work through a Prefect task runner: in-process threads locally, a Dask cluster to scale out.

Who calls this: flows that fan out independent replays (router evaluation over routers x seeds;
router training over seeds / hyper-parameters), once per run. The work itself is the same
library function either way (``eval.harness.replay_job``, in the ``replay`` task of ``flows.tasks``);
only the task runner changes, so a local run and a cluster run take the same code path and give the
same numbers (every replay is seeded).

**Why Dask** (``prefect-dask``) and not Ray (``prefect-ray``): the work is CPU-bound pure-Python
replays of a few seconds each with small, picklable inputs and outputs, which is what
``distributed`` schedules well; it is a small pure-Python install (11 packages, no native wheels),
starts a ``LocalCluster`` in seconds on this 2-core machine (tests start one), and points at a remote
scheduler with one address (``tcp://scheduler:8786``, e.g. a dask-kubernetes or Coiled cluster).
Ray's strengths (actors, GPU scheduling, RLlib) are unused here: training runs SB3 in one process.

Task runners (``task_runner(spec)``):

- ``"threads"``: Prefect's ``ThreadPoolTaskRunner`` (default; the GIL makes it about serial for
  replays, but it needs nothing else);
- ``"dask"``: a temporary ``LocalCluster`` with ``n_workers`` single-threaded worker processes;
- ``"tcp://host:8786"`` (any Dask scheduler address): that existing cluster. Its workers need this
  project installed (the same version) and access to the data the jobs carry (jobs carry their
  requests, so no shared filesystem is needed for evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow

from flows import tasks
from flows.task_runners import LOCAL_DASK, THREADS, check_task_runner

if TYPE_CHECKING:
    from eval.spec import EvalSpec


def task_runner(spec: str = THREADS, n_workers: int = 2) -> Any:
    """A Prefect task runner for ``spec``: ``threads``, ``dask`` (local cluster) or a scheduler address."""
    from prefect.task_runners import ThreadPoolTaskRunner

    check_task_runner(spec)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {n_workers}")
    if spec == THREADS:
        return ThreadPoolTaskRunner(max_workers=n_workers)
    from prefect_dask import DaskTaskRunner

    if spec == LOCAL_DASK:
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": n_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return DaskTaskRunner(address=spec)


def prefect_executor(fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
    """Map ``fn`` over ``jobs`` with the current flow's task runner; results in job order.

    Must be called inside a flow run (the runner is the flow's ``task_runner``)."""
    futures = tasks.replay.map(fn, jobs)
    return [f.result() for f in futures]


@flow(name="evaluate-routers-distributed", log_prints=True)
def evaluate_routers(
    warehouse: str,
    routers: list[str] | None = None,
    seeds: list[int] | None = None,
    num_requests: int = 4000,
    synthetic: bool = False,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """Replay routers on the warehouse's held-out traces (``format = 'azure'``: the Azure code +
    conversation services, or a synthetic stand-in) on 4 instances of ``eval.spec.pick_profile`` at
    its loaded rate; the replays fanned out over the task runner; the report is stored in the
    warehouse (``marts.eval_results``) and, with ``out_dir``, written there.

    Run with a runner: ``evaluate_routers.with_options(task_runner=task_runner("dask"))(...)``.
    """
    from eval.sinks import DuckDBSink
    from eval.spec import evaluate_spec

    report = evaluate_spec(
        warehouse_spec(warehouse, routers, seeds or [0, 1], num_requests, synthetic),
        out_dir=Path(out_dir) if out_dir else None,
        sink=DuckDBSink(Path(warehouse)),
        executor=prefect_executor,
    )
    print(report.summary())
    return report.model_dump(mode="json")


def warehouse_spec(
    warehouse: str | Path,
    routers: list[str] | None,
    seeds: list[int],
    num_requests: int = 4000,
    synthetic: bool = False,
) -> EvalSpec:
    """The ``evaluate-routers-distributed`` evaluation: a fixed held-out slice of the warehouse's
    Azure-format requests on 4 instances of ``pick_profile``, time-scaled to its loaded rate."""
    from eval.spec import DEFAULT_RATE_RPS, EvalSpec, WarehouseRows, pick_profile

    profile = pick_profile()
    return EvalSpec(
        workload=WarehouseRows(warehouse=Path(warehouse), synthetic=synthetic),
        requests=num_requests,
        rate=DEFAULT_RATE_RPS.get(profile),
        instances=4,
        profile=profile,
        routers=tuple(routers) if routers else None,
        seeds=tuple(seeds),
    )
