"""``loadwise run`` (the nightly retraining flow, once) and ``loadwise serve`` (on a schedule).

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level.
The whole nightly config (file + flags) is validated before Prefect is imported or anything is
written: a bad value is one line and exit code 2, in well under a second (``flows.nightly.config``).
Only typer and the standard library are imported at module level.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.shared import WarehouseOpt, echo_json, fail, parse_seeds, router_table

app = typer.Typer()


@app.command("run")
def run(
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="nightly config file (.toml, .yaml or .json)"),
    ] = None,
    warehouse: WarehouseOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="trace folder (default: ../shared/data)"),
    ] = None,
    timesteps: Annotated[
        int | None, typer.Option(min=1, help="RL router training steps (overrides the config)")
    ] = None,
    eval_seeds: Annotated[
        str | None, typer.Option(help="comma-separated held-out windows (overrides the config)")
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            "--task-runner", help="threads | dask (local cluster) | tcp://scheduler:8786 (else config)"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="ignore the step caches: retrain all")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
) -> None:
    """Run the nightly retraining flow once (Prefect flow nightly-retrain, local mode): ingest new
    traces, check drift, retrain what changed, evaluate the RL router against the champion and every
    baseline, promote it only if the statistical gate passes, write the report. Each step prints a
    line as it starts and ends (with its duration), and a progress bar while it trains or replays."""
    import sys

    from rich.console import Console

    console = Console()
    cfg = _nightly_config(config)
    updates: dict[str, Any] = {"force": force or cfg.force}
    if warehouse:
        updates["warehouse"] = str(warehouse)
    if data_dir:
        updates["data_dir"] = str(data_dir)
    if timesteps:
        updates["router"] = {**cfg.router.model_dump(), "total_timesteps": timesteps}
    if eval_seeds:
        updates["eval_seeds"] = tuple(parse_seeds(eval_seeds, "--eval-seeds"))
    if runner:
        updates["task_runner"] = runner
    cfg = _nightly_config(config, {**cfg.model_dump(), **updates})
    from warehouse.errors import WarehouseError
    from warehouse.store import check_write_target

    try:  # a file that is not a warehouse fails now, not after Prefect starts and ingest runs
        check_write_target(cfg.warehouse)
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    from warehouse.settings import prefect_home

    prefect_home()
    from flows.nightly.flow import run_nightly

    steps = StepPrinter(sys.stderr if as_json else sys.stdout)  # --json: stdout is the JSON only
    try:
        result = run_nightly(cfg, on_step=steps)
    except WarehouseError as exc:
        steps.close()
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        steps.close()
    if as_json:
        echo_json(result, indent=1)
        return
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
    _print_steps(result["steps"])
    if result["models"]:
        _print_models(result["models"])
    if result["evaluation"] is not None:
        console.width = max(console.width, 140)
        console.print(router_table(result["evaluation"], "held-out windows: mean over seeds"))
    gate = result["gate"]
    if gate is not None:
        colour = "green" if result["promoted"] else "yellow"
        console.print(f"[{colour}]promotion gate:[/] {gate['reason']}", soft_wrap=True)
    from flows.cli.ui import ui_hint
    from flows.registry import default_tracking_uri

    console.print("[bold]where to look[/]")
    console.print(f"  report:    {result['report_dir']}/report.md", soft_wrap=True)
    console.print(f"  MLflow UI: {ui_hint(default_tracking_uri())}", soft_wrap=True)
    console.print(
        f'  warehouse: {result["warehouse"]}  (loadwise sql "SELECT * FROM ops.nightly_runs")',
        soft_wrap=True,
    )


@app.command("serve")
def serve(
    cron: Annotated[str, typer.Option(help="cron schedule of the nightly run")] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="time zone of the cron schedule")] = "UTC",
    api_url: Annotated[
        str | None,
        typer.Option(help="an existing Prefect API (http://host:4200/api); default: start one on loopback"),
    ] = None,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="port of the Prefect server started here")
    ] = 4200,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="nightly config file the scheduled runs use"),
    ] = None,
) -> None:
    """Serve the scheduled retraining deployments (nightly, and the hourly drift-watch) until Ctrl-C
    or SIGTERM; starts a Prefect server on loopback unless --api-url names one."""
    nightly_config = _nightly_config(config) if config else None  # checked before the server starts
    from flows.serve import ServerError, nightly_deployments, prefect_server, serve_deployments

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (systemd, docker stop) too: stop the server cleanly

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # even when started with SIGINT ignored (nohup, &)
    try:  # the schedule is checked here, before a server starts: a bad one is one line, exit 2
        deployments = nightly_deployments(cron=cron, timezone=timezone, config=nightly_config)
    except ValueError as exc:  # "Invalid cron string", an unknown time zone (pydantic)
        from flows.config_files import error_line

        typer.echo(f"error: invalid schedule: {error_line(exc)}", err=True)
        raise typer.Exit(2) from None
    if api_url:
        serve_deployments(deployments, api_url)
        return
    try:
        with prefect_server(port=port) as url:
            typer.echo(f"Prefect server on {url.removesuffix('/api')} (UI); serving on '{cron}' {timezone}")
            with contextlib.suppress(KeyboardInterrupt):
                serve_deployments(deployments, url)
            typer.echo("stopping the Prefect server (its whole process group)")
    except ServerError as exc:
        raise fail(str(exc)) from None


class StepPrinter:
    """``loadwise run``'s view of the flow's steps (``flows.nightly.flow.run_nightly(on_step=...)``):
    one line per step as it starts and as it ends (outcome and duration), written and flushed as it
    happens, whether ``stream`` is a terminal or a pipe, a file, cron's mail. In a terminal a long
    step's progress (RL training steps, evaluation replays) is a progress bar under the lines; in a
    pipe it is a line at every tenth of the way. Called in the flow's thread, a few times a second at
    most (the training progress is polled every ``flows.nightly.router.PROGRESS_EVERY_S``)."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console

        self.stream = stream
        self.console = Console(file=stream, highlight=False)
        self.live = self.console.is_terminal
        self._bar: Any = None
        self._task: Any = None
        self._step = ""
        self._tenths: dict[str, int] = {}

    def __call__(self, event: Any) -> None:
        if event.outcome == "progress":
            self._progress(event)
            return
        self.close()
        line = f"{_now()} {event.message()}"
        if self.live:
            self.console.print(line, soft_wrap=True, markup=False)
        else:
            self._write(line)

    def _progress(self, event: Any) -> None:
        total = max(int(event.total or 0), 1)
        if not self.live:
            tenth = 10 * int(event.done or 0) // total
            if tenth > self._tenths.get(event.step, 0):
                self._tenths[event.step] = tenth
                self._write(f"{_now()} {event.message()}")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._bar is not None and self._step != event.step:
            self.close()
        if self._bar is None:
            self._step = event.step
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(event.unit),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(event.step, total=total)
        self._bar.update(self._task, completed=event.done, total=total)

    def _write(self, line: str) -> None:
        # not print(): inside the flow run Prefect's log_prints turns a print to stdout into a log
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Take the progress bar off the terminal (at a step's end and when the run ends)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


def _now() -> str:
    """The local time of a step line (``HH:MM:SS``)."""
    from datetime import datetime

    return f"{datetime.now():%H:%M:%S}"


def _nightly_config(path: Path | None, data: dict[str, Any] | None = None) -> Any:
    """The validated ``NightlyConfig`` of ``path`` (or of ``data``, the file's settings with the
    flags applied); a file or value the run would fail on is one line on stderr and exit 2."""
    from pydantic import ValidationError

    from flows.config_files import error_line
    from flows.nightly.config import NightlyConfig

    try:
        if data is not None:
            return NightlyConfig.model_validate(data)
        return NightlyConfig.from_file(path) if path else NightlyConfig()
    except (ValidationError, ValueError) as exc:
        typer.echo(f"error: invalid config: {error_line(exc, path if data is None else None)}", err=True)
        raise typer.Exit(2) from None


def _cell(value: Any) -> str:
    """A summary table's value: floats with 3 decimals, None empty."""
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


def _print_steps(steps: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nightly-retrain steps")
    table.add_column("step")
    table.add_column("outcome")
    for name, outcome in steps.items():
        table.add_row(name, outcome)
    Console().print(table)


def _print_models(models: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered models (MLflow)")
    for column in ("model", "version", "aliases", "gate"):
        table.add_column(column)
    for entry in models:
        model = entry["model"]
        table.add_row(
            model["name"], model["version"], ",".join(model["aliases"]), entry["promotion"]["reason"]
        )
    Console().print(table)
