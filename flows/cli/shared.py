"""What the command groups share: the option types, the option checks and the output helpers.

Who uses this: every ``flows/cli/*.py`` module, at import (the option types) and when a command runs
(the checks and printers). Only typer and the standard library are imported at module level; rich
and the project's packages are imported inside the helpers that need them, so ``loadwise --help``
stays fast.

Exit codes, the same in every command: 2 for a usage error (``typer.BadParameter``, a bad option or
config file: one line, before any work), 1 for a refusal at run time (``fail``: one ``error:`` line
on stderr, no traceback).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

# -- choices --------------------------------------------------------------------------------------
# Every option with a fixed set of values is one of these ``Literal`` types: typer checks it (a bad
# value is a usage error, exit 2, before any work), lists it in ``--help`` and completes it. They are
# spelled out here, not imported, so that ``loadwise --help`` imports none of the project's packages;
# tests/flows/cli/test_choices.py checks each against the list it copies.

TraceFormat = Literal[
    "auto", "azure", "mooncake", "burstgpt", "vidur", "otel", "castillo", "alpaca-eval", "dolly", "canonical"
]
"""``warehouse.formats.FORMAT_CHOICES``: the formats ``loadwise ingest`` reads, and ``auto``."""
SqlFormat = Literal["table", "csv", "parquet", "json", "jsonl"]
"""``loadwise sql --format``: ``table`` (printed by rich), or ``warehouse.query.EXPORT_FORMATS``."""
WorkloadName = Literal["main", "table2", "azure", "prefix"]
"""``training.workloads.catalog.workload_names()``: the registered workloads."""
TrainWorkload = Literal["main", "table2", "azure", "prefix", "warehouse"]
"""``RouterTrainConfig.workload``: a registered workload, or ``warehouse`` (its published rows)."""
ProfileName = Literal[
    "v100-llama2-7b-paper",
    "v100-llama2-7b-paper-context",
    "a100-llama2-7b",
    "h100-llama2-7b",
    "a40-llama2-7b",
    "a100-llama3-8b",
]
"""``training.simulator.profiles.PROFILE_NAMES``: the latency profiles."""
QueuePolicyName = Literal["fcfs", "lwl", "binpack"]
"""``training.simulator.QueuePolicy`` values."""
HoldOrderName = Literal["arrival", "shortest"]
"""``training.simulator.RouterQueueOrder`` values."""
Table2Order = Literal["random", "alternating", "lh_first", "hl_first"]
"""``training.workloads.catalog.TABLE2_ORDERS``."""
BucketKind = Literal["time", "equal", "quantile", "log2"]
"""``training.length.config.BucketKind``: the length predictor's output-length buckets."""
RewardVariant = Literal["baseline", "aware", "guided"]
"""``training.rl.rewards.Variant``."""
RlAlgo = Literal["dqn", "maskable-ppo"]
"""``RouterTrainConfig.algo``."""

# -- option types ---------------------------------------------------------------------------------
# Reused as ``name: SomeOpt = default``; the default stays at each command (it differs by command).

WarehouseOpt = Annotated[Path | None, typer.Option(help="DuckDB file (default: the data home's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
JsonOnlyOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else")]
"""``--json`` of the replay commands and their benchmarks: stdout holds the JSON object and nothing else."""
FlowOpt = Annotated[bool, typer.Option("--flow", help="run as the Prefect flow")]

WorkloadOpt = Annotated[
    WorkloadName | None, typer.Option("--workload", "-w", help="named workload (default: main)")
]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="replay this trace file instead of a workload")
]
FormatOpt = Annotated[
    TraceFormat, typer.Option("--format", help="trace format of --trace (auto: detected from the file)")
]
InstancesOpt = Annotated[
    int | None, typer.Option("--instances", "-n", min=1, help="instances (default: workload's)")
]
RateOpt = Annotated[
    float | None, typer.Option("--rate", help="arrival rate, req/s, > 0 (traces: time-scaled)")
]
RequestsOpt = Annotated[int | None, typer.Option("--requests", min=1, help="held-out requests to replay")]


def replay_profile_names() -> list[str]:
    from training.simulator.profiles import profile_names  # at run time: --help imports no package

    return list(profile_names())


