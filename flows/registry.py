"""MLflow behind one service: log a trained model as a pyfunc, register it, move aliases, list, load.

Who calls this: the CLI (``train-predictor``, ``fit-estimator``, ``train-router``, ``models``) and the
Prefect flows, once per training run; ``loadwise compare`` to resolve ``NAME@ALIAS``. Nothing else in
the project imports MLflow (ARCHITECTURE.md: "MLflow through one service").

Tracking store: ``MLFLOW_TRACKING_URI`` when set, else a SQLite file ``$LOADWISE_HOME/mlflow.db``
with artifacts under ``$LOADWISE_HOME/mlartifacts`` (the registry lives in the same store).

**Self-contained models.** A consumer process loads ``models:/NAME@champion`` with nothing of this
project installed beyond the model's declared requirements. So models are logged *from code*
(MLflow's "models from code"): the trainer names a serving module (one file that imports only
third-party packages and defines the ``PythonModel`` class) and the service logs a copy of that file
with a final ``set_model(Class())`` line. No project class is pickled, so nothing refers back to
``training.*`` at load time. Requirements are passed explicitly (MLflow would otherwise record
``torch==2.13.0`` from the environment, which elsewhere means the CUDA build; STACK.md).

**Aliases, not stages.** Every new version gets ``challenger``; ``champion`` moves only through
``promote`` (by hand, or when a trainer's gate passes, see ``promote_if_better``).

**Lineage.** Every run and model version is tagged with the git commit (and whether the tree was
dirty), the data fingerprint the trainer computed (warehouse rows / profile files), the resolved
config (also a run artifact) and the headline metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from warehouse.paths import loadwise_home

DEFAULT_EXPERIMENT = "loadwise"
CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "loadwise."
HISTORY_TAG = "loadwise.champion_history"
GATE_TAG = "loadwise.gate"
"""On a version: the promotion gate's decision about it (``promoted: ...`` / ``not promoted: ...``)."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///$LOADWISE_HOME/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = loadwise_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def parse_model_ref(text: str) -> tuple[str, str] | None:
    """``NAME@ALIAS`` or ``NAME/VERSION`` -> ``(name, alias_or_version)``; ``None`` for anything else."""
    if "@" in text:
        name, _, ref = text.partition("@")
    else:
        name, _, ref = text.rpartition("/")
        if not ref.isdigit():
            return None
    return (name, ref) if name and ref else None


def model_uri(name: str, version_or_alias: str) -> str:
    """``models:/NAME/VERSION`` for a version number, ``models:/NAME@ALIAS`` for an alias."""
    sep = "/" if version_or_alias.isdigit() else "@"
    return f"models:/{name}{sep}{version_or_alias}"


def git_lineage(repo: Path | None = None) -> dict[str, str]:
    """``{"git_commit": sha, "git_dirty": "true"|"false"}`` of the source tree, or ``unknown``."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": sha, "git_dirty": "true" if dirty else "false"}


@dataclass(frozen=True)
class ModelPackage:
    """Everything a trainer hands to the registry for one model version.

    Attributes:
        name: registered model name (``length-predictor``, ``impact-estimator``, ``llm-router``).
        serving_module: a self-contained ``.py`` file defining ``model_class`` (a
            ``mlflow.pyfunc.PythonModel``); it must import nothing from this project.
        model_class: the class name in ``serving_module``.
        artifacts: name -> local file or folder; the model reads ``context.artifacts[name]``.
        input_example / output_example: a few rows in and the model's answer (the signature is
            inferred from them; the input example is stored with the model).
        pip_requirements: exact requirements of the serving side.
        config: the resolved training config (logged as params, a JSON artifact and a tag).
        metrics: headline metrics (run metrics and version tags).
        data_fingerprint: hash of the training data (warehouse rows, profile files).
        reports: file name -> text (markdown / JSON reports logged next to the model).
        description: one line for the registry.
    """

    name: str
    serving_module: Path
    model_class: str
    artifacts: Mapping[str, Path]
    input_example: pd.DataFrame
    output_example: Any
    pip_requirements: list[str]
    config: Mapping[str, Any]
    metrics: Mapping[str, float]
    data_fingerprint: str
    reports: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version, as the CLI's ``--json`` prints it."""

    name: str
    version: str
    run_id: str
    model_uri: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "aliases": list(self.aliases),
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class PromotionDecision:
    """Whether ``champion`` moved, and why (the gate's result, shown by the CLI)."""

    promoted: bool
    reason: str
    champion_version: str | None


class RegistryError(RuntimeError):
    """A registry operation that cannot succeed (unknown model, version or alias)."""


