"""``loadwise ui``: the MLflow UI over the project's model store, stopped with everything it started.

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level;
``models.py`` and ``nightly.py`` print ``ui_hint`` after a training or a run. Only typer and the
standard library are imported at module level; MLflow is imported (in the child) when the UI starts.

Why not plain ``mlflow ui --backend-store-uri ...``: MLflow 3.17's server starts a job runner
(``huey_consumer`` processes) that outlives it: SIGTERM to ``mlflow ui`` left 7-8 of them running.
``loadwise ui`` starts ``python -m mlflow ui`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no
job runner; the UI does not need it) in a process group of its own, and on Ctrl-C or SIGTERM stops
that whole group (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``), so nothing outlives it. A
tracking server store (``http(s)://``) has its own UI: the command prints its address.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from flows.cli.shared import fail

app = typer.Typer()

STOP_TIMEOUT_S = 10.0
"""How long the UI's process group has to stop after SIGTERM before it is killed."""
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""The environment that keeps MLflow's server from starting job-runner processes that outlive it."""


def ui_hint(tracking_uri: str) -> str:
    """The command (or address) to open the MLflow UI on ``tracking_uri``, as the CLI prints it."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    if tracking_uri == os.environ.get("MLFLOW_TRACKING_URI") or _is_default(tracking_uri):
        return "loadwise ui"
    return f"MLFLOW_TRACKING_URI={tracking_uri} loadwise ui"


def _is_default(tracking_uri: str) -> bool:
    from flows.registry import default_tracking_uri

    return tracking_uri == default_tracking_uri()


def ui_command(tracking_uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment ``loadwise ui`` runs: this interpreter's ``mlflow ui`` on the store,
    with ``UI_ENV``."""
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    argv += ["--host", host, "--port", str(port)]
    return argv, {**os.environ, **UI_ENV}


def run_ui(argv: list[str], env: dict[str, str]) -> int:
    """Run the UI in its own process group until it exits or this process gets SIGINT / SIGTERM;
    then stop the whole group. Returns the UI's exit code (0 when stopped by a signal)."""
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        _signal_group(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = proc.wait(timeout=STOP_TIMEOUT_S if stopping else None)
                break
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_group(proc.pid)
    return 0 if stopping else code


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _stop_group(pgid: int) -> None:
    """Whatever is left of the group after its leader exited (workers it spawned): SIGTERM, a grace
    period, SIGKILL."""
    import time

    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


@app.command("ui")
def ui(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 5000,
) -> None:
    """Open the MLflow UI on the model store (MLFLOW_TRACKING_URI, else $LOADWISE_HOME/mlflow.db);
    Ctrl-C or SIGTERM stops it and every process it started."""
    from flows.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(create=False)
    uri = registry.tracking_uri
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the tracking server serves its own UI: {uri}")
        return
    try:
        registry.client  # noqa: B018 - probes the store; a moved home's artifact locations are fixed here
    except RegistryError as exc:
        raise fail(str(exc)) from None
    argv, env = ui_command(uri, host, port)
    typer.echo(f"MLflow UI at http://{host}:{port} on {uri} (Ctrl-C stops it)")
    raise typer.Exit(run_ui(argv, env))
