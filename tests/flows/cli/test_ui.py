"""``loadwise ui``: the MLflow UI on the model store, and nothing left running after it stops.

The documented ``mlflow ui --backend-store-uri ...`` left 7-8 ``huey_consumer`` processes running
after SIGTERM (MLflow 3.17's job runner). The slow test runs the real UI and checks that after SIGTERM
no process that inherited the UI's environment is alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.ui import UI_ENV, ui_command, ui_hint
from flows.registry import ModelRegistry
from tests.flows.servers import free_port, wait_until_up


def test_the_printed_ui_command_is_loadwise_ui(home: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.registry import default_tracking_uri

    assert ui_hint(default_tracking_uri()) == "loadwise ui"
    assert ui_hint("sqlite:////data/other.db") == "MLFLOW_TRACKING_URI=sqlite:////data/other.db loadwise ui"
    assert ui_hint("http://mlflow.internal:5000") == "http://mlflow.internal:5000"  # the server's own UI
    argv, env = ui_command("sqlite:////data/m.db", "127.0.0.1", 5001)
    assert argv[1:] == ["-m", "mlflow", "ui", "--backend-store-uri", "sqlite:////data/m.db",
                        "--host", "127.0.0.1", "--port", "5001"]  # fmt: skip
    assert (
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" == UI_ENV["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]
    )


def test_models_prints_the_ui_command(home: Path, tmp_path: Path):
    """Before: ``mlflow ui --backend-store-uri ...``, which left job-runner processes behind."""
    from tests.flows.toy_model import package

    ModelRegistry().publish(package(tmp_path, 2.0, 0.5))
    out = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "MLflow UI: loadwise ui" in out.output
    assert "mlflow ui" not in out.output


def test_ui_on_an_empty_home_creates_nothing(home: Path):
    out = CliRunner().invoke(app, ["ui", "--port", "1"])
    assert out.exit_code == 1
    assert "no registry at" in out.output
    assert not home.exists()


def _environ_has(pid: str, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False


def _alive_with(marker: bytes) -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and _environ_has(pid, marker)]


@pytest.mark.slow
def test_ui_serves_and_leaves_no_process_after_sigterm(home: Path):
    ModelRegistry().model_names()  # creates the default store
    marker = f"LOADWISE_UI_TEST={uuid.uuid4().hex}"
    port = free_port()
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import app; app()", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, timeout_s=240)
        time.sleep(2)  # what MLflow starts after it answers (its job runner, before the fix)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _alive_with(marker.encode()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive_with(marker.encode()):  # only processes this test started
            os.kill(int(pid), signal.SIGKILL)
