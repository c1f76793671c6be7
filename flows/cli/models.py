"""``loadwise train-predictor``, ``fit-estimator``, ``train-router``, ``models``, ``promote`` and
``rollback``: the learned models' commands.

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level.
Each trainer first probes the model registry (a bad ``MLFLOW_TRACKING_URI`` is one line within
seconds, before any training), then trains / fits, evaluates on held-out data, logs and registers a
new MLflow model version (alias ``challenger``; an unchanged model is reported, not registered again)
and runs the model's promotion gate (``flows.models``). ``--json`` prints one object: the metrics,
the registered name, version and aliases, and the gate's decision. ``--flow`` runs the same job as
its Prefect flow (a run with a markdown report artifact). ``MLFLOW_TRACKING_URI`` is respected; the
default store is ``$LOADWISE_HOME/mlflow.db``. ``models`` / ``promote`` / ``rollback`` never create a
store: with none they say so. Only typer is imported at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from flows.cli.predict import PredictorOpt, predictor_choice
from flows.cli.shared import (
    BucketKind,
    ChunkOpt,
    FlowOpt,
    HoldOpt,
    JsonOpt,
    ProfileName,
    RewardVariant,
    RlAlgo,
    TrainWorkload,
    WarehouseOpt,
    echo_json,
    fail,
    parse_seeds,
    router_table,
)
from flows.cli.ui import ui_hint

app = typer.Typer()

AliasOpt = Annotated[
    str,
    typer.Option(
        "--alias",
        help="the gated alias: champion (the production setting's) or a setting alias, e.g. paper-main",
    ),
]

PREDICTOR_HEADLINE = (
    "acc",
    "acc_tabular",
    "baseline_task_majority",
    "ceiling",
    "honest_score",
    "kendall_tau",
    "mae_tokens",
)
HEADLINE = (
    "acc",
    "honest_score",
    "mae_tokens",
    "vs_best_baseline_pct",
    "chosen.holdout_r2",
    "chosen.holdout_mape_pct",
    "mean_e2e_s",
    "improvement_vs_round_robin_pct",
)
"""Metrics ``loadwise models`` shows by default (each model logs a few of these)."""
ROUTER_HEADLINE = (
    "mean_e2e_s",
    "p99_e2e_s",
    "improvement_vs_round_robin_pct",
    "vs_best_baseline_pct",
    "train.steps_per_s",
    "train.wall_s",
)
ESTIMATOR_HEADLINE = (
    "chosen.holdout_r2",
    "chosen.holdout_mape_pct",
    "chosen.grad1_s_per_prefill_token",
    "chosen.grad2_s_per_decode_context_token",
    "chosen.per_decode_seq_s",
    "fitted",
)


@app.command("train-predictor")
def train_predictor_cmd(
    serving_model: Annotated[
        str, typer.Option(help="serving model whose output lengths to learn (CASTILLO name)")
    ] = "meta-llama--Llama-3.1-8B-Instruct",
    buckets: Annotated[BucketKind, typer.Option(help="output-length buckets")] = "time",
    seed: Annotated[int, typer.Option(min=0, help="training seed (the split is the warehouse's)")] = 0,
    warehouse: WarehouseOpt = None,
    as_json: JsonOpt = False,
    flow: FlowOpt = False,
) -> None:
    """Train the task-aware output-length predictor on the warehouse; register length-predictor."""
    config = {"serving_model": serving_model, "buckets": buckets, "seed": seed}
    registry = _checked_registry()

    def job() -> dict[str, Any]:
        if flow:
            from flows.models import retrain_length_predictor

            return retrain_length_predictor(
                config, str(warehouse) if warehouse else None, registry.tracking_uri
            )
        from flows.models import train_and_register_predictor

        return train_and_register_predictor(config, warehouse, registry, _progress(as_json)).to_dict()

    _run_and_show(job, as_json, registry.tracking_uri, PREDICTOR_HEADLINE)


@app.command("fit-estimator")
def fit_estimator_cmd(
    profile: Annotated[ProfileName, typer.Option(help="GPU latency profile to fit")] = "a100-llama2-7b",
    seed: Annotated[int, typer.Option(min=0, help="sampling seed")] = 0,
    as_json: JsonOpt = False,
    flow: FlowOpt = False,
) -> None:
    """Fit the workload impact estimator from GPU profiles; register impact-estimator."""
    config = {"profile": profile, "seed": seed}
    registry = _checked_registry()

    def job() -> dict[str, Any]:
        if flow:
            from flows.models import refit_impact_estimator

            return refit_impact_estimator(config, registry.tracking_uri)
        from flows.models import fit_and_register_estimator

        return fit_and_register_estimator(config, registry, _progress(as_json)).to_dict()

    _run_and_show(job, as_json, registry.tracking_uri, ESTIMATOR_HEADLINE)


@app.command("train-router")
def train_router_cmd(
    variant: Annotated[RewardVariant | None, typer.Option(help="reward variant (default: guided)")] = None,
    method: Annotated[
        Literal["rl", "distill"] | None,
        typer.Option(
            help="rl: stable-baselines3 on the reward; distill: imitate the lookahead teacher "
            "(behaviour cloning + DAgger, issue 17) (default: rl)"
        ),
    ] = None,
    algo: Annotated[RlAlgo | None, typer.Option(help="learning algorithm (default: dqn)")] = None,
    timesteps: Annotated[
        int | None, typer.Option(min=1, help="environment steps (routing decisions) (default: 100000)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="training seed (default: 0)")] = None,
    requests: Annotated[
        int | None,
        typer.Option(min=10, help="requests per episode and per held-out replay (default: 2000)"),
    ] = None,
    workload: Annotated[
        TrainWorkload | None,
        typer.Option(
            help="named workload whose training pool makes the episodes, or warehouse (seeded windows "
            "of its rows) (default: main)"
        ),
    ] = None,
    profile: Annotated[
        ProfileName | None, typer.Option(help="latency profile (default: v100-llama2-7b-paper)")
    ] = None,
    instances: Annotated[int | None, typer.Option(min=1, help="instances (default: 4)")] = None,
    rate: Annotated[float | None, typer.Option(min=0.001, help="arrival rate, req/s (default: 20)")] = None,
    chunked_prefill: ChunkOpt = None,
    hold_headroom: HoldOpt = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="RouterTrainConfig settings (.toml, .yaml or .json; the flags override them)",
        ),
    ] = None,
    eval_seeds: Annotated[str, typer.Option(help="comma-separated held-out replay seeds")] = "0,1,2",
    predictor: PredictorOpt = None,
    alias: AliasOpt = "champion",
    as_json: JsonOpt = False,
    flow: Annotated[bool, typer.Option("--flow", help="run as the Prefect flow train-router")] = False,
) -> None:
    """Train the RL router on the training pool, evaluate it against every baseline on held-out
    replays, register llm-router (default setting, the paper's: 4 x V100 Llama-2-7B, 20 req/s,
    5-task mix). --alias paper-main gates it for llm-router@paper-main (that setting's champion)."""
    from pydantic import ValidationError

    from flows.config_files import error_line, read_config_file
    from flows.registry import RegistryError
    from training.rl.config import RouterTrainConfig

    seeds = parse_seeds(eval_seeds, "--eval-seeds")
    check_alias(alias)
    flags = {"variant": variant, "method": method, "algo": algo, "total_timesteps": timesteps, "seed": seed,
             "episode_requests": requests, "workload": workload, "profile": profile,
             "num_instances": instances, "rate_rps": rate,
             "chunked_prefill_tokens": chunked_prefill, "hold_kv_headroom": hold_headroom}  # fmt: skip
    try:
        config = read_config_file(config_file) if config_file else {}
        config.update({k: v for k, v in flags.items() if v is not None})
        if predictor is not None or "predictor" not in config:  # the flag, else the file, else default
            config["predictor"] = predictor_choice(predictor).model_dump(mode="json")
        config = RouterTrainConfig.model_validate(config).model_dump(mode="json", exclude_defaults=True)
    except (ValidationError, ValueError, OSError) as exc:  # a usage error, as for `loadwise run`
        typer.echo(f"error: invalid router config: {error_line(exc, config_file)}", err=True)
        raise typer.Exit(2) from None
    registry = _checked_registry()
    try:
        if flow:
            from flows.models import train_router_flow

            result = train_router_flow(config, seeds, registry.tracking_uri, alias)
            summary = result["evaluation"]
        else:
            from flows.models import train_and_register_router

            published, report = train_and_register_router(
                config, registry, tuple(seeds), not as_json, alias=alias
            )
            result = published.to_dict()
            summary = report.summary()
            result["evaluation"] = summary
    except (ValueError, FileNotFoundError, RegistryError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(result)
        return
    from rich.console import Console

    Console(width=140).print(router_table(summary, f"held-out replays, seeds {seeds} ('rl' = this version)"))
    _print_result(result, registry.tracking_uri, ROUTER_HEADLINE)


@app.command("models")
def models_cmd(
    as_json: JsonOpt = False,
    all_metrics: Annotated[
        bool, typer.Option("--all-metrics", help="every metric, not the headline")
    ] = False,
) -> None:
    """List registered models: versions, aliases and headline metrics."""
    from flows.registry import ModelRegistry, NoRegistryError, RegistryError

    registry = ModelRegistry(create=False)
    listing: list[dict[str, Any]] = []
    try:
        names = registry.model_names()
    except NoRegistryError as exc:  # nothing registered yet: an empty listing, nothing created
        if as_json:
            echo_json({"tracking_uri": registry.tracking_uri, "models": []})
        else:
            typer.echo(str(exc))
        return
    except RegistryError as exc:
        raise fail(str(exc)) from None
    for name in names:
        versions: list[dict[str, Any]] = []
        for v in registry.versions(name):
            keep = v.metrics if all_metrics else {k: m for k, m in v.metrics.items() if k in HEADLINE}
            versions.append(
                {
                    "version": v.version,
                    "aliases": list(v.aliases),
                    "metrics": keep,
                    "run_id": v.run_id,
                    "git_commit": v.tags.get("loadwise.git_commit", ""),
                    "data_fingerprint": v.tags.get("loadwise.data_fingerprint", ""),
                }
            )
        listing.append({"name": name, "versions": versions})
    if as_json:
        echo_json({"tracking_uri": registry.tracking_uri, "models": listing})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"registered models ({registry.tracking_uri})")
    for col in ("model", "version", "aliases", "metrics", "commit"):
        table.add_column(col)
    for model in listing:
        for row in model["versions"]:
            metrics = ", ".join(f"{k}={x:.4g}" for k, x in sorted(row["metrics"].items()))
            table.add_row(
                model["name"], row["version"], ",".join(row["aliases"]), metrics, row["git_commit"][:8]
            )
    Console().print(table if listing else "no registered models yet")
    if listing:
        Console().print(f"MLflow UI: {ui_hint(registry.tracking_uri)}", soft_wrap=True)


@app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version number to make champion")],
    force: Annotated[
        bool, typer.Option("--force", help="promote even though the gate refuses (needs --reason)")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="why a forced promotion overrides the gate (recorded)")
    ] = None,
    alias: AliasOpt = "champion",
) -> None:
    """Move the champion alias to VERSION by hand, if the model's gate agrees (--force overrides it).

    Prints the gate's verdict: for length-predictor and impact-estimator their held-out metric
    against the current champion; for llm-router the statistical gate's comparison recorded on the
    version (valid only while the champion it compared with still serves). A forced promotion is
    recorded on the version (loadwise.forced: who, when, why, the verdict it overrode).
    With --alias paper-main: the same for llm-router's champion of that setting.
    """
    from flows.models import promote_by_hand
    from flows.registry import ModelRegistry, RegistryError

    if force and not (reason and reason.strip()):
        typer.echo("error: --force needs --reason TEXT (recorded on the version)", err=True)
        raise typer.Exit(2)
    if not version.isdigit():
        typer.echo(f"error: VERSION must be a version number, got {version!r}", err=True)
        raise typer.Exit(2)
    check_alias(alias)
    registry = ModelRegistry(create=False)
    try:
        done = promote_by_hand(registry, name, version, force=force, why=(reason or "").strip(), alias=alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    verdict = done.verdict
    if done.before is not None and done.before.version == version:
        typer.echo(f"{name}: v{version} already is the {alias}; nothing moved")
        return
    typer.echo(f"gate on {name} v{version}: {'passes' if verdict.passed else 'refuses'}: {verdict.reason}")
    if not done.moved:
        raise fail(
            f"not promoted: the gate refuses {name} v{version}; pass --force --reason TEXT to "
            "override it (recorded on the version)"
        )
    _show_move(name, done.before, done.after, alias)
    if done.forced:
        typer.echo(f"forced: recorded on v{version} (loadwise.forced)")


@app.command("rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="registered model name")], alias: AliasOpt = "champion"
) -> None:
    """Move the champion alias (or the setting alias given) back to the version that held it before."""
    from flows.registry import ModelRegistry, RegistryError

    check_alias(alias)
    registry = ModelRegistry(create=False)
    try:
        old, new = registry.rollback(name, alias)
        _show_move(name, registry.get(name, old), registry.get(name, new), alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None


def check_alias(alias: str) -> None:
    """Exit 2 (a usage error) unless ``alias`` is a gated alias (``flows.registry.GATED_ALIASES``)."""
    from flows.registry import GATED_ALIASES

    if alias not in GATED_ALIASES:
        known = ", ".join(sorted(GATED_ALIASES))
        typer.echo(f"error: --alias must be one of {known}, got {alias!r}", err=True)
        raise typer.Exit(2)


def _checked_registry() -> Any:
    """The default registry, probed before any long work (a bad store: one line, exit 1)."""
    from flows.registry import ModelRegistry, RegistryError

    registry = ModelRegistry()
    try:
        registry.check()
    except RegistryError as exc:
        raise fail(str(exc)) from None
    return registry


def _progress(quiet: bool) -> Any:
    """The trainers' progress callback: one ``· message`` line on stderr each (none with ``--json``)."""
    if quiet:
        return None
    return lambda msg: typer.echo(f"· {msg}", err=True)


def _run_and_show(
    job: Callable[[], dict[str, Any]], as_json: bool, tracking_uri: str, headline: tuple[str, ...]
) -> None:
    """Run a train-and-register job; print its JSON or its table (a bad input is a one-line error)."""
    from flows.registry import RegistryError
    from warehouse.errors import WarehouseError

    try:
        result = job()
    except (ValueError, FileNotFoundError, WarehouseError, RegistryError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(result)
    else:
        _print_result(result, tracking_uri, headline)


def _print_result(result: dict[str, Any], tracking_uri: str, headline: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    model = result["model"]
    table = Table(title=f"{model['name']} v{model['version']}  ({', '.join(model['aliases']) or 'no alias'})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = result["metrics"]
    shown = [k for k in headline if k in metrics] or sorted(metrics)
    for key in shown:
        table.add_row(key, f"{metrics[key]:.4g}")
    console.print(table)
    promo = result["promotion"]
    console.print(("[green]promoted[/green]: " if promo["promoted"] else "not promoted: ") + promo["reason"])
    console.print(f"all {len(metrics)} metrics, config and report: {ui_hint(tracking_uri)}")


def _show_move(name: str, before: Any, after: Any, alias: str = "champion") -> None:
    def fmt(v: Any) -> str:
        if v is None:
            return "none"
        shown = ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()) if k in HEADLINE)
        return f"v{v.version} ({shown or 'no headline metrics'})"

    typer.echo(f"{name}: {alias} {fmt(before)} -> {fmt(after)}")