class ModelRegistry:
    """The one MLflow service. Constructing it has no side effects; the store opens on first use."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self._client: Any = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        return str(self.client.create_experiment(self.experiment, artifact_location=self._artifact_root()))

    def _artifact_root(self) -> str | None:
        """Where a new experiment keeps its artifacts when the store is a database.

        ``LOADWISE_ARTIFACT_ROOT`` (e.g. ``s3://bucket/mlflow``) when set; else ``mlartifacts`` beside a
        SQLite file, or ``$LOADWISE_HOME/mlartifacts`` for other databases (PostgreSQL). A tracking
        *server* (``http(s)://``) decides for itself (``--artifacts-destination``): ``None``.
        """
        explicit = os.environ.get("LOADWISE_ARTIFACT_ROOT")
        if explicit:
            return explicit
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        if self.tracking_uri.startswith("sqlite:///"):
            root = Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        else:
            root = loadwise_home() / "mlartifacts"
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve().as_uri()

    # -- publish ----------------------------------------------------------------------------
    def publish(self, pkg: ModelPackage, alias: str = CHALLENGER) -> RegisteredVersion:
        """Log ``pkg`` in a new run, register it as a new version of ``pkg.name``, set ``alias``."""
        import mlflow
        from mlflow.models import infer_signature

        source = pkg.serving_module.read_text()
        if f"class {pkg.model_class}" not in source and "def __getattr__(" not in source:
            raise RegistryError(f"{pkg.serving_module} does not define class {pkg.model_class}")
        lineage = {
            **git_lineage(),
            "data_fingerprint": pkg.data_fingerprint,
            "serving_module": pkg.serving_module.name,
        }
        tags = {f"{TAG_PREFIX}{k}": v for k, v in lineage.items()}
        tags[f"{TAG_PREFIX}config"] = json.dumps(pkg.config, sort_keys=True, default=str)[:5000]
        with warnings.catch_warnings():  # the integer-columns hint: our examples are what we serve
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            signature = infer_signature(pkg.input_example, pkg.output_example)
        self._experiment_id()
        mlflow.set_experiment(self.experiment)
        cls = pkg.model_class
        with tempfile.TemporaryDirectory(prefix="loadwise-model-") as tmp:
            code = Path(tmp) / f"{pkg.name.replace('-', '_')}_model.py"
            code.write_text(
                source.rstrip()
                + "\n\n\n# Added by loadwise's registry (MLflow models from code).\n"
                + "import mlflow.models as _mlflow_models  # noqa: E402\n\n"
                # a class defined in the file, or one its module __getattr__ builds on first use
                + f"_cls = globals().get({cls!r}) or globals()['__getattr__']({cls!r})\n"
                + "_mlflow_models.set_model(_cls())\n"
            )
            with mlflow.start_run(run_name=f"{pkg.name}"):
                mlflow.set_tags({**tags, "mlflow.source.git.commit": lineage["git_commit"]})
                mlflow.log_params(_flat_params(pkg.config))
                mlflow.log_metrics({k: float(v) for k, v in pkg.metrics.items()})
                mlflow.log_text(json.dumps(pkg.config, indent=2, sort_keys=True, default=str), "config.json")
                for fname, text in pkg.reports.items():
                    mlflow.log_text(text, f"reports/{fname}")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(code),
                    artifacts={k: str(v) for k, v in pkg.artifacts.items()},
                    signature=signature,
                    input_example=pkg.input_example,
                    pip_requirements=list(pkg.pip_requirements),
                )
        with redirect_stderr(StringIO()):  # MLflow prints "Successfully registered model ..." there
            mv = mlflow.register_model(info.model_uri, pkg.name, tags={**tags, **_metric_tags(pkg.metrics)})
        if pkg.description:
            self.client.update_model_version(pkg.name, mv.version, description=pkg.description)
        self.client.set_registered_model_alias(pkg.name, alias, str(mv.version))
        return self.get(pkg.name, str(mv.version))

    # -- read -------------------------------------------------------------------------------
    def get(self, name: str, version_or_alias: str) -> RegisteredVersion:
        """A version by number or alias (``"3"`` or ``"champion"``)."""
        from mlflow.exceptions import MlflowException

        try:
            if version_or_alias.isdigit():
                mv = self.client.get_model_version(name, version_or_alias)
            else:
                mv = self.client.get_model_version_by_alias(name, version_or_alias)
        except MlflowException as exc:
            raise RegistryError(
                f"no version {version_or_alias!r} of model {name!r} in {self.tracking_uri}"
            ) from exc
        return self._describe(mv)

    def find(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version holding ``alias``, or ``None`` when the alias (or the model) does not exist."""
        try:
            return self.get(name, alias)
        except RegistryError:
            return None

    def _describe(self, mv: Any) -> RegisteredVersion:
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        aliases = tuple(sorted(getattr(mv, "aliases", []) or []))
        return RegisteredVersion(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or "",
            model_uri=f"models:/{mv.name}/{mv.version}",
            aliases=aliases,
            metrics=metrics,
            tags=dict(mv.tags or {}),
        )

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of ``name``, newest first (with aliases: the search API leaves them out)."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self.get(name, str(mv.version)) for mv in found), key=lambda v: -int(v.version))

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    # -- aliases ----------------------------------------------------------------------------
    def record_gate(self, name: str, version: str, reason: str, report_markdown: str | None = None) -> None:
        """Keep the gate's one-line decision on the version (``loadwise promote`` shows it) and, when
        given, its full comparison as ``reports/gate.md`` in the version's run."""
        self.client.set_model_version_tag(name, version, GATE_TAG, reason[:5000])
        if report_markdown is not None:
            self.client.log_text(self.get(name, version).run_id, report_markdown, "reports/gate.md")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.get(name, version)  # a clear error for an unknown version
        self.client.set_registered_model_alias(name, alias, version)

    def promote(self, name: str, version: str) -> RegisteredVersion:
        """Move ``champion`` to ``version`` (by hand or after a gate passed); remembered for rollback."""
        self.set_alias(name, CHAMPION, version)
        history = self.champion_history(name)
        if not history or history[-1] != version:
            history.append(version)
        self.client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-50:]))
        return self.get(name, version)

    def champion_history(self, name: str) -> list[str]:
        """Versions that held ``champion``, oldest first (the registered model's history tag)."""
        tags = self.client.get_registered_model(name).tags or {}
        return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]

    def rollback(self, name: str) -> tuple[str, str]:
        """Move ``champion`` back to the version that held it before; returns ``(from, to)``."""
        current = self.find(name, CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        history = [v for v in self.champion_history(name) if v != current.version]
        if not history:
            raise RegistryError(f"model {name!r}: champion v{current.version} has no previous champion")
        target = history[-1]
        self.client.set_registered_model_alias(name, CHAMPION, target)
        self.client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
        return current.version, target

    def promote_if_better(
        self,
        name: str,
        version: str,
        metric: str,
        higher_is_better: bool,
        tolerance: float = 0.0,
        scope: str | tuple[str, ...] | None = None,
    ) -> PromotionDecision:
        """Move ``champion`` to ``version`` unless the current champion is better on ``metric``.

        The first version of a model becomes champion; later, a candidate missing ``metric`` is refused.
        ``tolerance``: a candidate within this much of the champion still counts as not worse.
        ``scope``: config keys (e.g. ``serving_model``; ``profile``, ``num_instances``, ...) whose values
        must be the champion's for the metrics to be comparable; otherwise the champion stays and the
        reason says so. A key the champion's config lacks (an older version) is not compared.
        """
        cand = self.get(name, version)
        champ = self.find(name, CHAMPION)
        if champ is None:
            self.promote(name, version)
            return PromotionDecision(True, f"first champion of {name} (no previous champion)", version)
        ours_cfg, theirs_cfg = _config(cand), _config(champ)
        for key in (scope,) if isinstance(scope, str) else scope or ():
            ours, theirs = ours_cfg.get(key), theirs_cfg.get(key)
            if key in theirs_cfg and theirs != ours:
                return PromotionDecision(
                    False,
                    f"champion v{champ.version} is for {key}={theirs!r}, this version for {ours!r}: "
                    "promote by hand",
                    champ.version,
                )
        if metric not in cand.metrics:
            return PromotionDecision(False, f"version {version} has no metric {metric!r}", champ.version)
        if champ.version == version:
            return PromotionDecision(False, f"version {version} already is the champion", version)
        new, old = cand.metrics[metric], champ.metrics.get(metric)
        if old is None:
            self.promote(name, version)
            return PromotionDecision(True, f"champion v{champ.version} had no {metric}", version)
        better = new >= old - tolerance if higher_is_better else new <= old + tolerance
        cmp = f"{metric} {new:.4g} vs champion v{champ.version} {old:.4g}"
        if not better:
            return PromotionDecision(False, f"kept champion: {cmp}", champ.version)
        self.promote(name, version)
        return PromotionDecision(True, f"promoted: {cmp}", version)

    def _champion(self, name: str) -> str | None:
        champ = self.find(name, CHAMPION)
        return champ.version if champ else None

    # -- load -------------------------------------------------------------------------------
    def load(self, name: str, version_or_alias: str = CHAMPION) -> Any:
        """``mlflow.pyfunc.load_model`` of ``models:/NAME@ALIAS`` (or ``/VERSION``)."""
        import mlflow

        self.client  # noqa: B018 - sets the tracking and registry URIs
        return mlflow.pyfunc.load_model(model_uri(name, version_or_alias))

    def download_artifact(self, name: str, version_or_alias: str, artifact: str, dst: Path) -> Path:
        """Download one of a version's model artifacts (e.g. the router's policy folder) to ``dst``."""
        import mlflow
        import yaml

        v = self.get(name, version_or_alias)
        self.client  # noqa: B018
        root = Path(mlflow.artifacts.download_artifacts(f"{v.model_uri}", dst_path=str(dst)))
        flavor = yaml.safe_load((root / "MLmodel").read_text()).get("flavors", {}).get("python_function", {})
        entry = (flavor.get("artifacts") or {}).get(artifact)
        if entry is None:
            raise RegistryError(f"model {name} v{v.version} has no artifact {artifact!r}")
        return root / entry["path"]


def _config(version: RegisteredVersion) -> dict[str, Any]:
    """The resolved config a version was trained with (its ``loadwise.config`` tag; {} if unreadable)."""
    try:
        config = json.loads(version.tags.get(f"{TAG_PREFIX}config", "{}"))
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def _flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def _metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    return {f"{TAG_PREFIX}metric.{k}": f"{float(v):.6g}" for k, v in metrics.items()}
