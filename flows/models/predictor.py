"""The ``length-predictor`` job: train on the warehouse's prompt texts, evaluate, register, gate.

Who calls this: ``loadwise train-predictor`` (directly, or with ``--flow`` through the
``retrain-length-predictor`` flow), the nightly ``retrain-length-predictor`` step (both through the
``train-register-length-predictor`` task, ``flows.tasks``), once per run. The job probes the registry
first (a bad store fails in seconds, before any training), trains and evaluates
(``training.length``), registers a new version (alias ``challenger``) and runs the metric gate
(``flows.models.gate``: held-out MAE, same serving model).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.models.gate import LENGTH_PREDICTOR
from flows.models.publish import Published, metric_gate, publish
from flows.registry import ModelPackage, ModelRegistry

if TYPE_CHECKING:
    from training.length.config import PredictorConfig
    from training.length.train import TrainedLengthPredictor

Progress = Callable[[str], None]


def has_predictor_data(warehouse: str | Path, serving_model: str | None = None) -> bool:
    """Whether the warehouse holds prompt texts with the serving model's output lengths."""
    from training.length.config import PredictorConfig
    from training.length.data import load_rows

    cfg = PredictorConfig(serving_model=serving_model) if serving_model else PredictorConfig()
    try:
        return not load_rows(Path(warehouse), cfg).empty
    except ValueError:
        return False


def predictor_config(config: PredictorConfig | Mapping[str, Any] | None) -> PredictorConfig:
    """``config`` as a validated ``PredictorConfig`` (a mapping: its fields; ``None``: the defaults)."""
    from training.length.config import PredictorConfig

    return PredictorConfig.model_validate(config or {})


def train_predictor(
    config: PredictorConfig | Mapping[str, Any] | None,
    warehouse: Path | None = None,
    progress: Progress | None = None,
) -> TrainedLengthPredictor:
    """Train and evaluate the length predictor on the warehouse (``training.length``)."""
    from training.length.train import train_length_predictor
    from warehouse.settings import default_warehouse_path

    return train_length_predictor(
        warehouse or default_warehouse_path(), predictor_config(config), progress=progress
    )


def register_predictor(trained: TrainedLengthPredictor, registry: ModelRegistry) -> Published:
    """Register a trained length predictor as a new ``length-predictor`` version; run the gate."""
    from training.length import serving

    cfg = trained.config
    with tempfile.TemporaryDirectory(prefix="loadwise-predictor-") as tmp:
        folder = Path(tmp) / "predictor"
        trained.save(folder)
        example = trained.input_example()
        report_md = trained.report.to_markdown()
        pkg = ModelPackage(
            name=LENGTH_PREDICTOR,
            serving_module=Path(serving.__file__),
            model_class="LengthPredictorModel",
            artifacts={"predictor": folder},
            input_example=example,
            output_example=trained.predict_frame(example),
            pip_requirements=trained.pip_requirements(),
            config=cfg.model_dump(mode="json"),
            metrics=trained.report.metrics(),
            data_fingerprint=trained.data_fingerprint,
            reports={"length_predictor.md": report_md},
            description=f"output-length predictor for {cfg.serving_model} ({cfg.buckets} buckets)",
        )
        return publish(registry, pkg, report_md, metric_gate(registry, LENGTH_PREDICTOR))


def train_and_register_predictor(
    config: PredictorConfig | Mapping[str, Any] | None,
    warehouse: Path | None = None,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
) -> Published:
    """The ``loadwise train-predictor`` job: probe the registry, train, evaluate, register, gate."""
    registry = registry or ModelRegistry()
    registry.check()
    trained = train_predictor(config, warehouse, progress)
    if progress:
        progress(f"registering {LENGTH_PREDICTOR} in {registry.tracking_uri}")
    return register_predictor(trained, registry)
