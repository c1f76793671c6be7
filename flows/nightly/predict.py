"""Step 3b of the nightly flow, between the predictor and the router steps: ``predict-lengths``.

Who calls this: the flow (``flows.nightly.flow``), once per run that retrains. It resolves the length
predictor the router steps use (``NightlyConfig.routing_predictor``: by default the registered
``length-predictor`` champion, which the step before may just have promoted; task mean when there is
none) and, for a registered one, writes its predictions of every request the router's replays use
(the warehouse rows matching ``where``: training episodes, validation and held-out windows alike) to
``marts.length_predictions`` through the ``predict-lengths`` task (``flows.tasks``; batched, cached
by model version and input hash in the table itself, so a second run with the same champion and
rows writes nothing). The router configs then carry that predictor (``RouterTrainConfig.predictor``),
so training, evaluation, the step caches and the registered router's config all name it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows import tasks
from flows.nightly.config import NightlyConfig
from flows.nightly.results import PredictionsResult, StepLog, StepOutcome

if TYPE_CHECKING:
    from training.rl.config import RouterTrainConfig

PREDICT_STEP = "predict-lengths"


def predict_step(
    cfg: NightlyConfig,
    db: str,
    configs: dict[int, RouterTrainConfig],
    log: StepLog,
    tracking_uri: str | None,
) -> tuple[PredictionsResult, dict[int, RouterTrainConfig]]:
    """Resolve the routing predictor, store its predictions of the ``where`` rows, and return the
    router configs with it (``configs`` by seed, updated)."""
    from flows.models.predictions import resolve_predictor
    from flows.registry import ModelRegistry

    log.start(PREDICT_STEP)
    # 'registered' here means the default: the champion when there is one, else task mean (a first
    # run, or a run whose predictor step was refused, still evaluates and registers a router)
    text = None if cfg.routing_predictor == "registered" else cfg.routing_predictor
    choice = resolve_predictor(text, warehouse=db, registry=ModelRegistry(tracking_uri), allow_oracle=False)
    updated = {
        seed: type(c).model_validate(
            {**c.model_dump(mode="json"), "predictor": choice.model_dump(mode="json")}
        )
        for seed, c in configs.items()
    }
    if choice.kind != "registered":
        why = f"the routers use {choice.label} (no registered length-predictor champion)"
        log.record(StepOutcome(PREDICT_STEP, f"skipped: {why}"))
        return PredictionsResult(choice.label, None), updated
    stats = tasks.predict_lengths(choice, cfg.where)
    log.ran(PREDICT_STEP, cached=not any((p or {}).get("written") for p in stats["parts"].values()))
    return PredictionsResult(choice.label, stats), updated
