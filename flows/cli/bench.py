"""``loadwise bench ingest | replay | env | fork | router | predictor``: each prints its figure next to a
same-run baseline (a ratio).

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) adds ``app`` as the ``bench`` group;
``make bench`` runs ingest, replay (also on Vidur's trace), env and fork. The measurements live with
what they measure
(``warehouse/bench.py``, ``training/routing/bench.py``, ``training/routing/bench_engine.py``,
``training/rl/bench.py``, ``flows/router_latency_bench.py``, ``training/length/bench.py``); these
commands only run and print them. Only typer is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.shared import HoldOpt, JsonOnlyOpt, JsonOpt, check_finite, echo_json, fail, json_safe

app = typer.Typer(help="Benchmarks: each prints its figure next to a same-run baseline (a ratio).")


@app.command("ingest")
def bench_ingest(
    rows: Annotated[int, typer.Option(help="rows of the synthetic Azure-schema file")] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="best of this many runs per figure")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Ingest rows/s (full ingest) next to DuckDB's raw read_csv of the same file, same run."""
    from warehouse.bench import run_ingest_bench

    result = run_ingest_bench(rows=rows, repeat=repeat)
    if as_json:
        echo_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest benchmark: {rows:,} rows ({result['file_mb']} MB), best of {repeat}")
    for column in ("measure", "seconds", "rows/s", "ingest ÷ this", "peak RSS (MB)"):
        table.add_column(column)
    for label, key, ratio in (
        ("DuckDB read_csv → memory table", "read_csv_memory", result["ratio_vs_memory"]),
        ("DuckDB read_csv → disk table", "read_csv_disk", result["ratio_vs_disk"]),
        ("loadwise ingest (full)", "ingest", 1.0),
    ):
        m = result[key]
        rss = f"{m['peak_rss_mb']:,.0f} (start {m['rss_start_mb']:,.0f})"
        table.add_row(label, f"{m['seconds']:.3f}", f"{m['rows_per_s']:,.0f}", f"{ratio:.2f}", rss)
    if result["azure"]:
        a = result["azure"]
        table.add_row(
            f"ingest real Azure ({a['rows']:,} rows)",
            f"{a['seconds']:.3f}",
            f"{a['rows_per_s']:,.0f}",
            "",
            "",
        )
    Console().print(table)
    typer.echo(
        "load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in result["load_average"])
    )


@app.command("replay")
def bench_replay(
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace", exists=True, dir_okay=False, help="trace file to replay (any warehouse format)"
        ),
    ] = None,
    profile: Annotated[str, typer.Option("--profile", help="latency profile")] = "v100-llama2-7b-paper",
    instances: Annotated[int, typer.Option("--instances", min=1, help="instances in the cluster")] = 4,
    router: Annotated[str, typer.Option("--router", help="registered router")] = "round_robin",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="replays per mode (best wall)")] = 1,
    as_json: JsonOnlyOpt = False,
) -> None:
    """Simulator throughput (requests replayed per second) next to a same-run baseline: the event
    loop (decode stretches) against the step-by-step replay of the same trace, and their ratio."""
    from training.routing.bench import run_replay_benchmark
    from training.routing.registry import router_names
    from training.simulator.profiles import PROFILE_NAMES
    from warehouse.errors import WarehouseError

    if profile not in PROFILE_NAMES:
        raise typer.BadParameter(
            f"unknown profile {profile!r}; one of {', '.join(PROFILE_NAMES)}", param_hint="--profile"
        )
    if router not in router_names(include_configured=True):
        names = ", ".join(router_names())
        raise typer.BadParameter(f"unknown router {router!r}; one of {names}", param_hint="--router")
    try:
        result = run_replay_benchmark(
            num_instances=instances,
            profile=profile,
            trace=None if trace is None else str(trace),
            router=router,
            repeats=repeats,
        )
    except (ValueError, KeyError, FileNotFoundError, WarehouseError) as exc:
        raise fail(" ".join(str(exc).strip("'\"").split())) from None
    _print_figures(result, "replay benchmark", as_json)


@app.command("env")
def bench_env(
    requests: Annotated[int, typer.Option("--requests", min=1, help="requests in the trace")] = 2000,
    hold_headroom: HoldOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="episodes per mode (best wall)")] = 1,
    as_json: JsonOnlyOpt = False,
) -> None:
    """RL env speed (decisions per second) next to the same replay through simulate (a ratio)."""
    from training.rl.bench import run_env_benchmark

    check_finite(hold_headroom, "--hold-headroom")
    result = run_env_benchmark(num_requests=requests, hold_kv_headroom=hold_headroom, repeats=repeats)
    figures = result.model_dump()
    if hold_headroom is not None:  # held requests: router calls with Hold next to ticking (same run)
        from training.routing.bench_engine import run_hold_benchmark

        hold = run_hold_benchmark(num_requests=requests, hold_kv_headroom=hold_headroom)
        figures.update({f"replay_{k}": v for k, v in hold.items()})
    _print_figures(figures, "RL environment benchmark", as_json)


