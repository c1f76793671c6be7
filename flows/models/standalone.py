"""The standalone Prefect flows of the three learned models: ``retrain-length-predictor``,
``refit-impact-estimator`` and ``train-router``.

Who calls this: ``loadwise train-predictor --flow`` / ``fit-estimator --flow`` / ``train-router
--flow`` and deployments, once per run. Each flow probes the registry first (a bad store fails now,
not after training), then only sequences tasks of ``flows.tasks`` (the same tasks the nightly flow
runs); the job's logic is in ``flows.models.predictor`` / ``estimator`` / ``router``. Each run
publishes the model's markdown report (with the gate's decision) as a Prefect artifact and returns
the ``--json`` dict.
"""

from __future__ import annotations

import tempfile
from typing import Any

from prefect import flow

from flows import tasks
from flows.models.gate import IMPACT_ESTIMATOR, LENGTH_PREDICTOR, LLM_ROUTER
from flows.models.predictor import predictor_config
from flows.models.router import check_scope, default_router_dir, rl_candidate, router_config
from flows.registry import CHAMPION, ModelRegistry


@flow(name="retrain-length-predictor", log_prints=True)
def retrain_length_predictor(
    config: dict[str, Any] | None = None, warehouse: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Train, evaluate, register ``length-predictor``; the report is a markdown artifact."""
    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after training
    published = tasks.train_register_predictor(predictor_config(config), warehouse, tracking_uri)
    return tasks.publish_model_report(LENGTH_PREDICTOR, published)


@flow(name="refit-impact-estimator", log_prints=True)
def refit_impact_estimator(
    config: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Fit, evaluate, register ``impact-estimator``; the report is a markdown artifact."""
    from training.impact.fit import EstimatorConfig

    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after fitting
    published = tasks.fit_register_estimator(EstimatorConfig.model_validate(config or {}), tracking_uri)
    return tasks.publish_model_report(IMPACT_ESTIMATOR, published)


@flow(name="train-router", log_prints=True)
def train_router_flow(
    config: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    tracking_uri: str | None = None,
    alias: str = CHAMPION,
) -> dict[str, Any]:
    """Train the RL router, evaluate it against every baseline and the holder of gated ``alias``
    (``champion``, or a setting alias such as ``paper-main``) of the same setting, register
    ``llm-router``, gate for ``alias`` (a config outside the alias's scope: ``ValueError`` first)."""
    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after training
    cfg = router_config(config)
    check_scope(alias, cfg)
    out = default_router_dir(cfg)
    trained = tasks.train_router_policy(cfg, str(out))
    champion = tasks.find_router_champion(cfg, tracking_uri, alias)
    with tempfile.TemporaryDirectory(prefix="loadwise-champion-") as tmp:
        champion_dir = None
        if champion is not None and champion.comparable:
            champion_dir = tasks.fetch_router_policy(champion.version, tmp, tracking_uri)
        report = tasks.evaluate_router(trained, seeds or [0, 1, 2], champion, champion_dir, str(out / "eval"))
    published = tasks.register_router(
        rl_candidate(trained, report=report),
        report,
        tracking_uri,
        champion=champion.version if champion else None,
        refusal=champion.refusal if champion else None,
        alias=alias,
    )
    result = tasks.publish_model_report(LLM_ROUTER, published)
    result["evaluation"] = report.summary()
    return result
