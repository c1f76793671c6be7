"""Train / fit the learned models and register them: the jobs behind the CLI and their Prefect flows.

Who calls this: ``loadwise train-predictor`` / ``loadwise fit-estimator`` (directly, or with
``--flow`` through the Prefect flows ``retrain-length-predictor`` / ``refit-impact-estimator``), and
the nightly pipeline. Each job is: one library call that trains and evaluates (``training.*``), then
one ``ModelRegistry.publish`` (new version, alias ``challenger``), then the promotion gate.

The gates here are deliberately simple (the router's statistical gate is the nightly pipeline's):

- ``length-predictor``: ``champion`` moves when the challenger's expected-length MAE in tokens on
  held-out prompts is not worse than the champion's, for the same serving model (a bucket-free
  metric, so predictors with different bucket schemes compare fairly). A different serving model
  never replaces the champion automatically; promote it by hand.
- ``impact-estimator``: ``champion`` moves when held-out MAPE of iteration time is not worse, for
  the same GPU profile (the paper's V100 preset has no held-out points: it becomes champion only
  when there is none).
- ``llm-router``: ``champion`` moves when the held-out mean E2E is not worse than the champion's, for
  the same GPU profile (the nightly pipeline's gate adds confidence intervals and the baselines).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.ingest import retry_on_io
from flows.registry import ModelPackage, ModelRegistry, PromotionDecision, RegisteredVersion

LENGTH_PREDICTOR = "length-predictor"
IMPACT_ESTIMATOR = "impact-estimator"
PREDICTOR_GATE_METRIC = "mae_tokens"
ESTIMATOR_GATE_METRIC = "chosen.holdout_mape_pct"
ESTIMATOR_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""What the estimator's pyfunc needs at serving time (``training/impact/serving.py`` imports no more)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Published:
    """What a train-and-register job returns (the CLI's ``--json`` payload)."""

    version: RegisteredVersion
    decision: PromotionDecision
    metrics: dict[str, float]
    report_markdown: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.version.to_dict(),
            "promotion": {
                "promoted": self.decision.promoted,
                "reason": self.decision.reason,
                "champion_version": self.decision.champion_version,
            },
            "metrics": self.metrics,
        }


def _publish(
    registry: ModelRegistry,
    pkg: ModelPackage,
    gate_metric: str,
    higher_is_better: bool,
    scope: str | tuple[str, ...],
    report_md: str,
    gate: bool = True,
) -> Published:
    """Register ``pkg`` (alias ``challenger``) and, with ``gate``, run the gate within ``scope`` (a
    config key); without it the caller decides (the nightly flow's statistical gate)."""
    version = registry.publish(pkg)
    if not gate:
        champion = registry.find(pkg.name, "champion")
        decision = PromotionDecision(
            False,
            "registered as challenger; the caller's gate decides",
            champion.version if champion else None,
        )
        return Published(registry.get(pkg.name, version.version), decision, dict(pkg.metrics), report_md)
    decision = registry.promote_if_better(
        pkg.name, version.version, gate_metric, higher_is_better, scope=scope
    )
    registry.record_gate(pkg.name, version.version, decision.reason)
    return Published(registry.get(pkg.name, version.version), decision, dict(pkg.metrics), report_md)


# -- length predictor ---------------------------------------------------------------------------
def has_predictor_data(warehouse: str | Path, serving_model: str | None = None) -> bool:
    """Whether the warehouse holds prompt texts with the serving model's output lengths."""
    from training.length.config import PredictorConfig
    from training.length.data import load_rows

    cfg = PredictorConfig(serving_model=serving_model) if serving_model else PredictorConfig()
    try:
        return not load_rows(Path(warehouse), cfg).empty
    except ValueError:
        return False


def train_predictor(
    config: dict[str, Any], warehouse: Path | None = None, progress: Progress | None = None
) -> Any:
    """Train and evaluate the length predictor on the warehouse (``training.length``)."""
    from training.length.config import PredictorConfig
    from training.length.train import train_length_predictor
    from warehouse.paths import default_warehouse_path

    return train_length_predictor(
        warehouse or default_warehouse_path(), PredictorConfig(**config), progress=progress
    )


def register_predictor(trained: Any, registry: ModelRegistry) -> Published:
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
        return _publish(registry, pkg, PREDICTOR_GATE_METRIC, False, "serving_model", report_md)


