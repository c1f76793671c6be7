"""The project-wide settings: where loadwise keeps and finds its files, each overridable by an
environment variable (the MLflow store's: ``flows.registry.default_tracking_uri``). Pure stdlib:
any layer may import it.

- ``PROJECT_ROOT``: the checkout (the folder holding ``pyproject.toml``).
- ``loadwise_home()``: the data home for embedded stores (DuckDB file, MLflow SQLite store,
  Prefect home). ``$LOADWISE_HOME``, else ``.loadwise/`` in the working directory.
- ``default_warehouse_path()``: ``<home>/warehouse.duckdb``, the warehouse every command uses
  unless given ``--warehouse``.
- ``prefect_home()``: Prefect's local store, ``$PREFECT_HOME``, else ``<home>/prefect``.
- ``shared_data_dir()``: the public traces, prompt sets and GPU profiles (never committed).
  ``$LOADWISE_DATA_DIR``, else ``../shared/data`` beside the project checkout. May not exist:
  callers that need it must say so clearly (tests skip with a reason).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def loadwise_home() -> Path:
    return Path(os.environ.get("LOADWISE_HOME", ".loadwise")).resolve()


def default_warehouse_path() -> Path:
    return loadwise_home() / "warehouse.duckdb"


def prefect_home() -> Path:
    """Where Prefect's local mode keeps its SQLite store: ``$PREFECT_HOME``, else ``<home>/prefect``.

    Creates the folder (Prefect does not create missing parents) and exports ``PREFECT_HOME`` so
    Prefect, imported after this call, uses it. Called by the CLI before a flow runs.
    """
    path = Path(os.environ.get("PREFECT_HOME", str(loadwise_home() / "prefect"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(path)
    return path


def shared_data_dir() -> Path:
    env = os.environ.get("LOADWISE_DATA_DIR")
    return Path(env).resolve() if env else (PROJECT_ROOT.parent / "shared" / "data").resolve()
