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
``promote`` / ``promote_if_better`` / ``rollback``, each under ``champion_lock`` (see below).
``champion`` is the production setting's. A **setting alias** (``SETTING_ALIASES``, e.g.
``paper-main``) is a champion scoped to one named setting: the same gate moves it, with the same lock,
compare-and-set and rollback history, and its gate evidence is recorded under its own tags
(``gate_tags``), so one version can be judged for ``champion`` and for ``paper-main`` apart.

**Compare-and-set.** A gate compares a challenger with the champion *of that moment*; minutes later
another run may have moved it. ``promote(..., expected=V)`` moves ``champion`` only if it is still
``V`` (``None``: no champion), checked and moved under one lock that every promoter of the same store
takes: an advisory ``flock`` on ``<db>.champion.lock`` beside a SQLite file (every process of the
machine), a PostgreSQL advisory lock for a ``postgresql://`` store (every client of the database).
A tracking server (``http(s)://``) offers no lock to its clients: there the check and the move are
two requests a few milliseconds apart, serialized only within one process (docs/operations.md).

**Store errors.** The store is probed before first use (``check``): an unsupported scheme, a SQLite
path that cannot be opened or created, a database or tracking server that does not answer are one
``StoreError`` line within seconds (MLflow itself retries a bad SQLite path for ~100 s). A registry
opened with ``create=False`` (read-only commands) never creates a SQLite file: ``NoRegistryError``.

**Unchanged models.** A package whose data fingerprint, config, requirements and code (the sources
under ``CODE_FOLDERS`` plus its serving module) equal an existing version's is not registered again:
``publish`` returns that version with ``reused=True`` and moves no alias.

**Lineage, in MLflow's own fields where it has one.** The run and the LoggedModel (named after the
registered model, not "model") carry ``mlflow.source.git.commit``; the data a model was trained on is
the run's input dataset (``mlflow.log_input``, context ``training``: its digest is MLflow's hash of
the rows); the headline metrics are run metrics (a version reads them through its run, not as tags);
files a consumer does not load (e.g. the RL training's stable-baselines3 checkpoint) are run
artifacts. Version tags keep what MLflow does not model: whether the tree was dirty, the trainer's
``loadwise.data_fingerprint`` (a cache key over the inputs, e.g. the warehouse files' content hashes,
not a hash of the rows), the resolved config (also a run artifact) and the identity below.

**Relocatable store.** MLflow records absolute ``file://`` artifact locations. When the default SQLite
store (``$LOADWISE_HOME/mlflow.db``, artifacts in ``mlartifacts`` beside it) was copied or moved to
another folder, opening it rewrites the locations under the old ``mlartifacts`` to the one beside the
database (``relocate_sqlite_store``; once, in one SQLite transaction), so a copied home resolves its
models in its own folder. ``store_key`` names the store for cache keys without its absolute path.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from warehouse.settings import loadwise_home

DEFAULT_EXPERIMENT = "loadwise"
CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "loadwise."
HISTORY_TAG = "loadwise.champion_history"
GATE_TAG = "loadwise.gate"
"""On a version: the promotion gate's decision about it (``promoted: ...`` / ``not promoted: ...``)."""
GATE_PASSED_TAG = "loadwise.gate.passed"
"""On a version: ``true`` / ``false``, the gate's verdict (absent: no gate ran for it)."""
GATE_AGAINST_TAG = "loadwise.gate.champion"
"""On a version: the champion version the gate compared it with (``none``: there was none)."""
SETTING_ALIASES: Mapping[str, str] = {
    "paper-main": "the paper's main setting: the `main` 5-task mix, 4 x v100-llama2-7b-paper, 20 req/s",
}
"""Gated aliases besides ``champion``, each the champion of one named setting (``llm-router@paper-main``).
What makes a version eligible for one (its setting) is the model's gate's business
(``flows.models.router.ROUTER_SCOPES``); here they are aliases that only ``promote`` moves."""
GATED_ALIASES = frozenset({CHAMPION, *SETTING_ALIASES})


@dataclass(frozen=True)
class GateTags:
    """The version tags holding a gate's evidence for one gated alias, and the model tag holding the
    alias's history (``champion``'s are the historical names, so older stores read unchanged)."""

    decision: str
    passed: str
    against: str
    history: str


def gate_tags(alias: str = CHAMPION) -> GateTags:
    """The tags of gated ``alias`` (``champion`` or a ``SETTING_ALIASES`` key): ``champion``'s are
    ``GATE_TAG`` / ``GATE_PASSED_TAG`` / ``GATE_AGAINST_TAG`` / ``HISTORY_TAG``; a setting alias's are
    the same names under ``loadwise.scope.<alias>.``. Raises ``RegistryError`` for any other alias."""
    check_gated_alias(alias)
    if alias == CHAMPION:
        return GateTags(GATE_TAG, GATE_PASSED_TAG, GATE_AGAINST_TAG, HISTORY_TAG)
    scope = f"{TAG_PREFIX}scope.{alias}."
    strip = len(TAG_PREFIX)
    return GateTags(
        scope + GATE_TAG[strip:], scope + GATE_PASSED_TAG[strip:], scope + GATE_AGAINST_TAG[strip:],
        scope + HISTORY_TAG[strip:],
    )  # fmt: skip


def check_gated_alias(alias: str) -> None:
    """``RegistryError`` unless ``alias`` is one the gate moves (``GATED_ALIASES``)."""
    if alias not in GATED_ALIASES:
        known = ", ".join(sorted(GATED_ALIASES))
        raise RegistryError(f"{alias!r} is not a gated alias (known: {known})")


FORCED_TAG = "loadwise.forced"
"""On a version promoted by hand against (or without) the gate's verdict: JSON ``{by, at, why, gate}``."""
IDENTITY_TAG = "loadwise.identity"
"""On a version: SHA-256 of its data fingerprint, config, requirements and code (``model_identity``)."""
CODE_TAG = "loadwise.code_fingerprint"
CODE_FOLDERS = ("training", "eval", "features", "warehouse")
"""The project layers a trainer runs (``flows`` only orchestrates): their Python sources are the
"code version" of a model, with its serving module."""
LOCK_TIMEOUT_S = 120.0
"""How long a promoter waits for ``champion_lock`` before giving up (a promotion holds it for ms)."""
PROBE_TIMEOUT_S = 5.0
"""Connect timeout of the store probe (tracking server, database)."""
_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///$LOADWISE_HOME/mlflow.db`` (creates nothing)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(loadwise_home() / 'mlflow.db').resolve()}"


def store_key(uri: str, home: Path | None = None) -> str:
    """The store's name in cache keys: ``home:<relative path>`` for a SQLite file inside the data home
    (``$LOADWISE_HOME``; a copied or moved home keeps its keys), else the URI itself."""
    path = sqlite_path(uri)
    root = (home or loadwise_home()).resolve()
    if path is not None and path.resolve().is_relative_to(root):
        return f"home:{path.resolve().relative_to(root).as_posix()}"
    return uri


def relocate_sqlite_store(path: Path) -> int:
    """Point a moved SQLite store's artifact locations at the ``mlartifacts`` folder beside it.

    MLflow stores absolute ``file://`` URIs (experiments, runs, LoggedModels, model versions). When an
    experiment's location is a ``.../mlartifacts`` folder other than ``path.parent / "mlartifacts"``
    (the store was copied or moved with its data home) and that folder exists here, every location
    under the old folder is rewritten to the new one in one transaction. Returns the rows changed (0:
    nothing was moved). Only the folder of a moved home (gone) or a copied one (a database of the same
    name beside it) is rewritten: an artifact root placed elsewhere on purpose
    (``LOADWISE_ARTIFACT_ROOT``) is left alone.

    Who calls this: ``ModelRegistry.client`` on first use of a SQLite store (~1 ms when nothing moved).
    """
    here = path.parent / "mlartifacts"
    if not path.is_file() or not here.is_dir():
        return 0
    new = here.resolve().as_uri()
    columns = (
        ("experiments", "artifact_location"),
        ("runs", "artifact_uri"),
        ("logged_models", "artifact_location"),
        ("model_versions", "storage_location"),
    )
    con = sqlite3.connect(path, timeout=PROBE_TIMEOUT_S)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        olds = {
            loc.rstrip("/")
            for (loc,) in con.execute("SELECT artifact_location FROM experiments")
            if loc and loc.startswith("file://") and loc.rstrip("/").endswith("/mlartifacts")
        } - {new}
        olds = {old for old in olds if _moved_home(old, path.name)}
        changed = 0
        with con:  # one transaction: all locations move, or none
            for old in sorted(olds):
                for table, column in columns:
                    if table in tables:
                        changed += con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                            (new, len(old) + 1, old, _like_prefix(old + "/")),
                        ).rowcount
        return changed
    finally:
        con.close()