def train_and_register_predictor(
    config: dict[str, Any],
    warehouse: Path | None = None,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
) -> Published:
    """The ``loadwise train-predictor`` job: train, evaluate, register, gate."""
    trained = train_predictor(config, warehouse, progress)
    registry = registry or ModelRegistry()
    if progress:
        progress(f"registering {LENGTH_PREDICTOR} in {registry.tracking_uri}")
    return register_predictor(trained, registry)


# -- impact estimator ---------------------------------------------------------------------------
def fit_estimator(config: dict[str, Any], progress: Progress | None = None) -> Any:
    """Fit the impact estimator for a GPU profile (``training.impact.fit``)."""
    from training.impact.fit import EstimatorConfig, fit_impact_estimator

    return fit_impact_estimator(EstimatorConfig(**config), progress=progress)


def register_estimator(fitted: Any, registry: ModelRegistry) -> Published:
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
        )
        return _publish(registry, pkg, ESTIMATOR_GATE_METRIC, False, "profile", report_md)


def fit_and_register_estimator(
    config: dict[str, Any], registry: ModelRegistry | None = None, progress: Progress | None = None
) -> Published:
    """The ``loadwise fit-estimator`` job: fit, evaluate on held-out points, register, gate."""
    fitted = fit_estimator(config, progress)
    registry = registry or ModelRegistry()
    if progress:
        progress(f"registering {IMPACT_ESTIMATOR} in {registry.tracking_uri}")
    return register_estimator(fitted, registry)


# -- RL router -----------------------------------------------------------------------------------
LLM_ROUTER = "llm-router"
ROUTER_GATE_METRIC = "mean_e2e_s"
ROUTER_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""The router's pyfunc runs the exported numpy policy: no torch or stable-baselines3 at serving."""


def router_metrics(report: Any, learned: str = "rl", exclude: tuple[str, ...] = ()) -> dict[str, float]:
    """Headline metrics of the learned router from an evaluation report (seconds, %); routers in
    ``exclude`` (e.g. the champion) are not baselines."""
    summary = report.summary()
    ours = summary[learned]
    baselines = {n: s for n, s in summary.items() if n != learned and n not in exclude and not s["oracle"]}
    best_name = min(baselines, key=lambda n: baselines[n]["e2e_mean"])
    best = baselines[best_name]
    metrics = {
        "mean_e2e_s": ours["e2e_mean"],
        "p50_e2e_s": ours["e2e_p50"],
        "p99_e2e_s": ours["e2e_p99"],
        "mean_ttft_s": ours["ttft_mean"],
        "best_baseline_mean_e2e_s": best["e2e_mean"],
        "vs_best_baseline_pct": 100.0 * (best["e2e_mean"] - ours["e2e_mean"]) / best["e2e_mean"],
    }
    if ours["vs_round_robin_pct"] is not None:
        metrics["improvement_vs_round_robin_pct"] = ours["vs_round_robin_pct"]
    return metrics


def train_router_job(
    config: dict[str, Any],
    out_dir: Path | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
) -> tuple[Any, Any]:
    """Train the RL router on the workload's training pool and evaluate it against every baseline."""
    from eval.learned import train_and_evaluate
    from training.rl.config import RouterTrainConfig
    from warehouse.paths import loadwise_home

    cfg = RouterTrainConfig(**config)
    out = out_dir or loadwise_home() / "rl" / f"{cfg.variant}-{cfg.algo}-seed{cfg.seed}"
    return train_and_evaluate(cfg, out, seeds=seeds, progress=progress)


ROUTER_SETTING_KEYS = ("workload", "where", "profile", "num_instances", "chunked_prefill_tokens")
"""``RouterTrainConfig`` keys of the setting a policy was trained for (trace, GPU profile, instance
count, chunked prefill): a policy of another setting is not a comparable champion (here and in the
nightly flow, which replays a comparable champion on its own windows)."""

ROUTER_SCOPE = (*ROUTER_SETTING_KEYS, "rate_rps")
"""Keys that make two routers' *recorded* held-out metrics comparable (the simple gate): the setting
and the rate they were replayed at."""


