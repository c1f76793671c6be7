"""A workload's length predictor: the ``PredictorChoice`` of a replay or an RL training made into the
simulator's ``LengthPredictor`` for that workload, with the stored predictions it needs in place.

Who calls this: the evaluation builder (``eval.spec.run_spec``), the RL episodes
(``training.workloads.episodes.episode_sampler``) and ``loadwise predict`` / the nightly
``predict-lengths`` step (``ensure_predictions``), once per run each.

- ``task-mean``: ``TaskMeanPredictor`` fitted on the workload's training pool (``Workload.train``).
- ``oracle``: ``OraclePredictor`` (true lengths; reports label it ORACLE).
- ``path``: the predictor folder in this process (``LearnedLengthPredictor``, memoised per input),
  fed each request's warehouse row's task label, as a stored prediction is (``WarehouseInputs``).
- ``registered``: ``StoredPredictor`` over ``marts.length_predictions`` of ``choice.warehouse``,
  after ``ensure_predictions`` has predicted (in batches) and written the rows of the workload's
  ``row_sources`` that the table lacks for that version. So the first replay of a workload with a
  new version pays the model once per distinct prompt; later ones read the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from training.length.baselines import OraclePredictor, TaskMeanPredictor
from training.length.stored import (
    INPUT_COLUMNS,
    PredictorChoice,
    StoredPredictor,
    StoreStats,
    registered_model_dir,
    store_predictions,
)
from training.simulator.interface import LengthPrediction, LengthPredictor, predict_lengths
from training.simulator.request import Request
from training.workloads.catalog import RowSource, Workload

Progress = Callable[[str], None]


def prediction_inputs(sources: Sequence[RowSource]) -> pd.DataFrame:
    """The model inputs (``request_id, prompt_text, prompt_tokens, task``) of every replayable row of
    ``sources`` (read-only), one row per request id."""
    from training.workloads.sources import replayable_rows

    frames = []
    for src in sources:
        try:
            table = replayable_rows(
                src.warehouse,
                ", ".join(INPUT_COLUMNS),
                where=src.where,
                params=src.params,
                order_by="request_id",
            )
        except ValueError:  # no replayable row matches: nothing to predict there
            continue
        frames.append(table.to_pandas())
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in INPUT_COLUMNS})
    return pd.concat(frames, ignore_index=True).drop_duplicates("request_id").reset_index(drop=True)


def model_folder(choice: PredictorChoice) -> Path:
    """The predictor folder of a ``registered`` or ``path`` choice."""
    if choice.kind == "path":
        assert choice.path is not None
        return Path(choice.path)
    assert choice.version is not None
    return registered_model_dir(choice.model_name, choice.version)


def ensure_predictions(
    choice: PredictorChoice, sources: Sequence[RowSource], progress: Progress | None = None
) -> StoreStats | None:
    """Predict and store, for ``choice``'s model version, the rows of ``sources`` that
    ``marts.length_predictions`` of ``choice.warehouse`` lacks (``store_predictions``: batched,
    cached by version and input hash). ``None`` for choices that store nothing (task-mean, oracle,
    path) or no sources. Raises ``ValueError`` naming the folder when rows are missing and the
    version's files are not in ``registered_model_dir``."""
    if choice.kind != "registered" or not sources:
        return None
    from training.length.serving import LengthPredictorCore
    from warehouse.predictions import input_hash, stored_hashes

    assert choice.version is not None
    rows = prediction_inputs(sources)
    have = stored_hashes(choice.warehouse, choice.model_name, choice.version)
    fresh = all(
        have.get(rid) == input_hash(t if isinstance(t, str) else None, int(p), None if k is None else str(k))
        for rid, t, p, k in zip(
            rows["request_id"], rows["prompt_text"], rows["prompt_tokens"], rows["task"], strict=True
        )
    )
    if fresh:
        return StoreStats(choice.model_name, choice.version, len(rows), len(rows), 0, 0, 0.0, 0.0)
    folder = model_folder(choice)
    if not (folder / "metadata.json").is_file():
        raise ValueError(
            f"{choice.label}: {len(rows)} rows to predict but the model's files are not in {folder}; "
            f"run `loadwise predict --predictor registered:{choice.version}`"
        )
    if progress:
        progress(f"predicting output lengths of {len(rows)} rows with {choice.label}")
    return store_predictions(
        choice.warehouse, LengthPredictorCore.load(folder), choice.model_name, choice.version, rows
    )


def predictor_for(
    choice: PredictorChoice, workload: Workload, progress: Progress | None = None
) -> LengthPredictor:
    """The ``LengthPredictor`` of ``choice`` for ``workload`` (stored predictions filled first)."""
    if choice.kind == "task-mean":
        return TaskMeanPredictor.fit(list(workload.train))
    if choice.kind == "oracle":
        return OraclePredictor()
    if choice.kind == "path":
        from training.length.predictor import LearnedLengthPredictor

        folder = model_folder(choice)
        if not (folder / "metadata.json").is_file():
            raise ValueError(f"{folder} is not a length predictor folder (no metadata.json)")
        learned = LearnedLengthPredictor.load(folder, name=choice.label)
        if not workload.row_sources:
            return learned
        inputs = prediction_inputs(workload.row_sources)
        return WarehouseInputs(learned, dict(zip(inputs["request_id"], inputs["task"], strict=True)))
    ensure_predictions(choice, workload.row_sources, progress)
    assert choice.version is not None
    return StoredPredictor(
        choice.warehouse, choice.model_name, choice.version, model_dir=model_folder(choice)
    )


class WarehouseInputs:
    """A predictor run in process (``--predictor PATH``) fed what a stored prediction is made from:
    each request's warehouse row's task label (``prompt_text`` and ``prompt_tokens`` are the row's
    already), not the workload's label for its class (``main`` labels CASTILLO's ``Apps`` rows
    ``code_apps``: a model trained on the warehouse's labels would read an unknown task). Requests
    without a warehouse row keep their own label.

    Who calls this: ``predictor_for``, once per replay setting; then the simulator once per batch of
    arrivals (the wrapped predictor memoises per input)."""

    def __init__(self, inner: LengthPredictor, tasks: Mapping[str, str | None]) -> None:
        self.inner = inner
        self.tasks = tasks
        self.name = getattr(inner, "name", "learned")
        self.is_oracle = False

    def _as_stored(self, requests: Sequence[Request]) -> list[Request]:
        out = []
        for r in requests:
            task = self.tasks.get(r.row_id) if r.row_id is not None else None
            out.append(r if task is None or task == r.task else replace(r, task=str(task)))
        return out

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        return predict_lengths(self.inner, self._as_stored(requests))

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.inner.predict_output_tokens(self._as_stored(requests))