def _moved_home(location: str, db_name: str) -> bool:
    """Whether ``location`` (a ``file://.../mlartifacts`` URI) is the artifact folder of a data home that
    was moved (the folder is gone) or copied (a database of the same name still sits beside it)."""
    from urllib.request import url2pathname

    folder = Path(url2pathname(urlsplit(location).path))
    return not folder.exists() or (folder.parent / db_name).is_file()


def _like_prefix(text: str) -> str:
    """A SQL ``LIKE`` pattern matching strings that start with ``text`` (escape: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///FILE`` URI (``None`` for other stores or in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def code_fingerprint(
    folders: tuple[str, ...] = CODE_FOLDERS, extra: Path | None = None, root: Path | None = None
) -> str:
    """SHA-256 over the Python sources under ``folders`` (relative to the project root) and ``extra``
    (a serving module). The code version of a registered model, and part of the nightly's step keys.

    Who calls this: ``ModelRegistry.publish`` once per registration, the nightly flow once per step
    (~2 ms for ~80 files)."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = [f for folder in folders for f in sorted((root / folder).rglob("*.py"))]
    for file in [*files, *([extra] if extra else [])]:
        digest.update(str(file.relative_to(root) if file.is_relative_to(root) else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def model_identity(pkg: ModelPackage, code: str) -> str:
    """What makes two registrations the same model: data fingerprint, config, requirements, code (and
    the pyfunc's ``model_config`` when it has one)."""
    text = json.dumps(
        {
            "name": pkg.name,
            "data": pkg.data_fingerprint,
            "config": pkg.config,
            "requirements": sorted(pkg.pip_requirements),
            "code": code,
            **({"model_config": dict(pkg.model_config)} if pkg.model_config else {}),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


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
            inferred from them: named columns for a frame, a tensor for an array; the input example
            is stored with the model).
        pip_requirements: exact requirements of the serving side.
        config: the resolved training config (logged as params, a JSON artifact and a tag).
        metrics: headline metrics (run metrics and version tags).
        data_fingerprint: hash of the training data (warehouse rows, profile files).
        reports: file name -> text (markdown / JSON reports logged next to the model).
        description: one line for the registry.
        tags: extra version tags (full names, e.g. ``loadwise.policy``); not part of the identity.
        metadata: the MLmodel file's ``metadata`` (e.g. the router's snapshot column names).
        model_config: the MLmodel's ``model_config`` (``context.model_config`` in the pyfunc; a
            consumer overrides it with ``load_model(uri, model_config={...})``), e.g. torch threads.
        training_data: the rows the model was trained on, logged as the run's input dataset.
        run_artifacts: run artifact folder -> local file: files kept with the run that the served
            model does not load (e.g. ``checkpoints`` -> the SB3 ``final_model.zip``).
    """

    name: str
    serving_module: Path
    model_class: str
    artifacts: Mapping[str, Path]
    input_example: pd.DataFrame | np.ndarray
    output_example: Any
    pip_requirements: list[str]
    config: Mapping[str, Any]
    metrics: Mapping[str, float]
    data_fingerprint: str
    reports: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    model_config: Mapping[str, Any] = field(default_factory=dict)
    training_data: TrainingData | None = None
    run_artifacts: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingData:
    """A model's training rows, for ``mlflow.log_input`` (MLflow computes the dataset's digest).

    Attributes:
        frame: the rows (one per training example; keep it to the columns the trainer used).
        name: the dataset's name in MLflow (e.g. ``llm-router-train``).
        source: where the rows came from: a local file (the warehouse) or a description (a named
            workload); shown as the dataset's source.
    """

    frame: pd.DataFrame
    name: str
    source: str

    def dataset(self) -> Any:
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.pandas_dataset import from_pandas

        source: Any = (
            self.source if Path(self.source).is_absolute() else CodeDatasetSource({"source": self.source})
        )
        return from_pandas(self.frame, source=source, name=self.name)


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
    reused: bool = False
    """``publish`` found this version already registered from identical inputs (no new version)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "aliases": list(self.aliases),
            "metrics": self.metrics,
            "reused": self.reused,
        }


