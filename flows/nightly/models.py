"""Step 3 of the nightly flow: ``retrain-impact-estimator`` and ``retrain-length-predictor``.

Who calls this: the flow (``flows.nightly.flow``), once per run that retrains. Each step is the
model's standalone job (``fit-register-impact-estimator`` / ``train-register-length-predictor``
tasks: fit or train, register, the gate of ``flows.models.gate``) cached on its inputs
(``flows.nightly.keys``): the estimator's config (with the run's profile) and source; the
predictor's config, the CASTILLO files it reads and its source. A step that ran publishes the
model's report artifact (``<model>-report``); a cached one returns the registration it made then.
"""

from __future__ import annotations

from flows import tasks
from flows.models.gate import IMPACT_ESTIMATOR, LENGTH_PREDICTOR
from flows.models.publish import Published
from flows.nightly.config import NightlyConfig
from flows.nightly.keys import StepCache, step_key
from flows.nightly.results import StepLog

ESTIMATOR_STEP = "retrain-impact-estimator"
PREDICTOR_STEP = "retrain-length-predictor"


def retrain_estimator(
    cfg: NightlyConfig, profile: str, cache: StepCache, log: StepLog, tracking_uri: str | None
) -> Published:
    """Fit, register and gate the impact estimator for the run's profile (cached on its inputs)."""
    log.start(ESTIMATOR_STEP)
    config = cfg.estimator.fit_config(profile)
    key = step_key("estimator", config=config.model_dump(mode="json"), **cache.inputs("estimator"))
    state = cache.cached(tasks.fit_register_estimator, key)(config, tracking_uri, return_state=True)
    published = state.result()
    log.ran(ESTIMATOR_STEP, cached=state.name == "Cached")
    if state.name != "Cached":
        tasks.publish_model_report(IMPACT_ESTIMATOR, published)
    return published


def retrain_predictor(
    cfg: NightlyConfig, db: str, synthetic: bool, cache: StepCache, log: StepLog, tracking_uri: str | None
) -> Published | None:
    """Train, register and gate the length predictor on the warehouse's CASTILLO prompts (cached on
    its inputs); ``None`` when skipped (disabled, or no prompt texts with output lengths).

    The gate (``flows.models.predictor.predictor_gate``) needs both a lower held-out MAE than the
    champion's and not worse routing: when the MAE is better, the step replays
    ``flows.models.predictor.DEFAULT_ROUTING_CHECK`` (``workload_impact_greedy`` with least-work-left
    queues on ``main``'s held-out prompts, 300 requests x 3 seeds) with the challenger's and with the
    champion's predictions and records both figures on the version before the gate reads them; the
    ``predict-lengths`` step after it then uses whichever version is champion."""
    from flows.models.predictor import has_predictor_data
    from warehouse.ops import data_fingerprint

    log.start(PREDICTOR_STEP)
    if not cfg.train_predictor or synthetic or not has_predictor_data(db):
        why = "disabled" if not cfg.train_predictor else "no prompt texts with output lengths (CASTILLO)"
        log.skip([PREDICTOR_STEP], why)
        return None
    data = data_fingerprint(db, "format = 'castillo'")
    config = cfg.predictor
    key = step_key("predictor", config=config.model_dump(mode="json"), data=data, **cache.inputs("predictor"))
    state = cache.cached(tasks.train_register_predictor, key)(config, db, tracking_uri, return_state=True)
    published = state.result()
    log.ran(PREDICTOR_STEP, cached=state.name == "Cached")
    if state.name != "Cached":
        tasks.publish_model_report(LENGTH_PREDICTOR, published)
    return published
