"""``loadwise serve``'s machinery: a real Prefect server on loopback, a schedule that creates runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.serve import ServerError, prefect_server
from tests.flows.servers import free_port
from warehouse.settings import PROJECT_ROOT

TINY = """
import sys
from datetime import timedelta

from prefect import flow

from flows.serve import serve_deployments


@flow(name="tiny-scheduled")
def tiny(x: int = 1) -> int:
    print("tiny ran", x)
    return x


if __name__ == "__main__":
    dep = tiny.to_deployment(name="every-5s", interval=timedelta(seconds=5))
    serve_deployments([dep], sys.argv[1], limit=1)
"""


async def completed_runs(api_url: str) -> list[str]:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async with PrefectClient(api_url) as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["every-5s"]))
        )
    return [r.name for r in runs if r.state and r.state.is_completed()]


@pytest.mark.slow
def test_a_schedule_creates_and_runs_flow_runs(tmp_path: Path):
    (tmp_path / "tiny_serve.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    with prefect_server(
        port=free_port(),
        home=tmp_path / "prefect",
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"},
    ) as api_url:
        served = subprocess.Popen(
            [sys.executable, "tiny_serve.py", api_url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline, done = time.monotonic() + 150, list[str]()
            while time.monotonic() < deadline and not done:
                time.sleep(3)
                done = asyncio.run(completed_runs(api_url))
            assert done, "no scheduled run completed within 150 s"
        finally:
            os.killpg(served.pid, signal.SIGINT)  # Ctrl-C: the runner cancels and exits
            try:
                served.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(served.pid, signal.SIGKILL)
                served.wait(timeout=10)
    port = int(api_url.split(":")[2].split("/")[0])
    with pytest.raises(ConnectionRefusedError):  # the server's whole process group is gone
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_a_port_already_serving_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("flows.serve._healthy", lambda url, timeout_s=2.0: True)
    with pytest.raises(ServerError, match="already answers"), prefect_server(port=free_port(), home=tmp_path):
        pass


@pytest.mark.slow
def test_prefect_yaml_deploys_the_nightly_schedule_to_a_work_pool(tmp_path: Path):
    repo = PROJECT_ROOT
    prefect = str(Path(sys.executable).with_name("prefect"))
    with prefect_server(port=free_port(), home=tmp_path / "prefect") as api_url:
        env = {**os.environ, "PREFECT_API_URL": api_url, "LOADWISE_REPO": str(repo)}
        for cmd in (
            ["work-pool", "create", "loadwise", "--type", "process"],
            ["work-queue", "create", "retrain", "--pool", "loadwise", "--limit", "1"],
            ["--no-prompt", "deploy", "--all"],
        ):
            done = subprocess.run(
                [prefect, *cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stdout + done.stderr
        deployments = asyncio.run(_deployments(api_url))
    assert deployments == {
        "nightly": (["0 2 * * *"], 1, "ENQUEUE", "retrain"),
        "drift-watch": (["30 * * * *"], 1, "ENQUEUE", "retrain"),
    }


async def _deployments(api_url: str) -> dict[str, tuple[list[str], int | None, str | None, str | None]]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        return {
            d.name: (
                [getattr(s.schedule, "cron", "") for s in d.schedules],
                d.global_concurrency_limit.limit if d.global_concurrency_limit else None,
                str(d.concurrency_options.collision_strategy.value) if d.concurrency_options else None,
                d.work_queue_name,
            )
            for d in await client.read_deployments()
        }


def test_loadwise_serve_serves_the_nightly_and_drift_watch_deployments():
    from flows.serve import nightly_deployments

    deployments = {d.name: d for d in nightly_deployments(cron="15 3 * * *", timezone="Europe/Paris")}
    assert set(deployments) == {"nightly", "drift-watch"}
    assert deployments["nightly"].schedules[0].schedule.cron == "15 3 * * *"
    assert deployments["nightly"].parameters == {}
    assert deployments["drift-watch"].parameters == {"config": {"retrain": "on-drift"}}


def test_loadwise_serve_passes_a_config_file_to_both_deployments(tmp_path: Path):
    from flows.nightly import NightlyConfig
    from flows.serve import nightly_deployments

    (tmp_path / "n.toml").write_text("eval_seeds = [0, 1, 2]\n[router]\ntotal_timesteps = 5000\n")
    cfg = NightlyConfig.from_file(tmp_path / "n.toml")
    deployments = {d.name: d for d in nightly_deployments(config=cfg)}
    nightly = deployments["nightly"].parameters["config"]
    assert nightly["eval_seeds"] == [0, 1, 2]
    assert nightly["router"] == {"total_timesteps": 5000}
    assert NightlyConfig.model_validate(nightly) == cfg  # what the scheduled run will parse
    assert deployments["drift-watch"].parameters["config"]["retrain"] == "on-drift"


def test_nightly_and_drift_watch_never_run_at_once(monkeypatch: pytest.MonkeyPatch):
    """Each deployment admits one run at a time (later ones are enqueued, not cancelled), and
    ``loadwise serve`` runs both from one runner limited to one flow run: before the fix neither had a
    limit, so the hourly drift-watch could overlap the nightly run."""
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import nightly_deployments, serve_deployments

    for deployment in nightly_deployments():
        assert deployment.concurrency_limit == 1, deployment.name
        assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE

    made: dict[str, object] = {}

    def runner_for(deployments: object, limit: int | None = None) -> object:
        made.update(deployments=deployments, limit=limit)
        raise KeyboardInterrupt  # Ctrl-C before serving: serve_deployments returns

    # The runner blocks until interrupted against a live server (the slow tests run it): here only
    # the limit that serve_deployments gives the one runner of both deployments is checked.
    monkeypatch.setattr("flows.serve.runner_for", runner_for)
    with pytest.raises(KeyboardInterrupt):
        serve_deployments(["a", "b"], "http://127.0.0.1:1/api")
    assert made == {"deployments": ["a", "b"], "limit": 1}


def test_sigterm_stops_the_runner_as_ctrl_c_does():
    """Prefect's Runner answered SIGTERM with its async stop() called from the signal handler (a
    coroutine never awaited) and ``sys.exit(0)``, so ``loadwise serve`` never printed its stopping
    line; ``runner_for``'s runner raises ``KeyboardInterrupt``, which ``serve_deployments`` ends on."""
    from flows.serve import runner_for

    runner = runner_for([], limit=1)
    assert runner.limit == 1
    with pytest.raises(KeyboardInterrupt):
        runner.handle_sigterm(signal.SIGTERM, None)


