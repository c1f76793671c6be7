"""CLI commands: ``loadwise replay``, ``loadwise compare``, ``loadwise bench replay`` and ``bench env``.

Thin wrappers over the evaluation builder (``eval.spec``: the options become one ``EvalSpec``).
Heavy imports (numpy, pandas, the simulator, matplotlib) happen inside the command bodies so
``loadwise --help`` stays fast.

Output contract: with ``--json`` stdout holds exactly one JSON object and nothing else
(``{"routers": {NAME: {"e2e_mean", "e2e_p99", "ttft_mean", "tbt_mean", "preemptions",
"vs_round_robin_pct", ...}}}``, seconds); progress and tables go to stderr / a rich table.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

WorkloadOpt = Annotated[
    str | None,
    typer.Option("--workload", "-w", help="named workload: main, table2, azure, prefix (default: main)"),
]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="replay this trace file instead of a workload")
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format", help="trace format: any `loadwise ingest` format (auto, canonical, azure, mooncake, ...)"
    ),
]
InstancesOpt = Annotated[
    int | None, typer.Option("--instances", "-n", min=1, help="instances (default: workload's)")
]
RateOpt = Annotated[
    float | None, typer.Option("--rate", help="arrival rate, req/s, > 0 (traces: time-scaled)")
]
RequestsOpt = Annotated[int | None, typer.Option("--requests", min=1, help="held-out requests to replay")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="latency profile (default: workload's)")]
PolicyOpt = Annotated[str, typer.Option("--queue-policy", help="instance queue policy: fcfs, lwl, binpack")]
OrderOpt = Annotated[
    str | None, typer.Option("--order", help="table2 request order: random, alternating, lh_first, hl_first")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else")]
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


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _fail(message: str) -> typer.Exit:
    """One line on stderr, exit 1: a refusal at run time (e.g. the ``--store`` warehouse), not of usage."""
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


def check_store(store: Path | None) -> None:
    """Refuse, before any replay, a ``--store`` that a write could not publish into (not a DuckDB
    database, a folder that is not writable): the checks ``warehouse.store.write_session`` runs
    first, so the replays are not thrown away at the end. One line, exit 1."""
    if store is None:
        return
    from warehouse.errors import WarehouseError
    from warehouse.store import check_write_target

    try:
        check_write_target(store)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None


def _run(
    routers: list[str],
    *,
    workload: str | None,
    trace: Path | None,
    fmt: str,
    instances: int | None,
    rate: float | None,
    requests: int | None,
    seeds: list[int],
    profile: str | None,
    queue_policy: str,
    order: str | None,
    as_json: bool,
    out: Path | None,
    store: Path | None,
    workers: int,
    chunked_prefill: int | None = None,
    hold_headroom: float | None = None,
) -> None:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import Progress

    from eval.sinks import DuckDBSink
    from eval.spec import EvalSpec, LearnedPolicy, NamedWorkload, TraceFile, build, evaluate_spec
    from flows.config_files import validation_message
    from training.routing.registry import get_entry
    from training.simulator import QueuePolicy
    from warehouse.errors import WarehouseError

    err = Console(stderr=True)
    if workload and trace:
        raise typer.BadParameter("give --workload or --trace, not both")
    if fmt != "auto" and trace is None:
        raise typer.BadParameter("--format applies to --trace only")
    if order is not None and (trace is not None or (workload or "main") != "table2"):
        raise typer.BadParameter("--order applies to --workload table2 only")
    check_finite(rate, "--rate", positive=True)
    check_finite(hold_headroom, "--hold-headroom")
    try:
        from eval.harness import check_routers, check_seeds

        check_routers(routers)
        seeds = list(check_seeds(seeds))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_store(store)
    routers, learned = resolve_learned(routers, err)
    for name in routers:
        try:
            get_entry(name)
        except KeyError as exc:
            raise typer.BadParameter(str(exc.args[0])) from None
    try:
        policy = QueuePolicy(queue_policy.lower())
    except ValueError:
        raise typer.BadParameter(
            f"--queue-policy must be fcfs, lwl or binpack, got {queue_policy!r}"
        ) from None
    try:
        spec = EvalSpec(
            workload=TraceFile(path=trace, format=fmt)
            if trace is not None
            else NamedWorkload(name=workload or "main"),
            requests=requests,
            rate=rate,
            order=order,
            instances=instances,
            profile=profile,
            queue_policy=policy,
            chunked_prefill_tokens=chunked_prefill,
            hold_headroom=hold_headroom,
            routers=tuple(routers),
            seeds=tuple(seeds),
            learned={name: LearnedPolicy(policy_dir=path) for name, path in learned.items()},
        )
    except ValidationError as exc:
        raise typer.BadParameter(validation_message(exc)) from None
    try:
        built = build(spec)
    except (KeyError, ValueError, FileNotFoundError, WarehouseError) as exc:
        raise typer.BadParameter(str(exc.args[0]) if exc.args else str(exc)) from None
    wl, profile_name = built.workload, built.profile
    if not as_json:
        chunking = f", chunked prefill {chunked_prefill} tokens" if chunked_prefill else ""
        err.print(
            f"[bold]{wl.description}[/bold] on {wl.num_instances} x {profile_name}, "
            f"queue policy {policy.value}{chunking}"
        )
    total = len(routers) * len(seeds)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("replaying", total=total)

        def tick(router: str, seed: int, done: int) -> None:
            progress.update(task, completed=done, description=f"{router} seed {seed}")

        try:
            report = evaluate_spec(
                spec,
                out_dir=out,
                sink=DuckDBSink(store) if store else None,
                progress=tick,
                workers=workers,
                built=built,
            )
        except WarehouseError as exc:  # the store changed under us since check_store: still one line
            raise _fail(str(exc)) from None
    summary = report.summary()
    if as_json:
        sys.stdout.write(
            json.dumps(
                _json_safe(
                    {
                        "workload": report.workload,
                        "synthetic": report.synthetic,
                        "profile": profile_name,
                        "chunked_prefill_tokens": chunked_prefill,
                        "seeds": list(report.seeds),
                        "routers": summary,
                    }
                )
            )
            + "\n"
        )
        return
    console = Console()
    console.width = max(console.width, 140)
    console.print(router_table(summary, f"{report.workload}: mean over seeds {list(report.seeds)} (seconds)"))
    if out:
        err.print(f"wrote {out}/report.md, report.json and plots")


def router_table(summary: dict[str, dict[str, Any]], title: str) -> Any:
    """A rich table of ``EvalReport.summary()``: one row per router, seconds, % vs round robin."""
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


def resolve_learned(routers: list[str], err: Any) -> tuple[list[str], dict[str, Path]]:
    """Replace a registered learned router (``llm-router@champion``, ``llm-router/3``) or a local
    policy folder by the registry entry ``rl``; returns the routers and ``{"rl": policy folder}``
    (``eval.spec.EvalSpec.learned``) when there was one."""
    import tempfile

    out: list[str] = []
    options: dict[str, Path] = {}
    from flows.registry import parse_model_ref

    for name in routers:
        local = Path(name)
        ref = None if local.exists() else parse_model_ref(name)
        if ref is not None:
            from flows.registry import ModelRegistry, RegistryError

            try:
                policy = ModelRegistry().download_artifact(
                    *ref, "policy_dir", Path(tempfile.mkdtemp(prefix="loadwise-policy-"))
                )
            except RegistryError as exc:
                raise typer.BadParameter(str(exc)) from None
            err.print(f"'rl' below is {name} (policy {policy})")
        elif local.is_dir() and (local / "obs_spec.json").exists():
            policy = local
        else:
            out.append(name)
            continue
        if "rl" in options:
            raise typer.BadParameter("compare one learned router at a time")
        options["rl"] = Path(policy)
        out.append("rl")
    return out, options


def print_figures(data: dict[str, Any], title: str, as_json: bool) -> None:
    """A benchmark's figures: one JSON object on stdout with ``as_json``, else a two-column rich table."""
    if as_json:
        sys.stdout.write(json.dumps(_json_safe(data)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in data.items():
        table.add_row(str(k), f"{v:.4g}" if isinstance(v, float) else str(v))
    Console().print(table)


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


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to the loadwise app and its bench group."""

    @app.command("replay")
    def replay(
        router: Annotated[str, typer.Option("--router", "-r", help="registered router name")],
        workload: WorkloadOpt = None,
        trace: TraceOpt = None,
        fmt: FormatOpt = "auto",
        instances: InstancesOpt = None,
        rate: RateOpt = None,
        requests: RequestsOpt = None,
        seed: Annotated[int, typer.Option("--seed", min=0, help="replay seed (>= 0)")] = 0,
        profile: ProfileOpt = None,
        queue_policy: PolicyOpt = "fcfs",
        order: OrderOpt = None,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        store: StoreOpt = None,
        chunked_prefill: ChunkOpt = None,
        hold_headroom: HoldOpt = None,
    ) -> None:
        """Replay one router on a workload or trace (one seed) and print its latency figures."""
        _run(
            [router],
            workload=workload,
            trace=trace,
            fmt=fmt,
            instances=instances,
            rate=rate,
            requests=requests,
            seeds=[seed],
            profile=profile,
            queue_policy=queue_policy,
            order=order,
            as_json=as_json,
            out=out,
            store=store,
            workers=1,
            chunked_prefill=chunked_prefill,
            hold_headroom=hold_headroom,
        )

    @app.command("compare")
    def compare(
        routers: Annotated[
            str, typer.Option("--routers", help="comma-separated router names, or 'all'")
        ] = "all",
        workload: WorkloadOpt = None,
        trace: TraceOpt = None,
        fmt: FormatOpt = "auto",
        instances: InstancesOpt = None,
        rate: RateOpt = None,
        requests: RequestsOpt = None,
        seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds")] = "0,1,2",
        profile: ProfileOpt = None,
        queue_policy: PolicyOpt = "fcfs",
        order: OrderOpt = None,
        as_json: JsonOpt = False,
        out: OutOpt = None,
        store: StoreOpt = None,
        workers: WorkersOpt = 1,
        chunked_prefill: ChunkOpt = None,
        hold_headroom: HoldOpt = None,
    ) -> None:
        """Replay several routers on the same held-out requests and seeds; compare with round robin."""
        from training.routing.registry import router_names

        names = (
            router_names()
            if routers.strip() == "all"
            else [r.strip() for r in routers.split(",") if r.strip()]
        )
        if not names:
            raise typer.BadParameter("--routers is empty")
        _run(
            names,
            workload=workload,
            trace=trace,
            fmt=fmt,
            instances=instances,
            rate=rate,
            requests=requests,
            seeds=parse_seeds(seeds),
            profile=profile,
            queue_policy=queue_policy,
            order=order,
            as_json=as_json,
            out=out,
            store=store,
            workers=workers,
            chunked_prefill=chunked_prefill,
            hold_headroom=hold_headroom,
        )

    @bench_app.command("replay")
    def bench_replay(as_json: JsonOpt = False) -> None:
        """Simulator throughput (requests replayed per second) next to a same-run baseline."""
        from training.routing.bench import run_replay_benchmark

        print_figures(run_replay_benchmark(), "replay benchmark", as_json)

    @bench_app.command("env")
    def bench_env(
        requests: Annotated[int, typer.Option("--requests", min=1, help="requests in the trace")] = 2000,
        hold_headroom: HoldOpt = None,
        repeats: Annotated[int, typer.Option("--repeats", min=1, help="episodes per mode (best wall)")] = 1,
        as_json: JsonOpt = False,
    ) -> None:
        """RL env speed (decisions per second) next to the same replay through simulate (a ratio)."""
        from training.rl.bench import run_env_benchmark

        check_finite(hold_headroom, "--hold-headroom")
        result = run_env_benchmark(num_requests=requests, hold_kv_headroom=hold_headroom, repeats=repeats)
        print_figures(result.model_dump(), "RL environment benchmark", as_json)