def register_router(
    trained: Any,
    report: Any,
    registry: ModelRegistry,
    *,
    learned: str = "rl",
    exclude: tuple[str, ...] = (),
    gate: bool = True,
    data_fingerprint: str | None = None,
) -> Published:
    """Register a trained router policy as a new ``llm-router`` version; with ``gate``, run the
    simple gate (``learned``: the policy's name in ``report``; ``exclude``: not baselines)."""
    from eval.report import to_markdown
    from training.rl import serving

    example = trained.input_example()
    policy = serving.load_policy(trained.policy_dir)
    report_md = to_markdown(report)
    cfg = trained.config
    pkg = ModelPackage(
        name=LLM_ROUTER,
        serving_module=Path(serving.__file__),
        model_class="RouterPolicyModel",
        artifacts={"policy_dir": Path(trained.policy_dir)},
        input_example=example,
        output_example=serving.predict_frame(policy, example),
        pip_requirements=ROUTER_REQUIREMENTS,
        config=cfg.model_dump(mode="json"),
        metrics={
            **router_metrics(report, learned, exclude),
            **{f"train.{k}": float(v) for k, v in trained.train_stats.items() if isinstance(v, int | float)},
        },
        data_fingerprint=data_fingerprint or f"workload={cfg.workload};profile={cfg.profile};seed={cfg.seed}",
        reports={"evaluation.md": report_md, "evaluation.json": report.model_dump_json(indent=1)},
        description=f"{cfg.variant} RL router ({cfg.algo}) for {cfg.num_instances} x {cfg.profile}",
    )
    return _publish(registry, pkg, ROUTER_GATE_METRIC, False, ROUTER_SCOPE, report_md, gate)


def train_and_register_router(
    config: dict[str, Any],
    registry: ModelRegistry | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
) -> tuple[Published, Any]:
    """The ``loadwise train-router`` job: train, evaluate against every baseline, register, gate."""
    trained, report = train_router_job(config, seeds=seeds, progress=progress)
    return register_router(trained, report, registry or ModelRegistry()), report


# -- Prefect flows (thin: one library call per task; retries only where I/O can fail) -------------
@task(name="train-length-predictor", cache_policy=NO_CACHE)
def train_predictor_task(config: dict[str, Any], warehouse: str | None) -> Any:
    return train_predictor(config, Path(warehouse) if warehouse else None, progress=print)


@task(name="fit-impact-estimator", cache_policy=NO_CACHE)
def fit_estimator_task(config: dict[str, Any]) -> Any:
    return fit_estimator(config, progress=print)


@task(
    name="register-model",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def register_task(kind: str, trained: Any, tracking_uri: str | None) -> Published:
    registry = ModelRegistry(tracking_uri)
    return (
        register_predictor(trained, registry)
        if kind == LENGTH_PREDICTOR
        else register_estimator(trained, registry)
    )


def model_report_artifact(kind: str, published: Published) -> dict[str, Any]:
    """The model's markdown report (with the gate's decision) as a Prefect artifact; the --json dict."""
    v = published.version
    header = f"# {kind} v{v.version}\n\n{published.decision.reason}\n\n"
    create_markdown_artifact(header + published.report_markdown, key=f"{kind}-report")
    return published.to_dict()


@task(name="publish-model-report", cache_policy=NO_CACHE)
def report_task(kind: str, published: Published) -> dict[str, Any]:
    return model_report_artifact(kind, published)


@flow(name="retrain-length-predictor", log_prints=True)
def retrain_length_predictor(
    config: dict[str, Any] | None = None, warehouse: str | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Train, evaluate, register ``length-predictor``; the report is a markdown artifact."""
    trained = train_predictor_task(config or {}, warehouse)
    return report_task(LENGTH_PREDICTOR, register_task(LENGTH_PREDICTOR, trained, tracking_uri))


@task(name="train-evaluate-router", cache_policy=NO_CACHE)
def train_router_task(config: dict[str, Any], seeds: list[int]) -> tuple[Any, Any]:
    return train_router_job(config, seeds=tuple(seeds), progress=False)


@task(
    name="register-router",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def register_router_task(trained: Any, report: Any, tracking_uri: str | None) -> Published:
    return register_router(trained, report, ModelRegistry(tracking_uri))


@flow(name="train-router", log_prints=True)
def train_router_flow(
    config: dict[str, Any] | None = None, seeds: list[int] | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Train the RL router, evaluate it against every baseline, register ``llm-router``."""
    trained, report = train_router_task(config or {}, seeds or [0, 1, 2])
    published = register_router_task(trained, report, tracking_uri)
    out = report_task(LLM_ROUTER, published)
    out["evaluation"] = report.summary()
    return out


@flow(name="refit-impact-estimator", log_prints=True)
def refit_impact_estimator(
    config: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Fit, evaluate, register ``impact-estimator``; the report is a markdown artifact."""
    fitted = fit_estimator_task(config or {})
    return report_task(IMPACT_ESTIMATOR, register_task(IMPACT_ESTIMATOR, fitted, tracking_uri))