@pytest.mark.slow
def test_loadwise_serve_stops_cleanly_on_sigterm(tmp_path: Path):
    """``loadwise serve`` (a real server on loopback, both deployments), then SIGTERM as systemd or
    ``docker stop`` sends it: the stopping line, exit 0, no "never awaited" warning, the port free."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env.update(LOADWISE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    loadwise = str(Path(sys.executable).with_name("loadwise"))
    served = subprocess.Popen(
        [loadwise, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert served.stdout is not None
        for line in served.stdout:  # until the runner serves both deployments
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines, "no output"
        assert lines[-1].startswith("serving "), "".join(lines)
        time.sleep(2)
        served.send_signal(signal.SIGTERM)
        rest, _ = served.communicate(timeout=60)
    finally:
        if served.poll() is None:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait(timeout=10)
    output = "".join(lines) + rest
    assert served.returncode == 0, output
    assert "stopping the Prefect server" in output
    assert "never awaited" not in output
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_prefect_yaml_limits_the_retraining_deployments():
    """Workers: a limit of one run per deployment, and one work queue shared by both (its limit of 1 is
    created by the documented `prefect work-queue create retrain --limit 1`)."""
    import yaml

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"nightly", "drift-watch"}
    for d in deployments.values():
        assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert d["work_pool"]["work_queue_name"] == "retrain"
