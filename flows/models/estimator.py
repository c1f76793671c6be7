"""The ``impact-estimator`` job: fit from GPU profiles, evaluate on held-out replays, register, gate.

Who calls this: ``loadwise fit-estimator`` (directly, or with ``--flow`` through the
``refit-impact-estimator`` flow), the nightly ``retrain-impact-estimator`` step (both through the
``fit-register-impact-estimator`` task, ``flows.tasks``), once per run. The job probes the registry
first, fits (``training.impact.fit``), registers a new version (alias ``challenger``) and runs the
metric gate (``flows.models.gate``: held-out MAPE, same GPU profile).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.models.gate import IMPACT_ESTIMATOR
from flows.models.publish import Published, metric_gate, publish
from flows.registry import ModelPackage, ModelRegistry, TrainingData

if TYPE_CHECKING:
    from training.impact.fit import EstimatorConfig, FittedEstimator

Progress = Callable[[str], None]

ESTIMATOR_REQUIREMENTS = ["mlflow-skinny==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""What the estimator's pyfunc needs at serving time (``training/impact/serving.py`` imports no more):
MLflow's client only (``mlflow-skinny``), numpy and pandas."""


def fit_estimator(
    config: EstimatorConfig | Mapping[str, Any] | None, progress: Progress | None = None
) -> FittedEstimator:
    """Fit the impact estimator for a GPU profile (``training.impact.fit``)."""
    from training.impact.fit import EstimatorConfig, fit_impact_estimator

    return fit_impact_estimator(EstimatorConfig.model_validate(config or {}), progress=progress)


def register_estimator(fitted: FittedEstimator, registry: ModelRegistry) -> Published:
    """Register a fitted impact estimator as a new ``impact-estimator`` version; run the gate."""
    from training.impact import serving

    cfg = fitted.config
    with tempfile.TemporaryDirectory(prefix="loadwise-estimator-") as tmp:
        path = Path(tmp) / "estimator.json"
        path.write_text(fitted.to_json())
        example = fitted.input_example()
        report_md = fitted.report.to_markdown()
        pkg = ModelPackage(
            name=IMPACT_ESTIMATOR,
            serving_module=Path(serving.__file__),
            model_class="ImpactEstimatorModel",
            artifacts={"estimator": path},
            input_example=example,
            output_example=serving.predict_iteration_time(fitted.coefficients, example),
            pip_requirements=ESTIMATOR_REQUIREMENTS,
            config=cfg.model_dump(mode="json"),
            metrics=fitted.report.metrics(),
            data_fingerprint=fitted.data_fingerprint,
            reports={"impact_estimator.md": report_md},
            description=f"iteration latency vs prefill/decode mix for {cfg.profile} ({fitted.chosen})",
            training_data=_training_data(fitted),
        )
        return publish(registry, pkg, report_md, metric_gate(registry, IMPACT_ESTIMATOR))


def _training_data(fitted: FittedEstimator) -> TrainingData | None:
    """The engine iterations the estimator was fitted on, as the version's input dataset (``None``:
    a preset, fitted on nothing)."""
    if fitted.training_frame is None:
        return None
    replays = [r.replay_id for r in fitted.report.replays if not r.heldout]
    source = f"engine iterations of replays {replays} on GPU profile {fitted.config.profile}"
    return TrainingData(
        fitted.training_frame, name=f"impact-estimator-train:{fitted.config.profile}", source=source
    )


def fit_and_register_estimator(
    config: EstimatorConfig | Mapping[str, Any] | None,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
) -> Published:
    """The ``loadwise fit-estimator`` job: probe the registry, fit, evaluate on held-out points,
    register, gate."""
    registry = registry or ModelRegistry()
    registry.check()
    fitted = fit_estimator(config, progress)
    if progress:
        progress(f"registering {IMPACT_ESTIMATOR} in {registry.tracking_uri}")
    return register_estimator(fitted, registry)