@dataclass(frozen=True)
class PromotionDecision:
    """Whether ``champion`` moved, and why (the gate's result, shown by the CLI)."""

    promoted: bool
    reason: str
    champion_version: str | None


class RegistryError(RuntimeError):
    """A registry operation that cannot succeed (unknown model, version or alias)."""


class StoreError(RegistryError):
    """The tracking store cannot be used (bad URI, unreachable, not writable): one line, what to do."""


class NoRegistryError(RegistryError):
    """A read-only command found no registry (no SQLite file yet); nothing was created."""


class ChampionMovedError(RegistryError):
    """``promote(..., expected=V)`` refused: the champion is no longer ``V`` (another run moved it)."""

    def __init__(
        self, name: str, version: str, expected: str | None, current: str | None, alias: str = CHAMPION
    ) -> None:
        self.expected, self.current = expected, current
        what = "champion" if alias == CHAMPION else f"{alias} champion"
        super().__init__(
            f"not promoted: {name} v{version} was compared with {what} {_v(expected)}, but the {what} "
            f"is now {_v(current)} (another run moved it since the comparison); compare again"
        )


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "none"


class _AnyChampion:
    """Type of ``ANY_CHAMPION``: ``promote`` without a compare-and-set."""


ANY_CHAMPION = _AnyChampion()

