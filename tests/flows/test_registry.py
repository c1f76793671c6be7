"""The MLflow service against a temporary SQLite store: publish, aliases, gate, isolated consumer."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.registry import (
    CHALLENGER,
    CHAMPION,
    CODE_TAG,
    IDENTITY_TAG,
    ChampionMovedError,
    ModelPackage,
    ModelRegistry,
    NoRegistryError,
    RegistryError,
    StoreError,
)
from tests.consumer import consume
from tests.flows.servers import free_port
from tests.flows.toy_model import package


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """One store for the module (creating a SQLite store costs seconds); tests use distinct names."""
    return ModelRegistry(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def test_publish_tags_lineage_and_sets_challenger(registry: ModelRegistry, tmp_path: Path):
    v = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-lineage"))
    assert v.version == "1"
    assert v.aliases == (CHALLENGER,)
    assert v.metrics == {"accuracy": 0.5}
    assert v.tags["loadwise.data_fingerprint"] == "sha256:abc"
    assert len(v.tags["loadwise.git_commit"]) in (7, 40) or v.tags["loadwise.git_commit"] == "unknown"
    assert json.loads(v.tags["loadwise.config"]) == {"nested": {"k": 1}, "scale": 2.0}
    assert "toy-lineage" in registry.model_names()


def test_gate_promotes_the_first_and_better_versions_only(registry: ModelRegistry, tmp_path: Path):
    v1 = registry.publish(package(tmp_path, 2.0, 0.5))
    assert registry.promote_if_better("toy-model", v1.version, "accuracy", higher_is_better=True).promoted
    v2 = registry.publish(package(tmp_path, 3.0, 0.4))
    decision = registry.promote_if_better("toy-model", v2.version, "accuracy", higher_is_better=True)
    assert not decision.promoted
    assert "kept champion" in decision.reason
    assert registry.get("toy-model", CHAMPION).version == "1"
    assert registry.get("toy-model", CHALLENGER).version == "2"
    v3 = registry.publish(package(tmp_path, 4.0, 0.6))
    assert registry.promote_if_better("toy-model", v3.version, "accuracy", higher_is_better=True).promoted
    assert [(v.version, v.aliases) for v in registry.versions("toy-model")] == [
        ("3", (CHALLENGER, CHAMPION)),
        ("2", ()),
        ("1", ()),
    ]
    assert registry.champion_history("toy-model") == ["1", "3"]
    assert registry.rollback("toy-model") == ("3", "1")
    assert registry.get("toy-model", CHAMPION).version == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("toy-model")
    registry.promote("toy-model", "2")  # by hand
    assert registry.get("toy-model", CHAMPION).version == "2"


def test_unknown_versions_and_aliases_raise_clearly(registry: ModelRegistry, tmp_path: Path):
    registry.publish(package(tmp_path, 2.0, 0.5, name="toy-errors"))
    with pytest.raises(RegistryError, match="no version '7' of model 'toy-errors'"):
        registry.get("toy-errors", "7")
    assert registry.find("toy-errors", CHAMPION) is None
    with pytest.raises(RegistryError):
        registry.set_alias("toy-errors", CHAMPION, "9")


def test_a_process_without_the_project_loads_the_champion(registry: ModelRegistry, tmp_path: Path):
    v = registry.publish(package(tmp_path, 2.5, 0.5, name="toy-consumer"))
    registry.promote("toy-consumer", v.version)
    out, _ = consume("models:/toy-consumer@champion", registry.tracking_uri, pd.DataFrame({"x": [2.0, 4.0]}))
    assert out["y"].tolist() == [5.0, 10.0]


def test_gate_scope_keeps_a_champion_trained_for_another_setting(registry: ModelRegistry, tmp_path: Path):
    v1 = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-scope"))
    registry.promote("toy-scope", v1.version)
    v2 = registry.publish(package(tmp_path, 3.0, 0.9, name="toy-scope"))  # better, but config scale differs
    decision = registry.promote_if_better("toy-scope", v2.version, "accuracy", True, scope="scale")
    assert not decision.promoted
    assert "promote by hand" in decision.reason
    assert registry.get("toy-scope", CHAMPION).version == v1.version


def test_gate_scope_of_several_keys_compares_only_keys_the_champion_recorded(
    registry: ModelRegistry, tmp_path: Path
):
    """An older champion without a key (here ``chunked``) is compared on the others; a None that the
    champion did record (chunked prefill off) differs from a value."""
    from dataclasses import replace

    def pkg(scale: float, metric: float, **config: object) -> ModelPackage:
        base = package(tmp_path, scale, metric, name="toy-scopes")
        return replace(base, config={"scale": 1.0, **config})

    scope = ("scale", "chunked")
    v1 = registry.publish(pkg(1.0, 0.5))  # recorded before "chunked" existed
    registry.promote("toy-scopes", v1.version)
    v2 = registry.publish(pkg(1.0, 0.6, chunked=None))
    decision = registry.promote_if_better("toy-scopes", v2.version, "accuracy", True, scope=scope)
    assert decision.promoted, decision.reason
    v3 = registry.publish(pkg(1.0, 0.9, chunked=512))  # better, but for chunked prefill
    decision = registry.promote_if_better("toy-scopes", v3.version, "accuracy", True, scope=scope)
    assert not decision.promoted
    assert "chunked=None" in decision.reason
    assert registry.get("toy-scopes", CHAMPION).version == v2.version


def test_model_references_parse_to_name_and_alias_or_version():
    from flows.registry import model_uri, parse_model_ref

    assert parse_model_ref("llm-router@champion") == ("llm-router", "champion")
    assert parse_model_ref("llm-router/3") == ("llm-router", "3")
    assert parse_model_ref("round_robin") is None
    assert parse_model_ref("some/folder") is None
    assert model_uri("llm-router", "3") == "models:/llm-router/3"
    assert model_uri("llm-router", "champion") == "models:/llm-router@champion"


def test_a_tie_keeps_the_champion(registry: ModelRegistry, tmp_path: Path):
    """The drift-watch report "promoted: 1.049 vs 1.049": a challenger must be better, not equal."""
    v1 = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-tie"))
    assert registry.promote_if_better("toy-tie", v1.version, "accuracy", higher_is_better=True).promoted
    v2 = registry.publish(package(tmp_path, 3.0, 0.5, name="toy-tie"))  # another model, same score
    decision = registry.promote_if_better("toy-tie", v2.version, "accuracy", higher_is_better=True)
    assert not decision.promoted
    assert "strictly better" in decision.reason
    assert registry.get("toy-tie", CHAMPION).version == v1.version
    v3 = registry.publish(package(tmp_path, 4.0, 0.6, name="toy-tie"))
    decision = registry.promote_if_better("toy-tie", v3.version, "accuracy", True, min_improvement=0.2)
    assert not decision.promoted  # better, but not by the margin asked for
    assert "better by more than 0.2" in decision.reason


def test_an_unchanged_model_is_not_registered_again(registry: ModelRegistry, tmp_path: Path):
    """Same data fingerprint, config, requirements and code: the existing version, no new one, no alias
    moved; a different config is a new version."""
    v1 = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-same"))
    registry.promote("toy-same", v1.version)
    again = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-same"))
    assert again.reused
    assert again.version == v1.version
    assert again.to_dict()["reused"] is True
    assert [v.version for v in registry.versions("toy-same")] == [v1.version]
    assert registry.get("toy-same", CHAMPION).version == v1.version
    assert len(again.tags[IDENTITY_TAG]) == 64
    assert len(again.tags[CODE_TAG]) == 64
    other = registry.publish(package(tmp_path, 3.0, 0.5, name="toy-same"))
    assert not other.reused
    assert other.version == "2"


def test_promote_is_a_compare_and_set(registry: ModelRegistry, tmp_path: Path):
    """A move based on a comparison with champion X happens only while X is still champion."""
    v1 = registry.publish(package(tmp_path, 2.0, 0.5, name="toy-cas"))
    v2 = registry.publish(package(tmp_path, 3.0, 0.6, name="toy-cas"))
    registry.promote("toy-cas", v1.version, expected=None)
    with pytest.raises(ChampionMovedError, match=r"compared with champion none, but the champion is now v1"):
        registry.promote("toy-cas", v2.version, expected=None)
    assert registry.get("toy-cas", CHAMPION).version == v1.version
    assert registry.champion_history("toy-cas") == [v1.version]
    registry.promote("toy-cas", v2.version, expected=v1.version)
    assert registry.get("toy-cas", CHAMPION).version == v2.version
    with pytest.raises(RegistryError, match="champion moves only through promote"):
        registry.set_alias("toy-cas", CHAMPION, v1.version)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://nowhere", "unsupported MLflow tracking URI 'bogus://nowhere'"),
        ("sqlite:////proc/loadwise-x.db", "cannot create /proc/loadwise-x.db"),
        ("sqlite:////etc/passwd", "file is not a database"),
        ("http://127.0.0.1:{port}", "no MLflow tracking server answers"),
        ("postgresql://nobody@127.0.0.1:{port}/mlflow", "the database does not answer"),
    ],
)
def test_a_store_that_cannot_work_is_one_line_in_seconds(uri: str, message: str, monkeypatch):
    """Before the fix: ``/proc`` retried ~100 s then a SQLAlchemy traceback; ``bogus://`` read as "no
    version '1'"; every read-only call on an unusable store raised MLflow's own errors. Now the probe
    refuses the store before MLflow opens it (MLflow's own retries are what took ~100 s)."""
    import mlflow

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLflow opened a store the probe should have refused")

    monkeypatch.setattr(mlflow, "MlflowClient", tripwire)
    uri = uri.format(port=free_port())
    for create in (True, False):
        with pytest.raises(StoreError, match=message) as caught:
            ModelRegistry(tracking_uri=uri, create=create).get("llm-router", "1")
        assert "\n" not in str(caught.value)
        assert "MLFLOW_TRACKING_URI" in str(caught.value)


def test_a_read_only_registry_creates_nothing(tmp_path: Path):
    home = tmp_path / "home"
    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", create=False)
    assert not registry.exists()
    for call in (registry.model_names, lambda: registry.find("llm-router", CHAMPION)):
        with pytest.raises(NoRegistryError, match=f"no registry at {home / 'mlflow.db'} yet"):
            call()
    assert not home.exists()
    home.mkdir()
    with pytest.raises(NoRegistryError):
        registry.rollback("llm-router")
    assert list(home.iterdir()) == []
