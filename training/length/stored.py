"""Predictions as data: which length predictor a replay uses (``PredictorChoice``), writing a model
version's predictions of warehouse rows (``store_predictions``) and answering replays from them
(``StoredPredictor``).

Who calls this: ``loadwise predict`` and the nightly ``predict-lengths`` step (``store_predictions``,
once per run, through ``training.workloads.predictors.ensure_predictions``), the evaluation builder
and the RL episodes (``StoredPredictor``, once per evaluation or training run), the CLI / configs
(``PredictorChoice``: ``--predictor``, ``RouterTrainConfig.predictor``, ``EvalSpec.predictor``).

**Never per request.** A replay of a registered predictor reads ``marts.length_predictions``
(``warehouse.predictions``) for its requests' warehouse rows (``Request.row_id``); the model is
called only to fill the table, in batches of distinct inputs (``predict_inputs``), and only for rows
the table lacks (cached by model version and input hash: a second run over the same rows writes
nothing). Requests read from no warehouse row (synthetic workloads) are predicted in this process,
once per distinct input, and not stored.

**Kinds** (``PredictorChoice.kind``): ``task-mean`` (mean length per task over the workload's
training pool), ``oracle`` (true lengths: an upper bound, labelled ORACLE everywhere),
``registered`` (a ``length-predictor`` version of the model registry, answered from the warehouse;
its files are fetched by the flows layer to ``registered_model_dir``), ``path`` (a predictor folder
written by ``TrainedLengthPredictor.save``, run in this process).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from training.simulator.interface import LengthPrediction

if TYPE_CHECKING:
    from training.length.predictor import LearnedLengthPredictor
    from training.length.serving import LengthPredictorCore
    from training.simulator.request import Request

REGISTERED_NAME = "length-predictor"
"""The registered model name of the length predictor (``flows.models.gate.LENGTH_PREDICTOR``)."""

PredictorKind = Literal["task-mean", "oracle", "registered", "path"]
PREDICTOR_KINDS: tuple[str, ...] = ("task-mean", "oracle", "registered", "path")


class PredictorChoice(BaseModel):
    """Which length predictor the non-oracle routers of a replay (and the RL router's episodes) read.

    ``registered`` needs ``version`` (the flows layer resolves ``registered`` alone to the current
    champion); ``model_name`` is the registered name; ``warehouse`` the DuckDB file whose
    ``marts.length_predictions`` holds its predictions (``None``: the default warehouse). ``path``
    needs ``path``, a predictor folder. Recorded in reports, in ``RouterTrainConfig`` and so on every
    registered router version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PredictorKind = "task-mean"
    model_name: str = REGISTERED_NAME
    version: str | None = None
    path: str | None = None
    warehouse: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> PredictorChoice:
        if self.kind == "registered" and not (self.version and self.version.strip()):
            raise ValueError(
                "a registered predictor needs its version (resolve 'registered' to the champion)"
            )
        if self.kind == "path" and not self.path:
            raise ValueError("a 'path' predictor needs the predictor folder")
        return self

    @property
    def is_oracle(self) -> bool:
        return self.kind == "oracle"

    @property
    def label(self) -> str:
        """How reports name it: ``task_mean``, ``oracle (ORACLE: true lengths)``, ``length-predictor
        v3``, ``local predictor <folder>``."""
        if self.kind == "task-mean":
            return "task_mean"
        if self.kind == "oracle":
            return ORACLE_LABEL
        if self.kind == "registered":
            return f"{self.model_name} v{self.version}"
        return f"local predictor {self.path}"


ORACLE_LABEL = "oracle (ORACLE: true lengths)"
"""How reports name the oracle predictor when it is the one configured for every router."""


def registered_model_dir(model_name: str, version: str) -> Path:
    """Where the flows layer puts a registered version's predictor folder:
    ``$LOADWISE_HOME/predictors/<name>/v<version>`` (a function of the name and version only)."""
    from warehouse.settings import loadwise_home

    return loadwise_home() / "predictors" / model_name / f"v{version}"


def local_identity(folder: Path) -> tuple[str, str]:
    """``(model_name, model_version)`` under which a local predictor folder's predictions are stored:
    ``local:<folder name>`` and the first 12 hex digits of SHA-256 over its files (names and bytes)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return f"local:{folder.name}", digest.hexdigest()[:12]


@dataclass(frozen=True)
class StoreStats:
    """What ``store_predictions`` did. ``rows``: rows asked about; ``cached``: already stored with the
    same input; ``distinct_inputs``: model inputs computed; ``written``: rows written; seconds of wall
    time predicting and in total (predict + write)."""

    model_name: str
    model_version: str
    rows: int
    cached: int
    distinct_inputs: int
    written: int
    predict_s: float
    total_s: float

    @property
    def ms_per_written_row(self) -> float:
        """Wall milliseconds per written row (0 when nothing was written)."""
        return 1000.0 * self.total_s / self.written if self.written else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ms_per_written_row": self.ms_per_written_row}


INPUT_COLUMNS = ("request_id", "prompt_text", "prompt_tokens", "task")


def store_predictions(
    warehouse: str | Path | None,
    core: LengthPredictorCore,
    model_name: str,
    model_version: str,
    rows: pd.DataFrame,
    *,
    batch_size: int | None = None,
) -> StoreStats:
    """Predict the ``rows`` (``INPUT_COLUMNS``: warehouse rows) not yet stored for this model version
    with the same input, and write them to ``marts.length_predictions`` of ``warehouse`` in one
    copy-on-write session. Rows already stored with an unchanged input cost one read and nothing else."""
    import pyarrow as pa

    from training.length.predictor import BATCH_SIZE, predict_inputs
    from warehouse.predictions import input_hash, stored_hashes, write_predictions

    t0 = time.perf_counter()
    missing = [c for c in INPUT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows to predict lack columns {missing}")
    rows = rows.drop_duplicates("request_id").reset_index(drop=True)
    have = stored_hashes(warehouse, model_name, model_version)
    hashes = [
        input_hash(t if isinstance(t, str) else None, int(p), None if tk is None else str(tk))
        for t, p, tk in zip(rows["prompt_text"], rows["prompt_tokens"], rows["task"], strict=True)
    ]
    todo = np.array(
        [have.get(rid) != h for rid, h in zip(rows["request_id"], hashes, strict=True)], dtype=bool
    )
    cached = int((~todo).sum())
    if not todo.any():
        elapsed = time.perf_counter() - t0
        return StoreStats(model_name, model_version, len(rows), cached, 0, 0, 0.0, elapsed)
    part = rows[todo].reset_index(drop=True)
    t1 = time.perf_counter()
    batch = predict_inputs(
        core, part[["prompt_text", "prompt_tokens", "task"]], batch_size=batch_size or BATCH_SIZE
    )
    predict_s = time.perf_counter() - t1
    tasks = ["" if t is None else str(t) for t in part["task"]]
    table = pa.table(
        {
            "request_id": pa.array(part["request_id"].astype(str).tolist(), pa.string()),
            "model_name": pa.array([model_name] * len(part), pa.string()),
            "model_version": pa.array([model_version] * len(part), pa.string()),
            "input_hash": pa.array([h for h, keep in zip(hashes, todo, strict=True) if keep], pa.string()),
            "expected_output_tokens": pa.array(batch.expected_tokens, pa.float64()),
            "bucket_probs": pa.array(batch.bucket_probs.tolist(), pa.list_(pa.float64())),
            "bucket_edges": pa.array([edges_of(core, t) for t in tasks], pa.list_(pa.float64())),
            "answered_by": pa.array(batch.answered_by, pa.string()),
        }
    )
    written = write_predictions(warehouse, table)
    return StoreStats(
        model_name,
        model_version,
        len(rows),
        cached,
        batch.distinct_inputs,
        written,
        predict_s,
        time.perf_counter() - t0,
    )


def edges_of(core: LengthPredictorCore, task: str) -> list[float]:
    """The bucket edges (tokens) of a row of ``task``: the global ones, or the task's quantile edges."""
    meta = core.metadata
    if meta.get("edges") is not None:
        return [float(e) for e in meta["edges"]]
    by_task = meta["edges_by_task"]
    return [float(e) for e in by_task.get(task, by_task["*"])]


class MissingPredictionsError(ValueError):
    """Requests of a replay have no stored prediction of the configured version (one line)."""


class StoredPredictor:
    """A registered predictor version, answered from ``marts.length_predictions`` by ``Request.row_id``.

    ``predict_lengths`` reads the rows it has not read yet (one query per call), keeps them for the
    life of the object and returns the stored expected lengths and, when every row shares the bucket
    edges, the probabilities. A request with a ``row_id`` the table lacks is an error
    (``MissingPredictionsError``: run ``loadwise predict``; the evaluation builder and the RL episodes
    fill the table for their workload first). A request without ``row_id`` (synthetic) is predicted
    in this process by the version's files (``model_dir``), memoised per input, not stored.
    """

    is_oracle = False

    def __init__(
        self,
        warehouse: str | Path | None,
        model_name: str,
        model_version: str,
        *,
        model_dir: Path | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.model_name = model_name
        self.model_version = model_version
        self.model_dir = model_dir
        self.name = f"{model_name} v{model_version}"
        self._rows: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {}
        self._local: LearnedLengthPredictor | None = None

    def _fetch(self, ids: Sequence[str]) -> None:
        from warehouse.predictions import read_predictions

        wanted = [i for i in dict.fromkeys(ids) if i not in self._rows]
        if not wanted:
            return
        table = read_predictions(self.warehouse, self.model_name, self.model_version, wanted)
        cols = {c: table.column(c).to_pylist() for c in ("request_id", "expected_output_tokens")}
        probs, edges = table.column("bucket_probs").to_pylist(), table.column("bucket_edges").to_pylist()
        for rid, exp, p, e in zip(
            cols["request_id"], cols["expected_output_tokens"], probs, edges, strict=True
        ):
            self._rows[rid] = (float(exp), tuple(p), tuple(e))
        absent = [i for i in wanted if i not in self._rows]
        if absent:
            where = self.warehouse or "the default warehouse"
            raise MissingPredictionsError(
                f"{len(absent)} of {len(wanted)} requests have no stored prediction of {self.name} in "
                f"{where} (e.g. {absent[0]}): run "
                f"`loadwise predict --predictor registered:{self.model_version}`"
            )

    def _local_model(self) -> LearnedLengthPredictor:
        if self._local is None:
            if self.model_dir is None or not (Path(self.model_dir) / "metadata.json").is_file():
                raise MissingPredictionsError(
                    f"{self.name}: requests without a warehouse row need the model's files in "
                    f"{self.model_dir or registered_model_dir(self.model_name, self.model_version)}: "
                    f"run `loadwise predict --predictor registered:{self.model_version}`"
                )
            from training.length.predictor import LearnedLengthPredictor

            self._local = LearnedLengthPredictor.load(Path(self.model_dir), name=self.name)
        return self._local

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        n = len(requests)
        stored = [i for i, r in enumerate(requests) if r.row_id is not None]
        self._fetch([requests[i].row_id for i in stored])  # type: ignore[misc]
        expected = np.zeros(n, dtype=np.float64)
        probs: list[tuple[float, ...] | None] = [None] * n
        edges: list[tuple[float, ...] | None] = [None] * n
        for i in stored:
            exp, p, e = self._rows[requests[i].row_id]  # type: ignore[index]
            expected[i], probs[i], edges[i] = exp, p, e
        others = [i for i in range(n) if requests[i].row_id is None]
        if others:
            local = self._local_model()
            answer = local.predict_lengths([requests[i] for i in others])
            for j, i in enumerate(others):
                expected[i] = answer.expected_tokens[j]
                if answer.bucket_probs is not None and answer.bucket_edges is not None:
                    probs[i], edges[i] = tuple(answer.bucket_probs[j]), answer.bucket_edges
        shared = {e for e in edges}
        if n == 0 or len(shared) != 1 or None in shared:
            return LengthPrediction(expected)
        (edge,) = shared
        assert edge is not None
        return LengthPrediction(expected, np.asarray(probs, dtype=np.float64), edge)

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens
