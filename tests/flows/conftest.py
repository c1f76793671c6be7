"""Fixtures of the flows tests: a data home of their own, a throwaway PostgreSQL cluster."""

from __future__ import annotations

import shutil
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


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite file (creating one costs ~2.5 s; copying it, milliseconds)."""
    from flows.registry import ModelRegistry

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    ModelRegistry(f"sqlite:///{db}").model_names()
    return db


@pytest.fixture
def store(empty_store: Path, tmp_path: Path) -> str:
    """A fresh SQLite registry for one test (its own file, lock file and artifact folder): its URI."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