def check_replay_profile(value: str | None) -> str | None:
    """``replay`` / ``compare --profile``: a named profile or any ``<gpu>-<model>`` of
    ``training/simulator/specs`` (issue 18: one row of data adds a GPU, so the list is read from the
    tables, not spelled out here). A usage error (exit 2) names the value and where the list is."""
    if value is None or value in replay_profile_names():
        return value
    raise typer.BadParameter(
        f"{value!r} is not one of the latency profiles: a named one (a100-llama3-8b, ...) or "
        "<gpu>-<model> of training/simulator/specs (tab completion lists them; docs/simulator.md)"
    )


def complete_replay_profile(incomplete: str) -> list[str]:
    return [name for name in replay_profile_names() if name.startswith(incomplete)]


ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="PROFILE",
        callback=check_replay_profile,
        autocompletion=complete_replay_profile,
        help="latency profile: a named one (a100-llama3-8b, ...) or <gpu>-<model> from "
        "training/simulator/specs, e.g. a100-40gb-mistral-7b (default: workload's)",
    ),
]
SeedsOpt = Annotated[str, typer.Option("--seeds", help="comma-separated seeds")]
PolicyOpt = Annotated[
    QueuePolicyName, typer.Option("--queue-policy", case_sensitive=False, help="instance queue policy")
]
OrderOpt = Annotated[Table2Order | None, typer.Option("--order", help="table2 request order")]
HoldOrderOpt = Annotated[
    HoldOrderName,
    typer.Option(
        "--hold-order",
        case_sensitive=False,
        help="which request the router's hold queue offers first at a tick: arrival, or shortest "
        "(least predicted output tokens, aged by 100 tokens per second held)",
    ),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="write report.json, report.md and plots here")]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="also store results in marts.eval_results of this DuckDB file")
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="replay processes")]
ChunkOpt = Annotated[
    int | None,
    typer.Option(
        "--chunked-prefill",
        min=1,
        help="chunked prefill (Sarathi-Serve) with this many tokens per chunk on every instance",
    ),
]
HoldOpt = Annotated[
    float | None,
    typer.Option(
        "--hold-headroom",
        min=0.0,
        max=0.99,
        help="admission control: the KV headroom (fraction of an instance's cache) that must stay free "
        "for a request to start there (0.1 = the +hold routers' default)",
    ),
]


# -- checks ---------------------------------------------------------------------------------------


def fail(message: str) -> typer.Exit:
    """One line on stderr, exit 1: a refusal at run time (a store, a registry, a file), not of usage.

    Used as ``raise fail(...) from None``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def check_finite(value: float | None, option: str, *, positive: bool = False) -> None:
    """Refuse NaN / infinity (click's range checks let them through: every comparison with NaN is
    false) and, with ``positive``, values <= 0, as a usage error before any work."""
    if value is None:
        return
    if not math.isfinite(value) or (positive and value <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise typer.BadParameter(f"{option} must be {need}, got {value!r}")


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """Comma-separated seeds: whole numbers >= 0, each once (``eval.harness.check_seeds``); else a
    usage error naming ``option``."""
    from eval.harness import check_seeds

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise typer.BadParameter(f"{option} is empty")
    try:
        return list(check_seeds(seeds))
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: {exc}") from None


# -- output ---------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, infinity) replaced by None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def echo_json(obj: Any, *, indent: int | None = None) -> None:
    """``--json``: one JSON document on stdout (paths, dates and other non-JSON values as strings)."""
    typer.echo(json.dumps(obj, default=str, indent=indent))


def router_table(summary: dict[str, dict[str, Any]], title: str) -> Any:
    """A rich table of ``EvalReport.summary()``: one row per router, seconds, % vs round robin.

    Printed by ``compare`` / ``replay``, ``train-router`` and ``run``."""
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "router",
        "E2E mean",
        "E2E p99",
        "TTFT mean",
        "TBT mean",
        "queue wait",
        "preempt.",
        "vs RR %",
    ):
        table.add_column(col, justify="left" if col == "router" else "right", no_wrap=col == "router")
    for name, s in summary.items():
        vs = s["vs_round_robin_pct"]
        table.add_row(
            f"{name} (ORACLE)" if s["oracle"] else name,
            f"{s['e2e_mean']:.2f} ± {s['e2e_mean_ci95']:.2f}",
            f"{s['e2e_p99']:.2f}",
            f"{s['ttft_mean']:.3f}",
            f"{s['tbt_mean']:.4f}",
            f"{s['queue_wait_mean']:.2f}",
            f"{s['preemptions']:.1f}",
            "—" if vs is None else f"{vs:+.1f} ± {s['vs_round_robin_pct_ci95']:.1f}",
        )
    return table
