"""CLI commands of the learned models: ``train-predictor``, ``fit-estimator``, ``train-router``,
``models``, ``promote``, ``rollback``. See flows/cli.py.

Each trainer first probes the model registry (a bad ``MLFLOW_TRACKING_URI`` is one line within
seconds, before any training), then trains / fits, evaluates on held-out data, logs and registers a
new MLflow model version (alias ``challenger``; an unchanged model is reported, not registered again)
and runs the model's promotion gate (``flows.models``). ``--json`` prints one object: the metrics,
the registered name, version and aliases, and the gate's decision. ``--flow`` runs the same job as
its Prefect flow (a run with a markdown report artifact). ``MLFLOW_TRACKING_URI`` is respected; the
default store is ``$LOADWISE_HOME/mlflow.db``. ``models`` / ``promote`` / ``rollback`` never create a
store: with none they say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_replay import ChunkOpt, HoldOpt


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    return lambda msg: typer.echo(f"· {msg}", err=True)


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
    console.print(
        f"all {len(metrics)} metrics, config and report: mlflow ui --backend-store-uri {tracking_uri}"
    )


def _run_and_show(
    job: Callable[[], dict[str, Any]], as_json: bool, tracking_uri: str, headline: tuple[str, ...]
) -> None:
    """Run a train-and-register job; print its JSON or its table (a bad input is a one-line error)."""
    from flows.registry import RegistryError
    from warehouse.errors import WarehouseError

    try:
        result = job()
    except (ValueError, FileNotFoundError, WarehouseError, RegistryError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        _print_result(result, tracking_uri, headline)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to the loadwise app."""

    @app.command("train-predictor")
    def train_predictor_cmd(
        serving_model: Annotated[
            str, typer.Option(help="serving model whose output lengths to learn (CASTILLO name)")
        ] = "meta-llama--Llama-3.1-8B-Instruct",
        buckets: Annotated[str, typer.Option(help="time|equal|quantile|log2 output-length buckets")] = "time",
        seed: Annotated[int, typer.Option(min=0, help="split and training seed")] = 0,
        warehouse: Annotated[Path | None, typer.Option(help="DuckDB file (default: the data home's)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        flow: Annotated[bool, typer.Option("--flow", help="run as the Prefect flow")] = False,
    ) -> None:
        """Train the task-aware output-length predictor on the warehouse; register length-predictor."""
        if buckets not in ("time", "equal", "quantile", "log2"):
            raise _fail(f"--buckets must be time, equal, quantile or log2, got {buckets!r}")
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
        profile: Annotated[str, typer.Option(help="GPU latency profile to fit")] = "a100-llama2-7b",
        seed: Annotated[int, typer.Option(min=0, help="sampling seed")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        flow: Annotated[bool, typer.Option("--flow", help="run as the Prefect flow")] = False,
    ) -> None:
        """Fit the workload impact estimator from GPU profiles; register impact-estimator."""
        from training.simulator.profiles import PROFILE_NAMES

        if profile not in PROFILE_NAMES:
            raise _fail(f"unknown --profile {profile!r}; one of {', '.join(PROFILE_NAMES)}")
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
        variant: Annotated[
            str | None, typer.Option(help="baseline|aware|guided (reward variant) (default: guided)")
        ] = None,
        algo: Annotated[str | None, typer.Option(help="dqn|maskable-ppo (default: dqn)")] = None,
        timesteps: Annotated[
            int | None, typer.Option(min=1, help="environment steps (routing decisions) (default: 100000)")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="training seed (default: 0)")] = None,
        requests: Annotated[
            int | None,
            typer.Option(min=10, help="requests per episode and per held-out replay (default: 2000)"),
        ] = None,
        workload: Annotated[
            str | None,
            typer.Option(help="named workload whose training pool makes the episodes (default: main)"),
        ] = None,
        profile: Annotated[
            str | None, typer.Option(help="latency profile (default: v100-llama2-7b-paper)")
        ] = None,
        instances: Annotated[int | None, typer.Option(min=1, help="instances (default: 4)")] = None,
        rate: Annotated[
            float | None, typer.Option(min=0.001, help="arrival rate, req/s (default: 20)")
        ] = None,
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
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        flow: Annotated[bool, typer.Option("--flow", help="run as the Prefect flow train-router")] = False,
    ) -> None:
        """Train the RL router on the training pool, evaluate it against every baseline on held-out
        replays, register llm-router (default setting, the paper's: 4 x V100 Llama-2-7B, 20 req/s,
        5-task mix)."""
        from pydantic import ValidationError

        from flows.cli_replay import parse_seeds, router_table
        from flows.config_files import read_config_file
        from flows.registry import RegistryError
        from training.rl.config import RouterTrainConfig

        if variant is not None and variant not in ("baseline", "aware", "guided"):
            raise _fail(f"--variant must be baseline, aware or guided, got {variant!r}")
        if algo is not None and algo not in ("dqn", "maskable-ppo"):
            raise _fail(f"--algo must be dqn or maskable-ppo, got {algo!r}")
        seeds = parse_seeds(eval_seeds, "--eval-seeds")
        flags = {"variant": variant, "algo": algo, "total_timesteps": timesteps, "seed": seed,
                 "episode_requests": requests, "workload": workload, "profile": profile,
                 "num_instances": instances, "rate_rps": rate,
                 "chunked_prefill_tokens": chunked_prefill, "hold_kv_headroom": hold_headroom}  # fmt: skip
        try:
            config = read_config_file(config_file) if config_file else {}
            config.update({k: v for k, v in flags.items() if v is not None})
            config = RouterTrainConfig.model_validate(config).model_dump(mode="json", exclude_defaults=True)
        except (ValidationError, ValueError, OSError) as exc:  # a usage error, as for `loadwise run`
            from flows.config_files import error_line

            typer.echo(f"error: invalid router config: {error_line(exc, config_file)}", err=True)
            raise typer.Exit(2) from None
        registry = _checked_registry()
        try:
            if flow:
                from flows.models import train_router_flow

                result = train_router_flow(config, seeds, registry.tracking_uri)
                summary = result["evaluation"]
            else:
                from flows.models import train_and_register_router

                published, report = train_and_register_router(config, registry, tuple(seeds), not as_json)
                result = published.to_dict()
                summary = report.summary()
                result["evaluation"] = summary
        except (ValueError, FileNotFoundError, RegistryError) as exc:
            raise _fail(str(exc)) from None
        if as_json:
            typer.echo(json.dumps(result, default=str))
            return
        from rich.console import Console

        Console(width=140).print(
            router_table(summary, f"held-out replays, seeds {seeds} ('rl' = this version)")
        )
        _print_result(result, registry.tracking_uri, ROUTER_HEADLINE)

    @bench_app.command("router")
    def bench_router_cmd(
        model: Annotated[str, typer.Option(help="registered router to load")] = "llm-router@champion",
        calls: Annotated[int, typer.Option(min=100, help="timed one-request calls")] = 2000,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Routing latency per request in a separate process that loads the router from MLflow."""
        from flows.registry import ModelRegistry, model_uri, parse_model_ref
        from flows.serving_bench import run_isolated

        ref = parse_model_ref(model)
        if ref is None:
            raise _fail(f"--model must be NAME@ALIAS or NAME/VERSION, got {model!r}")
        registry = ModelRegistry()
        uri = model_uri(*ref)
        try:
            result = run_isolated(uri, registry.tracking_uri, calls)
        except RuntimeError as exc:
            raise _fail(f"{exc} (is a router registered? loadwise train-router)") from None
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(
            f"{uri}: loaded in {result['load_s']:.2f} s; per request p50/p99: "
            f"{result['unwrapped_p50_ms']:.3f}/{result['unwrapped_p99_ms']:.3f} ms (unwrapped policy), "
            f"{result['pyfunc_p50_ms']:.3f}/{result['pyfunc_p99_ms']:.3f} ms (pyfunc predict with schema "
            f"checks of {result['columns']} columns; x{result['speedup_p99']:.1f} at p99); "
            + ("target <= 1 ms p99 met" if result["meets_1ms_p99"] else "target <= 1 ms p99 NOT met")
        )

    @bench_app.command("predictor")
    def bench_predictor_cmd(
        model: Annotated[str, typer.Option(help="registered predictor (NAME@ALIAS or NAME/VERSION)")] = (
            "length-predictor@champion"
        ),
        n: Annotated[int, typer.Option(min=64, help="real test prompts to time")] = 256,
        warehouse: Annotated[Path | None, typer.Option(help="DuckDB file with the prompts")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Length-predictor CPU latency per request at batch 1 and batch 64 (1 thread, real prompts)."""
        import tempfile

        import torch

        from flows.registry import ModelRegistry, RegistryError, parse_model_ref
        from training.length.bench import TARGET_MS_AT_64, benchmark_latency
        from training.length.train import TrainedLengthPredictor

        ref = parse_model_ref(model)
        if ref is None:
            raise _fail(f"--model must be NAME@ALIAS or NAME/VERSION, got {model!r}")
        try:
            folder = ModelRegistry().download_artifact(
                *ref, "predictor", Path(tempfile.mkdtemp(prefix="loadwise-bench-"))
            )
        except RegistryError as exc:
            raise _fail(f"{exc} (train one first: loadwise train-predictor)") from None
        torch.set_num_threads(1)
        result = benchmark_latency(TrainedLengthPredictor.load(folder), n, warehouse=warehouse, repeats=3)
        result["batch1_over_batch64"] = result["batch1_ms_per_request"] / result["batch64_ms_per_request"]
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(
            f"{model}: {result['batch64_ms_per_request']:.2f} ms/request at batch 64 "
            f"({result['batch64_cpu_ms_per_request']:.2f} CPU ms), {result['batch1_ms_per_request']:.2f} ms "
            f"at batch 1 (x{result['batch1_over_batch64']:.1f}); target <= {TARGET_MS_AT_64} ms at batch 64: "
            + ("met" if result["meets_target_at_64"] else "NOT met")
        )

    @app.command("models")
    def models_cmd(
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
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
                typer.echo(json.dumps({"tracking_uri": registry.tracking_uri, "models": []}))
            else:
                typer.echo(str(exc))
            return
        except RegistryError as exc:
            raise _fail(str(exc)) from None
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
            typer.echo(json.dumps({"tracking_uri": registry.tracking_uri, "models": listing}))
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
    ) -> None:
        """Move the champion alias to VERSION by hand, if the model's gate agrees (--force overrides it).

        Prints the gate's verdict: for length-predictor and impact-estimator their held-out metric
        against the current champion; for llm-router the statistical gate's comparison recorded on the
        version (valid only while the champion it compared with still serves). A forced promotion is
        recorded on the version (loadwise.forced: who, when, why, the verdict it overrode).
        """
        from flows.models import promote_by_hand
        from flows.registry import ModelRegistry, RegistryError

        if force and not (reason and reason.strip()):
            typer.echo("error: --force needs --reason TEXT (recorded on the version)", err=True)
            raise typer.Exit(2)
        if not version.isdigit():
            typer.echo(f"error: VERSION must be a version number, got {version!r}", err=True)
            raise typer.Exit(2)
        registry = ModelRegistry(create=False)
        try:
            done = promote_by_hand(registry, name, version, force=force, why=(reason or "").strip())
        except RegistryError as exc:
            raise _fail(str(exc)) from None
        verdict = done.verdict
        if done.before is not None and done.before.version == version:
            typer.echo(f"{name}: v{version} already is the champion; nothing moved")
            return
        typer.echo(
            f"gate on {name} v{version}: {'passes' if verdict.passed else 'refuses'}: {verdict.reason}"
        )
        if not done.moved:
            raise _fail(
                f"not promoted: the gate refuses {name} v{version}; pass --force --reason TEXT to "
                "override it (recorded on the version)"
            )
        _show_move(name, done.before, done.after)
        if done.forced:
            typer.echo(f"forced: recorded on v{version} (loadwise.forced)")

    @app.command("rollback")
    def rollback_cmd(name: Annotated[str, typer.Argument(help="registered model name")]) -> None:
        """Move the champion alias back to the version that held it before."""
        from flows.registry import ModelRegistry, RegistryError

        registry = ModelRegistry(create=False)
        try:
            old, new = registry.rollback(name)
            _show_move(name, registry.get(name, old), registry.get(name, new))
        except RegistryError as exc:
            raise _fail(str(exc)) from None


def _checked_registry() -> Any:
    """The default registry, probed before any long work (a bad store: one line, exit 1)."""
    from flows.registry import ModelRegistry, RegistryError

    registry = ModelRegistry()
    try:
        registry.check()
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    return registry


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


def _show_move(name: str, before: Any, after: Any) -> None:
    def fmt(v: Any) -> str:
        if v is None:
            return "none"
        shown = ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()) if k in HEADLINE)
        return f"v{v.version} ({shown or 'no headline metrics'})"

    typer.echo(f"{name}: champion {fmt(before)} -> {fmt(after)}")
