"""The MLflow service on PostgreSQL: directly, and through an MLflow tracking server with proxied artifacts.

A throwaway PostgreSQL cluster is started for the module (the ``postgres`` fixture of
tests/flows/conftest.py: ``initdb`` + ``pg_ctl`` as the ``postgres`` user, trust auth on loopback, a
free port); the tests skip with the reason when PostgreSQL's server binaries or that user are absent
(Debian: ``apt-get install postgresql``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.registry import CHAMPION, ModelRegistry
from tests.consumer import consume
from tests.flows.servers import free_port, wait_until_up
from tests.flows.toy_model import package


def test_registry_on_postgres_publishes_promotes_and_serves(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LOADWISE_ARTIFACT_ROOT", (tmp_path / "bucket").as_uri())
    registry = ModelRegistry(tracking_uri=postgres)
    v = registry.publish(package(tmp_path, 3.0, 0.7, name="pg-model"))
    registry.promote("pg-model", v.version)
    assert registry.get("pg-model", CHAMPION).metrics == {"accuracy": 0.7}
    assert list((tmp_path / "bucket").rglob("MLmodel")), "artifacts go to LOADWISE_ARTIFACT_ROOT"
    out, _ = consume("models:/pg-model@champion", postgres, pd.DataFrame({"x": [1.0]}))
    assert out["y"].tolist() == [3.0]


def test_tracking_server_on_postgres_with_proxied_artifacts(postgres: str, tmp_path: Path):
    port = free_port()
    store = tmp_path / "object-store"  # stands in for s3://... (--artifacts-destination)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            str(store),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", server, timeout_s=90)
        registry = ModelRegistry(tracking_uri=url, experiment="via-server")  # a server-made artifact root
        v = registry.publish(package(tmp_path, 4.0, 0.9, name="server-model"))
        registry.promote("server-model", v.version)
        assert list(store.rglob("MLmodel")), "the server wrote the artifacts to its destination"
        out, _ = consume("models:/server-model@champion", url, pd.DataFrame({"x": [2.0]}))
        assert out["y"].tolist() == [8.0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
