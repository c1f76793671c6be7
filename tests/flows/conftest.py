"""Fixtures of the flows tests: a data home of their own, a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.servers import postgres_cluster


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$LOADWISE_HOME`` under tmp_path (not created), with the default MLflow store in it."""
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow`` of a fresh cluster for the module,
    stopped afterwards (skips with the reason where PostgreSQL cannot run: ``tests/flows/servers.py``)."""
    yield from postgres_cluster()
