"""What a MLflow consumer sees of a published version: MLflow's own fields (LoggedModel name, git
commit, input dataset, run artifacts; metrics as run metrics, not version tags), and a store that can
be copied or moved with its data home."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from flows.registry import (
    ModelRegistry,
    TrainingData,
    git_lineage,
    relocate_sqlite_store,
    store_key,
)
from tests.flows.toy_model import package


def test_a_version_uses_mlflows_own_fields(tmp_path: Path):
    """Before: every LoggedModel was named "model", the LoggedModel had no git commit, no input
    dataset was logged, the metrics were repeated as ``loadwise.metric.*`` version tags and a file
    beside the model (the SB3 checkpoint) had no place."""
    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    checkpoint = tmp_path / "final_model.zip"
    checkpoint.write_bytes(b"PK sb3")
    rows = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    pkg = dataclasses.replace(
        package(tmp_path, 2.0, 0.5, name="toy-fields"),
        training_data=TrainingData(rows, name="toy-train", source="workload toy"),
        run_artifacts={"checkpoints": checkpoint},
    )
    v = registry.publish(pkg)
    assert v.metrics == {"accuracy": 0.5}  # run metrics, read through the run
    assert not [k for k in v.tags if k.startswith("loadwise.metric.")]

    import mlflow

    client = registry.client
    model_id = client.get_model_version("toy-fields", v.version).source.removeprefix("models:/")
    logged = mlflow.get_logged_model(model_id)
    assert logged.name == "toy-fields"
    commit = git_lineage()["git_commit"]
    if commit != "unknown":
        assert logged.tags["mlflow.source.git.commit"] == commit
        assert client.get_run(v.run_id).data.tags["mlflow.source.git.commit"] == commit

    (used,) = client.get_run(v.run_id).inputs.dataset_inputs
    assert used.dataset.name == "toy-train"
    assert [t.value for t in used.tags] == ["training"]
    assert used.dataset.digest == mlflow.data.from_pandas(rows).digest  # MLflow's hash of the rows
    assert [a.path for a in client.list_artifacts(v.run_id, "checkpoints")] == ["checkpoints/final_model.zip"]


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [
            loc
            for query in (
                "SELECT artifact_location FROM experiments WHERE name = 'loadwise'",
                "SELECT artifact_uri FROM runs",
                "SELECT artifact_location FROM logged_models",
                "SELECT storage_location FROM model_versions",
            )
            for (loc,) in con.execute(query)
        ]


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_copied_or_moved_home_resolves_models_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
):
    """Before: ``mlflow.db`` kept ``file:///OLD/mlartifacts/...``, so a copied home loaded (and
    wrote) artifacts in the old place, and a moved one could not load its models at all."""
    monkeypatch.delenv("LOADWISE_ARTIFACT_ROOT", raising=False)
    old, new = tmp_path / "old", tmp_path / "new"
    registry = ModelRegistry(tracking_uri=f"sqlite:///{old / 'mlflow.db'}")
    v = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-moved"))
    (shutil.copytree if how == "copied" else shutil.move)(old, new)
    if how == "copied":  # the copy must not need the original: remove the original's artifacts
        shutil.rmtree(old / "mlartifacts")
    moved = ModelRegistry(tracking_uri=f"sqlite:///{new / 'mlflow.db'}")
    assert moved.get("toy-moved", v.version).metrics == {"accuracy": 0.5}
    here = (new / "mlartifacts").resolve().as_uri()
    assert all(loc.startswith(here) for loc in _locations(new / "mlflow.db")), _locations(new / "mlflow.db")
    got = moved.load("toy-moved", v.version).predict(pd.DataFrame({"x": [3.0]}))
    assert got["y"].tolist() == [6.0]
    assert relocate_sqlite_store(new / "mlflow.db") == 0  # once: nothing left to move


def test_an_artifact_root_placed_elsewhere_on_purpose_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``LOADWISE_ARTIFACT_ROOT`` outside the home (no database beside it) is not a moved home."""
    shared = tmp_path / "shared" / "mlartifacts"
    shared.mkdir(parents=True)
    monkeypatch.setenv("LOADWISE_ARTIFACT_ROOT", shared.as_uri())
    home = tmp_path / "home"
    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    registry._experiment_id()
    monkeypatch.delenv("LOADWISE_ARTIFACT_ROOT")
    (home / "mlartifacts").mkdir()
    assert relocate_sqlite_store(home / "mlflow.db") == 0
    assert _locations(home / "mlflow.db") == [shared.as_uri()]


def test_the_store_in_cache_keys_does_not_depend_on_where_the_home_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before: the nightly's step keys held the absolute tracking URI and warehouse path, so a copied
    home retrained everything."""
    from flows.nightly.keys import StepCache, step_key

    a, b = tmp_path / "a", tmp_path / "b"
    keys = []
    for home in (a, b):
        monkeypatch.setenv("LOADWISE_HOME", str(home))
        cache = StepCache(home / "nightly" / "cache", f"sqlite:///{home / 'mlflow.db'}", force=False)
        config = {"warehouse": str(home / "warehouse.duckdb"), "where": "format = 'castillo'"}
        keys.append(step_key("router", config=config, data="abc", **cache.inputs("router")))
    assert keys[0] == keys[1]
    other = {"warehouse": str(tmp_path / "other.duckdb"), "where": "format = 'castillo'"}
    assert step_key("router", config=other, data="abc", **cache.inputs("router")) != keys[1]
    assert store_key(f"sqlite:///{a / 'mlflow.db'}", home=a) == "home:mlflow.db"
    assert store_key(f"sqlite:///{a / 'mlflow.db'}", home=a) == store_key(
        f"sqlite:///{b / 'mlflow.db'}", home=b
    )
    outside = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert store_key(outside, home=a) == outside  # another store is another key
    assert store_key("http://mlflow:5000", home=a) == "http://mlflow:5000"
    assert json.dumps(store_key(f"sqlite:///{a / 'x' / 'm.db'}", home=a)) == '"home:x/m.db"'