@app.command("fork")
def bench_fork(
    trace: Annotated[
        Path | None,
        typer.Option("--trace", exists=True, dir_okay=False, help="trace file (default: the Vidur trace)"),
    ] = None,
    profile: Annotated[str, typer.Option("--profile", help="latency profile")] = "a100-llama2-7b",
    forks: Annotated[int, typer.Option("--forks", min=1, help="forks per timed batch")] = 200,
    as_json: JsonOnlyOpt = False,
) -> None:
    """Cost of forking a replay mid-way (lookahead rollouts), in microseconds per instance, at 4 and 8
    instances, next to copy.deepcopy of the same state and to one routing decision (ratios)."""
    from training.routing.bench_engine import run_fork_benchmark
    from training.simulator.profiles import PROFILE_NAMES

    if profile not in PROFILE_NAMES:
        raise typer.BadParameter(
            f"unknown profile {profile!r}; one of {', '.join(PROFILE_NAMES)}", param_hint="--profile"
        )
    try:
        result = run_fork_benchmark(None if trace is None else str(trace), profile, forks=forks)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    if as_json:
        echo_json(json_safe(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"fork benchmark: {result['requests']:,} requests on {result['profile']}, round robin"
    )
    columns = (
        ("instances", "instances", "{}"),
        ("decision", "decision", "{:,}"),
        ("running / inst.", "running_per_instance", "{:.1f}"),
        ("fork µs", "fork_us", "{:,.0f}"),
        ("fork µs / inst.", "fork_us_per_instance", "{:,.0f}"),
        ("deepcopy µs", "deepcopy_us", "{:,.0f}"),
        ("deepcopy ÷ fork", "deepcopy_over_fork", "{:,.0f}"),
        ("fork ÷ decision", "fork_over_decision", "{:.1f}"),
        ("identical", "identical", "{}"),
    )
    for label, _, _ in columns:
        table.add_column(label, justify="right")
    for row in result["points"]:
        table.add_row(*(fmt.format(row[key]) for _, key, fmt in columns))
    Console().print(table)
    typer.echo("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in result["load_average"]))


@app.command("router")
def bench_router(
    model: Annotated[str, typer.Option(help="registered router to load")] = "llm-router@champion",
    calls: Annotated[int, typer.Option(min=100, help="timed one-request calls")] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Routing latency per request in a separate process that loads the router from MLflow."""
    from flows.registry import ModelRegistry, model_uri, parse_model_ref
    from flows.router_latency_bench import run_isolated

    ref = parse_model_ref(model)
    if ref is None:
        raise typer.BadParameter(f"must be NAME@ALIAS or NAME/VERSION, got {model!r}", param_hint="--model")
    registry = ModelRegistry()
    uri = model_uri(*ref)
    try:
        result = run_isolated(uri, registry.tracking_uri, calls)
    except RuntimeError as exc:
        raise fail(f"{exc} (is a router registered? loadwise train-router)") from None
    if as_json:
        echo_json(result)
        return
    typer.echo(
        f"{uri} ({result['policy']}): loaded in {result['load_s']:.2f} s; per routing call p50/p99: "
        f"{result['pyfunc_p50_ms']:.3f}/{result['pyfunc_p99_ms']:.3f} ms (pyfunc predict, schema check "
        f"of a {result['schema']} input of {result['columns']} columns), "
        f"{result['unwrapped_p50_ms']:.3f}/{result['unwrapped_p99_ms']:.3f} ms (same run, unwrapped "
        f"policy: x{result['schema_overhead_p99']:.2f} at p99); "
        + ("target <= 1 ms p99 met" if result["meets_1ms_p99"] else "target <= 1 ms p99 NOT met")
    )


@app.command("predictor")
def bench_predictor(
    model: Annotated[str, typer.Option(help="registered predictor (NAME@ALIAS or NAME/VERSION)")] = (
        "length-predictor@champion"
    ),
    n: Annotated[int, typer.Option(min=64, help="real test prompts to time")] = 256,
    warehouse: Annotated[Path | None, typer.Option(help="DuckDB file with the prompts")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Length-predictor CPU latency per request at batch 1 and batch 64 (1 thread, real prompts)."""
    import tempfile

    from flows.registry import ModelRegistry, RegistryError, parse_model_ref

    ref = parse_model_ref(model)
    if ref is None:
        raise typer.BadParameter(f"must be NAME@ALIAS or NAME/VERSION, got {model!r}", param_hint="--model")
    import torch

    from training.length.bench import TARGET_MS_AT_64, benchmark_latency
    from training.length.train import TrainedLengthPredictor

    try:
        folder = ModelRegistry().download_artifact(
            *ref, "predictor", Path(tempfile.mkdtemp(prefix="loadwise-bench-"))
        )
    except RegistryError as exc:
        raise fail(f"{exc} (train one first: loadwise train-predictor)") from None
    torch.set_num_threads(1)
    result = benchmark_latency(TrainedLengthPredictor.load(folder), n, warehouse=warehouse, repeats=3)
    result["batch1_over_batch64"] = result["batch1_ms_per_request"] / result["batch64_ms_per_request"]
    if as_json:
        echo_json(result)
        return
    typer.echo(
        f"{model}: {result['batch64_ms_per_request']:.2f} ms/request at batch 64 "
        f"({result['batch64_cpu_ms_per_request']:.2f} CPU ms), {result['batch1_ms_per_request']:.2f} ms "
        f"at batch 1 (x{result['batch1_over_batch64']:.1f}); target <= {TARGET_MS_AT_64} ms at batch 64: "
        + ("met" if result["meets_target_at_64"] else "NOT met")
    )


def _print_figures(data: dict[str, Any], title: str, as_json: bool) -> None:
    """A benchmark's figures: one JSON object on stdout with ``as_json``, else a two-column rich table."""
    if as_json:
        echo_json(json_safe(data))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in data.items():
        table.add_row(str(k), f"{v:.4g}" if isinstance(v, float) else str(v))
    Console().print(table)
