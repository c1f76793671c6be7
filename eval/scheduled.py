"""Every registered router on the warehouse's held-out traces, and the scheduled runs' GPU setting.

Who calls this: the ``evaluate-routers-distributed`` flow (``flows.distributed``: the replays fanned
out over a Prefect task runner), once per run; the ``nightly-retrain`` flow reads ``pick_profile``
and ``DEFAULT_RATE_RPS``. It replays the warehouse's request traces (by default the Azure-format ones:
the real Azure LLM 2023 code + conversation services, or a synthetic stand-in) through the one
evaluation harness, stores the report in ``marts.eval_results`` of the same warehouse and writes the
markdown table and plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eval.harness import Executor, evaluate
from eval.report import EvalReport
from eval.sinks import DuckDBSink
from training.routing.registry import router_names
from training.simulator import ClusterConfig, default_instance_config, load_latency_model
from training.simulator.profiles import PAPER_PROFILE
from training.workloads.catalog import WorkloadOptions, warehouse_workload

GPU_PROFILE = "a100-llama3-8b"
"""Preferred profile (real GPU operator profiles); the paper's V100 model when they are absent."""

DEFAULT_RATE_RPS = {GPU_PROFILE: 12.0, PAPER_PROFILE: 2.5}
"""Held-out arrivals are time-scaled to these rates: loaded but stable for 4 instances of each
profile on Azure-like lengths (see docs/evaluation.md)."""


def pick_profile() -> str:
    """``a100-llama3-8b`` when its Vidur profiles can be read, else ``v100-llama2-7b-paper``."""
    try:
        load_latency_model(GPU_PROFILE)
    except FileNotFoundError:
        return PAPER_PROFILE
    return GPU_PROFILE


def evaluate_warehouse_routers(
    warehouse: str | Path,
    *,
    where: str = "format = 'azure'",
    synthetic: bool = False,
    routers: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1),
    profile: str | None = None,
    rate: float | None = None,
    num_requests: int = 4000,
    num_instances: int = 4,
    out_dir: Path | None = None,
    executor: Executor | None = None,
) -> EvalReport:
    """Replay ``routers`` (default: every registered one) on the warehouse's held-out requests.

    The report is stored in the warehouse (``marts.eval_results``) and, with ``out_dir``, written
    as ``report.json`` / ``report.md`` / plots there. ``executor`` runs the replays elsewhere (a
    Prefect task runner over a Dask cluster, ``flows.distributed``); results are identical.
    """
    profile = profile or pick_profile()
    options = WorkloadOptions(
        num_requests=num_requests, rate=rate or DEFAULT_RATE_RPS.get(profile), num_instances=num_instances
    )
    workload = warehouse_workload(warehouse, where, options, profile=profile, synthetic=synthetic)
    cluster = ClusterConfig(num_instances=workload.num_instances, instance=default_instance_config(profile))
    return evaluate(
        list(routers or router_names()),
        workload,
        cluster,
        load_latency_model(profile),
        seeds=seeds,
        out_dir=out_dir,
        sink=DuckDBSink(Path(warehouse)),
        executor=executor,
    )