_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()
"""Per thread: the stores whose ``champion_lock`` this thread holds (the lock is reentrant)."""


class ModelRegistry:
    """The one MLflow service. Constructing it has no side effects; the store opens on first use.

    ``create=False`` (``loadwise models`` / ``promote`` / ``rollback``): never create a SQLite store;
    opening one that does not exist raises ``NoRegistryError``.
    """

    def __init__(
        self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, *, create: bool = True
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.create = create
        self._client: Any = None
        self._checked = False

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self.check()
            import mlflow
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            path = sqlite_path(self.tracking_uri)
            if path is not None and not os.environ.get("LOADWISE_ARTIFACT_ROOT"):
                try:
                    relocate_sqlite_store(path)
                except sqlite3.Error as exc:
                    raise self._store_error(
                        f"cannot update the artifact locations in {path}: {exc}"
                    ) from None
            try:
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.tracking_uri)
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            except MlflowException as exc:
                raise self._store_error(_first_line(exc)) from None
        return self._client

    def exists(self) -> bool:
        """Whether the store holds a registry yet (only a SQLite file can tell; others: ``True``)."""
        path = sqlite_path(self.tracking_uri)
        return path is None or path.is_file()

    def check(self) -> None:
        """Probe the store in seconds, before any long work (training, fitting) and before MLflow.

        Who calls this: ``client`` on first use; the train/fit jobs and the CLI before they start.
        Raises ``StoreError`` (one line: the URI, why, what to do) or, with ``create=False`` and no
        SQLite file, ``NoRegistryError``. Creates nothing except, with ``create=True``, the SQLite
        file's folder. Cached per instance.
        """
        if self._checked:
            return
        uri = self.tracking_uri
        scheme = urlsplit(uri).scheme.split("+", 1)[0].lower()
        path = sqlite_path(uri)
        if scheme == "sqlite" and path is not None:
            self._check_sqlite(path)
        elif scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S) as resp:
                    if resp.status != 200:
                        raise OSError(f"/health answered {resp.status}")
            except (OSError, ValueError) as exc:
                raise self._store_error(f"no MLflow tracking server answers ({_first_line(exc)})") from None
        elif scheme in ("postgresql", "mysql", "mssql"):
            self._check_database()
        elif scheme not in _SCHEMES:
            raise StoreError(
                f"unsupported MLflow tracking URI {uri!r}: use sqlite:///FILE, postgresql://USER@HOST/DB or "
                "http(s)://SERVER (MLFLOW_TRACKING_URI)"
            )
        self._checked = True

    def _check_sqlite(self, path: Path) -> None:
        if path.exists():
            if not path.is_file():
                raise self._store_error(f"{path} is not a file")
            try:  # read-only open: changes nothing
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)
                try:
                    con.execute("SELECT count(*) FROM sqlite_master").fetchone()
                finally:
                    con.close()
            except sqlite3.Error as exc:
                raise self._store_error(f"cannot read {path}: {exc}") from None
            if self.create and not os.access(path, os.W_OK):
                raise self._store_error(f"{path} is not writable")
            return
        no_registry = NoRegistryError(
            f"no registry at {path} yet (nothing registered: train a model first, e.g. "
            "loadwise fit-estimator; or set MLFLOW_TRACKING_URI)"
        )
        if not self.create and not path.parent.is_dir():
            raise no_registry  # e.g. an empty $LOADWISE_HOME: create nothing, not even the folder
        try:  # SQLite writes its file and journals in the folder: try a file there, leave nothing
            if self.create:
                path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
                pass
        except OSError as exc:
            raise self._store_error(f"cannot create {path} ({exc.strerror or exc})") from None
        if not self.create:
            raise no_registry

    def _check_database(self) -> None:
        import sqlalchemy

        uri = self.tracking_uri
        args = {"timeout": int(PROBE_TIMEOUT_S)} if uri.startswith("mssql") else {"connect_timeout": 5}
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
            try:
                with engine.connect() as con:
                    con.execute(sqlalchemy.text("SELECT 1"))
            finally:
                engine.dispose()
        except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
            raise self._store_error(f"the database does not answer ({_first_line(exc)})") from None

    def _store_error(self, why: str) -> StoreError:
        return StoreError(
            f"cannot use the MLflow store {self.tracking_uri}: {why}; point MLFLOW_TRACKING_URI at a "
            "writable sqlite:///FILE, a PostgreSQL database or a running tracking server"
        )

    @contextmanager
    def champion_lock(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the store's promotion lock: every ``champion`` move (and by-hand verdict) runs under it.

        Threads of this process take a process lock; other processes: an advisory ``flock`` on
        ``<db>.champion.lock`` beside a SQLite store, ``pg_try_advisory_lock`` on a PostgreSQL store.
        Other stores (a tracking server): the process lock only. Reentrant within a thread; released
        when the holder exits or dies. Raises ``StoreError`` after ``timeout_s`` seconds of waiting.
        """
        self.check()  # a bad store: one line, before any lock (a lock file, a database connection)
        key = self.tracking_uri
        held: set[str] = getattr(_HELD, "stores", set())
        _HELD.stores = held
        if key in held:
            yield
            return
        with _PROCESS_LOCKS_GUARD:
            lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        deadline = time.monotonic() + timeout_s
        if not lock.acquire(timeout=timeout_s):
            raise self._store_error(f"another promotion held the champion lock for over {timeout_s:g} s")
        try:
            with self._store_lock(deadline):
                held.add(key)
                try:
                    yield
                finally:
                    held.discard(key)
        finally:
            lock.release()

    @contextmanager
    def _store_lock(self, deadline: float) -> Iterator[None]:
        path = sqlite_path(self.tracking_uri)
        if path is not None:
            lock_file = path.with_name(path.name + ".champion.lock")
            with open(lock_file, "a") as fh:
                while True:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise self._store_error(
                                f"{lock_file} stayed locked by another promotion"
                            ) from None
                        time.sleep(0.02)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
        if self.tracking_uri.startswith("postgresql"):
            with self._pg_lock(deadline):
                yield
            return
        yield  # a tracking server: no lock its clients can share (see the module doc)

    @contextmanager
    def _pg_lock(self, deadline: float) -> Iterator[None]:
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(b"loadwise.champion").digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(self.tracking_uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as con:
                try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
                while not con.execute(try_lock, {"k": key}).scalar():
                    if time.monotonic() > deadline:
                        raise self._store_error(
                            "the PostgreSQL champion lock stayed held by another promotion"
                        )
                    time.sleep(0.05)
                try:
                    yield
                finally:
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()

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
        path = sqlite_path(self.tracking_uri)
        root = path.parent / "mlartifacts" if path is not None else loadwise_home() / "mlartifacts"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._store_error(f"cannot create the artifact folder {root} ({exc.strerror})") from None
        return root.resolve().as_uri()

    # -- publish ----------------------------------------------------------------------------
    def publish(self, pkg: ModelPackage, alias: str = CHALLENGER) -> RegisteredVersion:
        """Log ``pkg`` in a new run, register it as a new version of ``pkg.name``, set ``alias``.

        An identical package (``model_identity``: same data fingerprint, config, requirements and
        code) already registered is not registered again: that version is returned with
        ``reused=True`` and no alias moves.
        """
        import mlflow
        from mlflow.models import infer_signature

        source = pkg.serving_module.read_text()
        if f"class {pkg.model_class}" not in source and "def __getattr__(" not in source:
            raise RegistryError(f"{pkg.serving_module} does not define class {pkg.model_class}")
        code_version = code_fingerprint(extra=pkg.serving_module)
        identity = model_identity(pkg, code_version)
        existing = self.find_identical(pkg.name, identity)
        if existing is not None:
            return replace(existing, reused=True)
        lineage = {
            **git_lineage(),
            "data_fingerprint": pkg.data_fingerprint,
            "serving_module": pkg.serving_module.name,
            "code_fingerprint": code_version,
            "identity": identity,
        }
        tags = {f"{TAG_PREFIX}{k}": v for k, v in lineage.items()} | dict(pkg.tags)
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
            git = (
                {"mlflow.source.git.commit": lineage["git_commit"]}
                if lineage["git_commit"] != "unknown"
                else {}
            )
            with mlflow.start_run(run_name=f"{pkg.name}"):
                mlflow.set_tags({**tags, **git})
                if pkg.training_data is not None:
                    mlflow.log_input(pkg.training_data.dataset(), context="training")
                for folder, file in pkg.run_artifacts.items():
                    mlflow.log_artifact(str(file), artifact_path=folder)
                mlflow.log_params(_flat_params(pkg.config))
                mlflow.log_metrics({k: float(v) for k, v in pkg.metrics.items()})
                mlflow.log_text(json.dumps(pkg.config, indent=2, sort_keys=True, default=str), "config.json")
                for fname, text in pkg.reports.items():
                    mlflow.log_text(text, f"reports/{fname}")
                info = mlflow.pyfunc.log_model(
                    name=pkg.name,
                    python_model=str(code),
                    artifacts={k: str(v) for k, v in pkg.artifacts.items()},
                    signature=signature,
                    input_example=pkg.input_example,
                    pip_requirements=list(pkg.pip_requirements),
                    metadata=dict(pkg.metadata) or None,
                    model_config=dict(pkg.model_config) or None,
                    tags=git or None,
                )
        with redirect_stderr(StringIO()):  # MLflow prints "Successfully registered model ..." there
            mv = mlflow.register_model(info.model_uri, pkg.name, tags=tags)
        if pkg.description:
            self.client.update_model_version(pkg.name, mv.version, description=pkg.description)
        self.client.set_registered_model_alias(pkg.name, alias, str(mv.version))
        return self.get(pkg.name, str(mv.version))

    # -- read -------------------------------------------------------------------------------
    def get(self, name: str, version_or_alias: str) -> RegisteredVersion:
        """A version by number or alias (``"3"`` or ``"champion"``)."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            if version_or_alias.isdigit():
                mv = client.get_model_version(name, version_or_alias)
            else:
                mv = client.get_model_version_by_alias(name, version_or_alias)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise self._store_error(_first_line(exc)) from None
            raise RegistryError(
                f"no version {version_or_alias!r} of model {name!r} in {self.tracking_uri}"
            ) from exc
        return self._describe(mv)

    def find_identical(self, name: str, identity: str) -> RegisteredVersion | None:
        """The oldest version of ``name`` registered with ``identity`` (``IDENTITY_TAG``), if any."""
        found = self.client.search_model_versions(f"name = '{name}' and tags.`{IDENTITY_TAG}` = '{identity}'")
        if not found:
            return None
        return self.get(name, str(min(int(mv.version) for mv in found)))

    def find(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version holding ``alias``, or ``None`` when the alias (or the model) does not exist."""
        try:
            return self.get(name, alias)
        except (StoreError, NoRegistryError):
            raise
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
    def record_gate(
        self,
        name: str,
        version: str,
        reason: str,
        report_markdown: str | None = None,
        *,
        passed: bool | None = None,
        against: str | None = None,
        alias: str = CHAMPION,
    ) -> None:
        """Keep the gate's one-line decision on the version (``loadwise promote`` shows it), its verdict
        (``passed``) and the holder of ``alias`` it compared with (``against``; ``None``: there was
        none), under ``alias``'s tags (``gate_tags``), and, when given, its full comparison as
        ``reports/gate.md`` (``reports/gate-<alias>.md`` for a setting alias) in the version's run."""
        tags = gate_tags(alias)
        self.client.set_model_version_tag(name, version, tags.decision, reason[:5000])
        if passed is not None:
            self.client.set_model_version_tag(name, version, tags.passed, "true" if passed else "false")
            self.client.set_model_version_tag(name, version, tags.against, against or "none")
        if report_markdown is not None:
            where = "reports/gate.md" if alias == CHAMPION else f"reports/gate-{alias}.md"
            self.client.log_text(self.get(name, version).run_id, report_markdown, where)

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set version tags (e.g. why the nightly flow chose it); aliases move only as documented."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value[:5000])

    def record_forced(self, name: str, version: str, why: str, verdict: str) -> None:
        """Tag a by-hand promotion that overrode (or had no) gate verdict: who, when (UTC), why."""
        record = {
            "by": _who(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "why": why,
            "gate": verdict,
        }
        self.client.set_model_version_tag(name, version, FORCED_TAG, json.dumps(record)[:5000])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``; the gated aliases (``champion``, ``SETTING_ALIASES``) move
        only through ``promote`` (its lock)."""
        if alias in GATED_ALIASES:
            raise RegistryError(f"{alias} moves only through promote (its compare-and-set and history)")
        self.get(name, version)  # a clear error for an unknown version
        self.client.set_registered_model_alias(name, alias, version)

    def promote(
        self,
        name: str,
        version: str,
        *,
        expected: str | _AnyChampion | None = ANY_CHAMPION,
        alias: str = CHAMPION,
    ) -> RegisteredVersion:
        """Move gated ``alias`` (``champion``, or a ``SETTING_ALIASES`` one) to ``version``; remembered
        for rollback in that alias's history.

        ``expected``: the version holding ``alias`` that the caller's comparison was made against
        (``None``: there was none). Checked and moved under ``champion_lock``; when the alias no
        longer points at ``expected``, nothing moves and ``ChampionMovedError`` says why. Without it
        (by hand, after the caller's own checks under the lock) the move is unconditional.
        """
        history_tag = gate_tags(alias).history
        with self.champion_lock():
            self.get(name, version)  # a clear error for an unknown version
            if not isinstance(expected, _AnyChampion):
                current = self._champion(name, alias)
                if current != expected:
                    raise ChampionMovedError(name, version, expected, current, alias)
            self.client.set_registered_model_alias(name, alias, version)
            history = self.champion_history(name, alias)
            if not history or history[-1] != version:
                history.append(version)
            self.client.set_registered_model_tag(name, history_tag, ",".join(history[-50:]))
        return self.get(name, version)

    def champion_history(self, name: str, alias: str = CHAMPION) -> list[str]:
        """Versions that held gated ``alias``, oldest first (the registered model's history tag)."""
        tags = self.client.get_registered_model(name).tags or {}
        return [v for v in tags.get(gate_tags(alias).history, "").split(",") if v]

    def rollback(self, name: str, alias: str = CHAMPION) -> tuple[str, str]:
        """Move gated ``alias`` back to the version that held it before; returns ``(from, to)``.

        Not gated (it restores a version that served before), but under ``champion_lock``."""
        history_tag = gate_tags(alias).history
        with self.champion_lock():
            current = self.find(name, alias)
            if current is None:
                raise RegistryError(f"model {name!r} has no {alias} to roll back")
            history = [v for v in self.champion_history(name, alias) if v != current.version]
            if not history:
                raise RegistryError(f"model {name!r}: {alias} v{current.version} has no previous {alias}")
            target = history[-1]
            self.client.set_registered_model_alias(name, alias, target)
            self.client.set_registered_model_tag(name, history_tag, ",".join(history))
        return current.version, target

    def promote_if_better(
        self,
        name: str,
        version: str,
        metric: str,
        higher_is_better: bool,
        min_improvement: float = 0.0,
        scope: str | tuple[str, ...] | None = None,
    ) -> PromotionDecision:
        """Move ``champion`` to ``version`` when ``metric_verdict`` says it is better than the current
        champion (strictly: a tie keeps the champion). The comparison and the move run under
        ``champion_lock``, so the champion compared with is the one replaced."""
        with self.champion_lock():
            cand = self.get(name, version)
            champ = self.find(name, CHAMPION)
            passed, reason = metric_verdict(cand, champ, metric, higher_is_better, min_improvement, scope)
            before = champ.version if champ else None
            if passed:
                self.promote(name, version, expected=before)
            return PromotionDecision(passed, reason, version if passed else before)

    def _champion(self, name: str, alias: str = CHAMPION) -> str | None:
        champ = self.find(name, alias)
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


def metric_verdict(
    cand: RegisteredVersion,
    champ: RegisteredVersion | None,
    metric: str,
    higher_is_better: bool,
    min_improvement: float = 0.0,
    scope: str | tuple[str, ...] | None = None,
) -> tuple[bool, str]:
    """Whether ``cand`` should replace ``champ`` on one held-out ``metric``; ``(passed, reason)``.

    Pure (reads the two versions' metrics and config tags). The first version of a model passes. A
    challenger must be better by more than ``min_improvement`` (>= 0; default 0: strictly better, a
    tie keeps the champion). ``scope``: config keys (e.g. ``serving_model``, ``profile``) whose values
    must be the champion's for the metrics to be comparable; otherwise it is refused and the reason
    says so. A key the champion's config lacks (an older version) is not compared. A candidate
    missing ``metric`` is refused.
    """
    if champ is None:
        return True, f"first champion of {cand.name} (no previous champion)"
    if champ.version == cand.version:
        return False, f"version {cand.version} already is the champion"
    ours_cfg, theirs_cfg = _config(cand), _config(champ)
    for key in (scope,) if isinstance(scope, str) else scope or ():
        ours, theirs = ours_cfg.get(key), theirs_cfg.get(key)
        if key in theirs_cfg and theirs != ours:
            why = f"champion v{champ.version} is for {key}={theirs!r}, this version for {ours!r}"
            return False, f"{why}: promote by hand"
    if metric not in cand.metrics:
        return False, f"version {cand.version} has no metric {metric!r}"
    new, old = cand.metrics[metric], champ.metrics.get(metric)
    if old is None:
        return True, f"champion v{champ.version} had no {metric}"
    gain = new - old if higher_is_better else old - new
    cmp = f"{metric} {new:.4g} vs champion v{champ.version} {old:.4g}"
    if not gain > min_improvement:  # NaN never passes
        need = "strictly better" if min_improvement == 0 else f"better by more than {min_improvement:g}"
        return False, f"kept champion: {cmp} (a challenger must be {need})"
    return True, f"promoted: {cmp}"


def _who() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


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
