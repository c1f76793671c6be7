"""Serve the scheduled deployments against a real Prefect server on loopback (``loadwise serve``).

Who calls this: ``loadwise serve`` (long-running, until Ctrl-C / SIGTERM) and its test.

Prefect's ``serve()`` does not schedule against the ephemeral in-process server ("Cannot schedule
flows on an ephemeral server"), so a schedule needs a real API. ``PrefectServer`` starts
``prefect server start --host 127.0.0.1`` in its own process group (``setsid``; STACK.md: stopping
only the parent leaves its workers behind), waits for ``/api/health`` (7-26 s here), points
``PREFECT_API_URL`` at it, and on exit stops the whole group (SIGTERM, then SIGKILL after a grace
period). With ``--api-url`` an existing server (or Prefect Cloud) is used and nothing is started.

Why not Prefect's own ``prefect server start --background`` / ``prefect server stop`` (3.8): the
background server's output goes to a pipe that nobody reads once the starting command exits (no
log file: a server that fails to start says nothing), ``stop`` signals one pid from a PID file in
``PREFECT_HOME`` (one background server per home; a stale file after a crash), and neither waits
for health. ``loadwise serve`` owns its server for exactly its own lifetime (started before
serving, stopped on Ctrl-C / SIGTERM / error, log in ``server.log``), which those commands do not
offer; they remain the tool for a server that outlives the command (docs/operations.md).

The server keeps its SQLite database under ``PREFECT_HOME`` (``$LOADWISE_HOME/prefect``), so flow-run
history survives restarts of ``loadwise serve``.

**One retraining at a time.** Each deployment carries a concurrency limit of one run with the
``ENQUEUE`` strategy (a run that comes due while the previous one of the same deployment still runs
waits; the server enforces it), and ``serve_deployments`` serves both from one runner limited to one
flow run at a time, so ``nightly`` and ``drift-watch`` never run at once (a run that comes due waits
for a slot). ``prefect.yaml`` declares the same limits for workers, plus one shared work queue of
limit 1. The promotion itself does not rely on this: it is a compare-and-set (``flows.registry``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_PORT = 4200
DEFAULT_CRON = "0 2 * * *"
"""Nightly at 02:00 in ``DEFAULT_TIMEZONE``."""
DEFAULT_TIMEZONE = "UTC"
DRIFT_WATCH_CRON = "30 * * * *"
"""Hourly, at half past (clear of the nightly run's start)."""
RUNS_AT_ONCE = 1
"""Flow runs of the retraining deployments that may run at the same time (per deployment, and per
``loadwise serve`` runner for both together)."""


def one_run_at_a_time() -> Any:
    """The deployments' concurrency limit: ``RUNS_AT_ONCE`` run, later ones enqueued (not cancelled)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=RUNS_AT_ONCE, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


class ServerError(RuntimeError):
    """The Prefect server did not become healthy (its log tail is in the message)."""


def _healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(
    port: int = DEFAULT_PORT,
    home: Path | None = None,
    startup_timeout_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``prefect server`` on ``127.0.0.1:port``; yield its API URL; stop it (whole group) on exit."""
    from warehouse.settings import prefect_home

    home = home or prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url, 1.0):
        raise ServerError(f"something already answers on {api_url}; pass --api-url {api_url} to use it")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    }
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    log_path = home / "server.log"
    prefect = Path(sys.executable).with_name("prefect")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() takes its workers too
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(api_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else "not healthy in time"
                raise ServerError(f"prefect server on port {port} {why}; log {log_path}:\n{tail}")
            time.sleep(0.5)
        yield api_url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        pass


def nightly_deployments(
    cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE, config: Any = None
) -> list[Any]:
    """The deployments ``loadwise serve`` serves: ``nightly`` (the retraining flow on ``cron``) and
    ``drift-watch`` (hourly: ingest and drift check, retraining only when the new window drifted).

    ``config`` (a ``flows.nightly.config.NightlyConfig``) becomes both deployments' parameters (the
    drift-watch with ``retrain = "on-drift"``) and picks their task runner (``task_runner``).
    """
    from prefect.schedules import Cron

    from flows.distributed import task_runner
    from flows.nightly.config import NightlyConfig
    from flows.nightly.flow import nightly_retrain

    cfg = config or NightlyConfig()
    flow_ = nightly_retrain.with_options(task_runner=task_runner(cfg.task_runner, n_workers=cfg.workers))
    given = cfg.model_dump(mode="json", exclude_defaults=True)
    return [
        flow_.to_deployment(
            name="nightly",
            schedules=[Cron(cron, timezone=timezone)],
            parameters={"config": given} if given else {},
            description="Ingest, drift check, retrain what changed, evaluate, gate, promote (loadwise serve)",
            tags=["loadwise", "nightly"],
            concurrency_limit=one_run_at_a_time(),
        ),
        flow_.to_deployment(
            name="drift-watch",
            schedules=[Cron(DRIFT_WATCH_CRON, timezone=timezone)],
            parameters={"config": {**given, "retrain": "on-drift"}},
            description="Hourly ingest + drift check; retrains between nightly runs only on drift",
            tags=["loadwise", "drift"],
            concurrency_limit=one_run_at_a_time(),
        ),
    ]


def serve_deployments(deployments: Sequence[Any], api_url: str, limit: int | None = RUNS_AT_ONCE) -> None:
    """Serve ``deployments`` against ``api_url`` until Ctrl-C or SIGTERM (blocks; returns normally
    then); at most ``limit`` flow runs at once across all of them (default one: ``nightly`` and
    ``drift-watch`` never overlap).

    What ``prefect.serve`` does, with one difference: Prefect's ``Runner`` answers SIGTERM by calling
    its async ``stop()`` from the signal handler, inside the event loop, where it returns a coroutine
    nobody awaits ("coroutine 'Runner.astop' was never awaited"), then ``sys.exit(0)``: the caller's
    cleanup after serving (``loadwise serve``'s stopping line) never ran. Here SIGTERM stops it as
    Ctrl-C does (``runner_for``)."""
    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        runner = runner_for(deployments, limit)
        names = ", ".join(d.full_name for d in deployments)
        print(
            f"serving {names} (at most {limit or 'unlimited'} flow run at once); Ctrl-C to stop", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(runner.start())


def runner_for(deployments: Sequence[Any], limit: int | None = RUNS_AT_ONCE) -> Any:
    """A Prefect ``Runner`` of ``deployments`` on which SIGTERM (systemd, ``docker stop``) is Ctrl-C:
    a ``KeyboardInterrupt`` that unwinds ``runner.start()`` and its ``async with`` (schedules paused,
    runs stopped, as on Ctrl-C)."""
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

    runner = _Runner(limit=limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    return runner
