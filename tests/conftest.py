"""Shared fixtures. Environment for quiet, offline, local runs is set before anything imports.

Imports nothing of ``flows`` (or of any layer above ``warehouse``): the tests of a lower layer do
not depend on the layers above it (``tests/warehouse/test_run_env.py``).
"""

from __future__ import annotations

import os

from warehouse.run_env import apply_run_env

apply_run_env()  # before anything imports Prefect or MLflow

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from warehouse.settings import shared_data_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with ``$LOADWISE_HOME`` at a folder of its own (not created), so what a
    developer's ``make run`` left in the project's ``.loadwise`` (a registered predictor champion, a
    warehouse) never changes a result: e.g. ``loadwise compare`` would otherwise route with that
    predictor instead of the task mean. Tests that need a home set their own on top (``wh``,
    ``tests/flows/conftest.py`` ``home``); module-scoped fixtures are not covered."""
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session", autouse=True)
def _migrated_mlflow_template(tmp_path_factory: pytest.TempPathFactory):
    """Each new SQLite MLflow store of the session starts as a copy of one MLflow migrated itself.

    MLflow builds a new store by running its ~60 alembic migrations one by one: 4-9 s of CPU here,
    paid by every test that registers a model in a fresh ``$LOADWISE_HOME``. Here MLflow's own
    ``_initialize_tables`` runs once, into a template file; afterwards, for a SQLite engine, the
    template's pages are copied into the new database with SQLite's backup API (the same tables,
    indexes and ``alembic_version``, so ``_verify_schema`` and every later migration check see what
    MLflow made). Other databases (the PostgreSQL tests) and subprocesses migrate as usual."""
    import sqlite3

    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import sqlalchemy

    original = db_utils._initialize_tables
    template = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{template}")
    try:
        original(engine)
    finally:
        engine.dispose()

    def initialize_from_template(engine: sqlalchemy.engine.Engine) -> None:
        if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
            original(engine)
            return
        raw = engine.raw_connection()
        try:
            with sqlite3.connect(template) as source:
                source.backup(raw.driver_connection)
        finally:
            raw.close()

    patch = pytest.MonkeyPatch()
    patch.setattr(db_utils, "_initialize_tables", initialize_from_template)
    patch.setattr(registry_store, "_initialize_tables", initialize_from_template)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data folder; tests that need it skip with the reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set LOADWISE_DATA_DIR or place ../shared/data)")
    return path


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test harness for the whole session (~20-30 s to start here)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def wh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A (not yet created) warehouse file under tmp_path; LOADWISE_HOME points there too."""
    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    return tmp_path / "wh" / "warehouse.duckdb"
