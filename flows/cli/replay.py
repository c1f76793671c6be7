"""``loadwise replay`` and ``compare``: replay routers on a workload or a trace file.

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level.
Thin wrappers over the evaluation builder (``eval.spec``: the options become one ``EvalSpec``).
Heavy imports (numpy, pandas, the simulator, matplotlib) happen inside the command bodies so
``loadwise --help`` stays fast.

Output contract: with ``--json`` stdout holds exactly one JSON object and nothing else
(``{"predictor": ..., "routers": {NAME: {"e2e_mean", "e2e_p99", "ttft_mean", "tbt_mean",
"preemptions", "vs_round_robin_pct", ...}}}``, seconds); progress and tables go to stderr / a rich
table. ``--predictor`` (``flows.cli.predict``): the length predictor of every non-oracle router; the
report, the JSON and the table's title name it (model name and version; ORACLE for the oracle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.predict import PredictorOpt, predictor_choice
from flows.cli.shared import (
    ChunkOpt,
    FormatOpt,
    HoldOpt,
    HoldOrderOpt,
    InstancesOpt,
    JsonOnlyOpt,
    OrderOpt,
    OutOpt,
    PolicyOpt,
    ProfileOpt,
    RateOpt,
    RequestsOpt,
    SeedsOpt,
    StoreOpt,
    TraceOpt,
    WorkersOpt,
    WorkloadOpt,
    check_finite,
    echo_json,
    fail,
    json_safe,
    parse_seeds,
    router_table,
)

app = typer.Typer()


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
    as_json: JsonOnlyOpt = False,
    out: OutOpt = None,
    store: StoreOpt = None,
    chunked_prefill: ChunkOpt = None,
    hold_headroom: HoldOpt = None,
    predictor: PredictorOpt = None,
    hold_order: HoldOrderOpt = "arrival",
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
        predictor=predictor,
        hold_order=hold_order,
    )


@app.command("compare")
def compare(
    routers: Annotated[str, typer.Option("--routers", help="comma-separated router names, or 'all'")] = "all",
    workload: WorkloadOpt = None,
    trace: TraceOpt = None,
    fmt: FormatOpt = "auto",
    instances: InstancesOpt = None,
    rate: RateOpt = None,
    requests: RequestsOpt = None,
    seeds: SeedsOpt = "0,1,2",
    profile: ProfileOpt = None,
    queue_policy: PolicyOpt = "fcfs",
    order: OrderOpt = None,
    as_json: JsonOnlyOpt = False,
    out: OutOpt = None,
    store: StoreOpt = None,
    workers: WorkersOpt = 1,
    chunked_prefill: ChunkOpt = None,
    hold_headroom: HoldOpt = None,
    predictor: PredictorOpt = None,
    hold_order: HoldOrderOpt = "arrival",
) -> None:
    """Replay several routers on the same held-out requests and seeds; compare with round robin."""
    from training.routing.registry import router_names

    names = (
        router_names() if routers.strip() == "all" else [r.strip() for r in routers.split(",") if r.strip()]
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
        predictor=predictor,
        hold_order=hold_order,
    )


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
    predictor: str | None = None,
    hold_order: str = "arrival",
) -> None:
    """The body of ``replay`` and ``compare``: check every option (usage errors, exit 2) and the
    ``--store`` target (exit 1) before any replay, build the ``EvalSpec``, replay, print."""
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
    _check_store(store)
    routers, learned = _resolve_learned(routers, err)
    for name in routers:
        try:
            get_entry(name)
        except KeyError as exc:
            raise typer.BadParameter(str(exc.args[0])) from None
    from training.simulator import RouterQueueOrder

    policy = QueuePolicy(queue_policy)  # typer checked both (shared.QueuePolicyName, HoldOrderName)
    queue_order = RouterQueueOrder(hold_order)
    choice = predictor_choice(predictor)
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
            predictor=choice,
            router_queue_order=queue_order,
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
            f"queue policy {policy.value}{chunking}, length predictor {choice.label}"
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
        except WarehouseError as exc:  # the store changed under us since _check_store: still one line
            raise fail(str(exc)) from None
        except ValueError as exc:  # the predictor's stored predictions could not be made or read
            raise fail(str(exc)) from None
    summary = report.summary()
    if as_json:
        echo_json(
            json_safe(
                {
                    "workload": report.workload,
                    "synthetic": report.synthetic,
                    "profile": profile_name,
                    "chunked_prefill_tokens": chunked_prefill,
                    "hold_order": queue_order.value,
                    "predictor": report.predictor,
                    "predictor_model": _predictor_model(choice),
                    "seeds": list(report.seeds),
                    "routers": summary,
                }
            )
        )
        return
    console = Console()
    console.width = max(console.width, 140)
    title = f"{report.workload}: mean over seeds {list(report.seeds)} (seconds), predictor {report.predictor}"
    console.print(router_table(summary, title))
    if out:
        err.print(f"wrote {out}/report.md, report.json and plots")


def _predictor_model(choice: Any) -> dict[str, Any]:
    """The predictor in the JSON: its kind, and the registered model's name and version (or folder)."""
    return {
        "kind": choice.kind,
        "model_name": choice.model_name if choice.kind == "registered" else None,
        "model_version": choice.version,
        "path": choice.path,
        "oracle": choice.is_oracle,
    }


def _check_store(store: Path | None) -> None:
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
        raise fail(str(exc)) from None


def _resolve_learned(routers: list[str], err: Any) -> tuple[list[str], dict[str, Path]]:
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
