"""CLI commands: ``loadwise run`` (the retrain pipeline). See flows/cli.py."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_tables(tables: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for spec in tables:
        table = Table(title=spec["title"])
        for column in spec["columns"]:
            table.add_column(str(column))
        for row in spec["rows"]:
            table.add_row(*(_cell(v) for v in row))
        console.print(table)


def _print_models(models: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from flows.registry import default_tracking_uri

    table = Table(title="registered models (MLflow)")
    for column in ("model", "version", "aliases", "gate"):
        table.add_column(column)
    for entry in models:
        model = entry["model"]
        if "skipped" in entry:
            table.add_row(model["name"], "-", "-", f"skipped: {entry['skipped']}")
            continue
        table.add_row(
            model["name"], model["version"], ",".join(model["aliases"]), entry["promotion"]["reason"]
        )
    console = Console()
    console.print(table)
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {default_tracking_uri()}", soft_wrap=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to the loadwise app and its bench group."""

    @app.command("run")
    def run(
        warehouse: Annotated[Path | None, typer.Option(help="DuckDB file (default: the data home's)")] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="shared data folder (default: ../shared/data)")
        ] = None,
        synthetic_rows: Annotated[
            int, typer.Option(help="rows of the synthetic workload (no real data)")
        ] = 20_000,
        seed: Annotated[int, typer.Option(help="seed of the synthetic workload")] = 0,
        evaluate: Annotated[
            bool, typer.Option("--eval/--no-eval", help="replay every router on the held-out traces")
        ] = True,
        eval_seeds: Annotated[str, typer.Option(help="comma-separated replay seeds")] = "0,1,2",
        eval_requests: Annotated[int, typer.Option(min=1, help="held-out requests to replay")] = 4000,
        train: Annotated[
            bool,
            typer.Option(
                "--train/--no-train", help="refit the impact estimator, retrain the length predictor"
            ),
        ] = True,
    ) -> None:
        """Run the retrain pipeline (Prefect flow ``retrain-pipeline``): ingest traces, print analytics,
        evaluate every router on the held-out traces (stored in ``marts.eval_results``)."""
        from flows.cli_replay import parse_seeds, router_table

        seeds = tuple(parse_seeds(eval_seeds))
        from rich.console import Console

        from warehouse.paths import prefect_home

        prefect_home()
        from flows.pipeline import retrain_pipeline
        from warehouse.errors import WarehouseError

        console = Console()
        try:
            result = retrain_pipeline(
                warehouse=str(warehouse) if warehouse else None,
                data_dir=str(data_dir) if data_dir else None,
                synthetic_rows=synthetic_rows,
                seed=seed,
                evaluate=evaluate,
                eval_seeds=seeds,
                eval_requests=eval_requests,
                train=train,
            )
        except WarehouseError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        if result["synthetic"]:
            console.print(
                "[yellow bold]SYNTHETIC workload[/]: no real traces found; figures below are synthetic."
            )
        report = result["ingest"]
        console.print(
            f"warehouse {result['warehouse']}: {report['rows_read']} rows read = {report['ingested']} "
            f"ingested + {report['quarantined']} quarantined; {report['duplicates_skipped']} rows in "
            "duplicate files skipped"
        )
        _print_tables(result["summary"])
        if result["models"]:
            _print_models(result["models"])
        evaluation = result["evaluation"]
        if evaluation is not None:
            console.width = max(console.width, 140)
            title = (
                f"{evaluation['description']} on {evaluation['latency_model']}: mean over seeds {list(seeds)}"
            )
            console.print(router_table(evaluation["routers"], title))

    @app.command("serve")
    def serve(
        cron: Annotated[str, typer.Option(help="cron schedule of the nightly run")] = "0 2 * * *",
        timezone: Annotated[str, typer.Option(help="time zone of the cron schedule")] = "UTC",
        api_url: Annotated[
            str | None,
            typer.Option(
                help="an existing Prefect API (http://host:4200/api); default: start one on loopback"
            ),
        ] = None,
        port: Annotated[int, typer.Option(help="port of the Prefect server started here")] = 4200,
    ) -> None:
        """Serve the scheduled retraining deployment until Ctrl-C (starts a Prefect server on loopback)."""
        from flows.serve import ServerError, nightly_deployments, prefect_server, serve_deployments

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # SIGTERM (systemd, docker stop) too: stop the server cleanly

        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)  # even when started with SIGINT ignored (nohup, &)
        deployments = nightly_deployments(cron=cron, timezone=timezone)
        if api_url:
            serve_deployments(deployments, api_url)
            return
        try:
            with prefect_server(port=port) as url:
                typer.echo(
                    f"Prefect server on {url.removesuffix('/api')} (UI); serving on '{cron}' {timezone}"
                )
                with contextlib.suppress(KeyboardInterrupt):
                    serve_deployments(deployments, url)
                typer.echo("stopping the Prefect server (its whole process group)")
        except ServerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
