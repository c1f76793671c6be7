"""The length predictor a replay uses, and its predictions written to the warehouse.

Who calls this: the CLI (``--predictor`` of ``replay`` / ``compare`` / ``train-router``, and
``loadwise predict``) and the nightly flow (its ``predict-lengths`` step, through the task of
``flows.tasks``), once per run.

- ``resolve_predictor``: the ``--predictor`` text (``task-mean``, ``oracle``, ``registered``,
  ``registered:VERSION``, a predictor folder) -> a ``training.length.stored.PredictorChoice``, the
  registered version's files fetched to ``registered_model_dir`` (once per version). No text: the
  registered ``length-predictor`` champion when there is one, else task mean.
- ``predict_lengths_job``: ``loadwise predict`` / the nightly step: store the champion's (or the
  chosen version's) predictions of every request the replays use (the warehouse rows matching
  ``where``, plus the rows of named workloads such as ``main``) in ``marts.length_predictions``:
  batched, cached by version and input hash.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.models.gate import LENGTH_PREDICTOR
from flows.registry import CHAMPION, ModelRegistry, NoRegistryError

if TYPE_CHECKING:
    from training.length.stored import PredictorChoice

Progress = Callable[[str], None]

PREDICTOR_FORMS = "task-mean, oracle, registered, registered:VERSION or a predictor folder"


def parse_predictor(text: str) -> tuple[str, str | None]:
    """``(kind, version or path)`` of a ``--predictor`` text, or ``ValueError`` (a usage error).

    ``registered`` alone is ``("registered", None)``: the champion."""
    value = text.strip()
    if value in ("task-mean", "task_mean"):
        return "task-mean", None
    if value == "oracle":
        return "oracle", None
    if value == "registered":
        return "registered", None
    if value.startswith("registered:"):
        version = value.partition(":")[2].strip()
        if not version.isdigit():
            raise ValueError(f"--predictor registered:VERSION needs a version number, got {version!r}")
        return "registered", version
    folder = Path(value).expanduser()
    if folder.is_dir() and (folder / "metadata.json").is_file():
        return "path", str(folder.resolve())
    raise ValueError(f"--predictor must be {PREDICTOR_FORMS}; {value!r} is none of these")


def fetch_predictor(registry: ModelRegistry, version: str) -> Path:
    """The predictor folder of ``length-predictor`` ``version``, downloaded once to
    ``registered_model_dir`` (a later call finds it there: versions never change)."""
    from training.length.stored import registered_model_dir

    target = registered_model_dir(LENGTH_PREDICTOR, version)
    if (target / "metadata.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
        folder = registry.download_artifact(LENGTH_PREDICTOR, version, "predictor", Path(tmp))
        staged = Path(tmp) / "ready"
        shutil.move(str(folder), staged)
        try:
            staged.rename(target)  # atomic: a concurrent fetch of the same version wins alike
        except OSError:
            if not (target / "metadata.json").is_file():
                raise
    return target


def resolve_predictor(
    text: str | None,
    *,
    warehouse: str | Path | None = None,
    registry: ModelRegistry | None = None,
    allow_oracle: bool = True,
) -> PredictorChoice:
    """The ``PredictorChoice`` of a ``--predictor`` text (``None``: the default, the registered
    champion when one exists, else task mean). A registered version's files are fetched
    (``fetch_predictor``); its predictions live in ``warehouse`` (``None``: the default warehouse).

    Raises ``ValueError`` for a text of no known form, ``oracle`` where ``allow_oracle`` is false, or
    ``registered`` without a champion; ``RegistryError`` for an unknown version or a bad store."""
    from training.length.stored import PredictorChoice

    kind, arg = parse_predictor(text) if text is not None else ("default", None)
    if kind == "oracle" and not allow_oracle:
        raise ValueError("--predictor oracle reads true output lengths: not allowed here")
    if kind in ("task-mean", "oracle"):
        return PredictorChoice(kind=kind)  # type: ignore[arg-type]
    if kind == "path":
        return PredictorChoice(kind="path", path=arg)
    registry = registry or ModelRegistry(create=False)
    if arg is None:
        try:
            champion = registry.find(LENGTH_PREDICTOR, CHAMPION)
        except NoRegistryError:
            champion = None
        if champion is None:
            if kind == "default":
                return PredictorChoice()
            raise ValueError(
                f"no {LENGTH_PREDICTOR} champion in {registry.tracking_uri}: train one "
                "(loadwise train-predictor) or pass --predictor task-mean"
            )
        arg = champion.version
    else:
        registry.get(LENGTH_PREDICTOR, arg)  # an unknown version: RegistryError, one line
    fetch_predictor(registry, arg)
    where = None if warehouse is None else str(Path(warehouse).expanduser().resolve())
    return PredictorChoice(kind="registered", model_name=LENGTH_PREDICTOR, version=arg, warehouse=where)


def predict_lengths_job(
    choice: PredictorChoice,
    *,
    where: str | None = "format = 'azure'",
    workloads: Sequence[str] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Store ``choice``'s predictions of every row the replays use in ``choice.warehouse``: the
    rows of that warehouse matching ``where`` (``None``: none) and the rows of each named workload
    (e.g. ``main``: its CASTILLO and AlpacaEval rows, read from the data folder). Returns, per part,
    what was stored (``StoreStats.to_dict``) and the total wall seconds."""
    from training.workloads.catalog import RowSource, get_workload
    from training.workloads.predictors import ensure_predictions
    from warehouse.store import resolve_path

    if choice.kind != "registered":
        raise ValueError(f"loadwise predict stores a registered predictor's predictions, not {choice.label}")
    t0 = time.perf_counter()
    parts: dict[str, Any] = {}
    sources: list[tuple[str, tuple[RowSource, ...]]] = []
    if where is not None:
        sources.append((f"warehouse where {where}", (RowSource(resolve_path(choice.warehouse), where),)))
    for name in workloads:
        try:
            wl = get_workload(name)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        sources.append((f"workload {name}", wl.row_sources))
    for label, rows in sources:
        stats = ensure_predictions(choice, rows, progress)
        parts[label] = None if stats is None else stats.to_dict()
        if progress and stats is not None:
            progress(
                f"{label}: {stats.rows} rows, {stats.cached} already stored, {stats.written} written "
                f"({stats.distinct_inputs} distinct inputs, {stats.total_s:.1f} s)"
            )
    return {
        "predictor": choice.label,
        "model_name": choice.model_name,
        "model_version": choice.version,
        "warehouse": str(resolve_path(choice.warehouse)),
        "parts": parts,
        "wall_s": time.perf_counter() - t0,
    }
