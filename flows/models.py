"""Train / fit the learned models and register them: the jobs behind the CLI and their Prefect flows.

Who calls this: ``loadwise train-predictor`` / ``loadwise fit-estimator`` / ``loadwise train-router``
(directly, or with ``--flow`` through the Prefect flows ``retrain-length-predictor`` /
``refit-impact-estimator`` / ``train-router``), ``loadwise promote``, and the nightly pipeline. Each
job is: probe the registry (``ModelRegistry.check``: a bad store fails in seconds, before any
training), one library call that trains and evaluates (``training.*``), one ``ModelRegistry.publish``
(new version, alias ``challenger``; an identical model is not registered again), then the gate.

**One place decides** whether a version may become ``champion``: ``gate_verdict``. Every path that
moves ``champion`` (a trainer's gate, the nightly ``promote-router`` step, ``loadwise promote`` by
hand) asks it, and moves with a compare-and-set against the champion the verdict was about:

- ``length-predictor``: the challenger's expected-length MAE in tokens on held-out prompts must be
  strictly lower than the champion's, for the same serving model (a bucket-free metric, so
  predictors with different bucket schemes compare fairly). A different serving model never replaces
  the champion automatically.
- ``impact-estimator``: held-out MAPE of iteration time strictly lower, for the same GPU profile (the
  paper's V100 preset has no held-out points: it becomes champion only when there is none).
- ``llm-router``: the statistical gate (``eval.gate.promotion_gate``: paired per-seed interval and p99
  against the champion, replayed on the same held-out windows, and the best baseline) decides when
  the router is evaluated (``gate_router``); its verdict and the champion it compared with are
  recorded on the version, and ``gate_verdict`` reads that evidence (it holds only while that
  champion still serves).

A tie never promotes: a challenger must be better, not equal.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.ingest import retry_on_io
from flows.registry import (
    CHAMPION,
    GATE_AGAINST_TAG,
    GATE_PASSED_TAG,
    GATE_TAG,
    ChampionMovedError,
    ModelPackage,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    metric_verdict,
)

LENGTH_PREDICTOR = "length-predictor"
IMPACT_ESTIMATOR = "impact-estimator"
LLM_ROUTER = "llm-router"
PREDICTOR_GATE_METRIC = "mae_tokens"
ESTIMATOR_GATE_METRIC = "chosen.holdout_mape_pct"
ESTIMATOR_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""What the estimator's pyfunc needs at serving time (``training/impact/serving.py`` imports no more)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MetricGate:
    """A model whose gate is one held-out metric, comparable only within ``scope`` (config keys)."""

    metric: str
    higher_is_better: bool
    scope: tuple[str, ...]


METRIC_GATES = {
    LENGTH_PREDICTOR: MetricGate(PREDICTOR_GATE_METRIC, False, ("serving_model",)),
    IMPACT_ESTIMATOR: MetricGate(ESTIMATOR_GATE_METRIC, False, ("profile",)),
}


@dataclass(frozen=True)
class Verdict:
    """``gate_verdict``'s answer: may ``version`` replace ``champion`` (the version it is about)?"""

    passed: bool
    reason: str
    champion: str | None


def gate_verdict(registry: ModelRegistry, name: str, version: str) -> Verdict:
    """Whether ``version`` of ``name`` may replace the current champion, and why (reads only).

    Who calls this: every path that moves ``champion`` (``promote_through_gate``, ``gate_router``
    via its recorded evidence, ``promote_by_hand``), under ``ModelRegistry.champion_lock`` so that
    the champion it judged is the one replaced. Metric models compare their metric now; the router's
    statistical gate needs replays, so its verdict is the evidence recorded on the version
    (``loadwise.gate.passed`` and the champion it compared with), valid only while that champion
    still serves. A model with no gate, or a router version without evidence, is refused.
    """
    cand = registry.get(name, version)
    champ = registry.find(name, CHAMPION)
    current = champ.version if champ else None
    if current == version:
        return Verdict(False, f"{name} v{version} already is the champion", current)
    gate = METRIC_GATES.get(name)
    if gate is not None:
        passed, reason = metric_verdict(cand, champ, gate.metric, gate.higher_is_better, scope=gate.scope)
        return Verdict(passed, reason, current)
    if name != LLM_ROUTER:
        return Verdict(False, f"no gate is defined for model {name!r}", current)
    verdict, against = cand.tags.get(GATE_PASSED_TAG), cand.tags.get(GATE_AGAINST_TAG)
    recorded = cand.tags.get(GATE_TAG)
    if verdict is None:
        what = f" (its recorded decision: {recorded})" if recorded else ""
        return Verdict(
            False,
            f"no gate evidence for {name} v{version}: no evaluation against the champion and the best "
            f"baseline is recorded on it{what}",
            current,
        )
    if verdict != "true":
        return Verdict(False, f"the gate refused v{version}: {recorded}", current)
    compared = None if against in (None, "none") else against
    if compared != current:
        return Verdict(
            False,
            f"the gate passed v{version} against champion {_v(compared)}, but the champion is now "
            f"{_v(current)}: that evidence no longer applies (evaluate again)",
            current,
        )
    return Verdict(True, f"the gate passed v{version} against champion {_v(compared)}: {recorded}", current)


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "none"


def promote_through_gate(registry: ModelRegistry, name: str, version: str) -> PromotionDecision:
    """A metric model's gate: ``gate_verdict`` and, when it passes, the move, under one lock; the
    decision is recorded on the version (``loadwise.gate*`` tags)."""
    with registry.champion_lock():
        verdict = gate_verdict(registry, name, version)
        if verdict.passed:
            registry.promote(name, version, expected=verdict.champion)
        registry.record_gate(name, version, verdict.reason, passed=verdict.passed, against=verdict.champion)
    return PromotionDecision(verdict.passed, verdict.reason, version if verdict.passed else verdict.champion)


def gate_router(registry: ModelRegistry, version: str, gate: Any, expected: str | None) -> PromotionDecision:
    """Record the statistical gate's result (``eval.gate.GateResult``) on router ``version`` and, when
    it passed, move ``champion`` to it if the champion is still ``expected`` (the one the evaluation
    replayed; ``None``: there was none). Who calls this: ``register_router`` (``train-router``) and the
    nightly ``promote-router`` step. Refused when the champion moved since: the reason says so."""
    if version == expected:  # an unchanged model reused as the challenger: nothing to decide
        return PromotionDecision(False, f"{LLM_ROUTER} v{version} already is the champion", expected)
    registry.record_gate(
        LLM_ROUTER, version, gate.reason, gate.to_markdown(), passed=bool(gate.passed), against=expected
    )
    if not gate.passed:
        return PromotionDecision(False, gate.reason, expected)
    with registry.champion_lock():
        verdict = gate_verdict(registry, LLM_ROUTER, version)  # the evidence just recorded
        if verdict.champion == version:  # a retried step whose first attempt moved it
            return PromotionDecision(True, gate.reason, version)
        if not verdict.passed:
            champion = registry.find(LLM_ROUTER, CHAMPION)
            moved = ChampionMovedError(LLM_ROUTER, version, expected, champion.version if champion else None)
            registry.record_gate(LLM_ROUTER, version, str(moved), passed=True, against=expected)
            return PromotionDecision(False, str(moved), moved.current)
        try:
            registry.promote(LLM_ROUTER, version, expected=expected)
        except ChampionMovedError as exc:  # only where the lock is per process (a tracking server)
            registry.record_gate(LLM_ROUTER, version, str(exc), passed=True, against=expected)
            return PromotionDecision(False, str(exc), exc.current)
    return PromotionDecision(True, gate.reason, version)


@dataclass(frozen=True)
class HandPromotion:
    """What ``loadwise promote`` did: the champion before and after, the verdict, whether forced."""

    before: RegisteredVersion | None
    after: RegisteredVersion | None
    verdict: Verdict
    moved: bool
    forced: bool


def promote_by_hand(
    registry: ModelRegistry, name: str, version: str, *, force: bool = False, why: str = ""
) -> HandPromotion:
    """``loadwise promote NAME VERSION``: the gate's verdict; the move when it passed, or when
    ``force`` overrides a refusal (then recorded on the version: who, when, ``why``, the verdict).
    Verdict and move run under one lock (compare-and-set against the champion judged)."""
    with registry.champion_lock():
        before = registry.find(name, CHAMPION)
        verdict = gate_verdict(registry, name, version)
        if before is not None and before.version == version:
            return HandPromotion(before, before, verdict, moved=False, forced=False)
        if not verdict.passed and not force:
            return HandPromotion(before, None, verdict, moved=False, forced=False)
        after = registry.promote(name, version, expected=verdict.champion)
        if not verdict.passed:
            registry.record_forced(name, version, why, verdict.reason)
            after = registry.get(name, version)
    return HandPromotion(before, after, verdict, moved=True, forced=not verdict.passed)


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
    report_md: str,
    decide: Callable[[RegisteredVersion], PromotionDecision] | None,
) -> Published:
    """Register ``pkg`` (alias ``challenger``) and let ``decide`` gate the new version; without it
    the caller decides (the nightly flow's statistical gate). An identical model already registered
    (same data, config, requirements and code) is reported, not registered again nor re-gated (unless
    no gate ever recorded a verdict on it: a retried registration)."""
    version = registry.publish(pkg)
    champion = registry.find(pkg.name, CHAMPION)
    current = champion.version if champion else None
    if version.reused and decide is not None and GATE_PASSED_TAG not in version.tags:
        decision = decide(version)  # registered by an attempt that failed before its gate (a retry)
    elif version.reused:
        state = "is the champion" if current == version.version else f"champion stays {_v(current)}"
        why = (
            f"unchanged: identical to {pkg.name} v{version.version} (same data fingerprint, config and "
            f"code), not registered again; v{version.version} {state}"
        )
        decision = PromotionDecision(False, why, current)
    elif decide is None:
        decision = PromotionDecision(False, "registered as challenger; the caller's gate decides", current)
    else:
        decision = decide(version)
    now = replace(registry.get(pkg.name, version.version), reused=version.reused)  # aliases after the gate
    return Published(now, decision, dict(pkg.metrics), report_md)


def _metric_gate(registry: ModelRegistry, name: str) -> Callable[[RegisteredVersion], PromotionDecision]:
    return lambda v: promote_through_gate(registry, name, v.version)


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
        return _publish(registry, pkg, report_md, _metric_gate(registry, LENGTH_PREDICTOR))


def train_and_register_predictor(
    config: dict[str, Any],
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
        return _publish(registry, pkg, report_md, _metric_gate(registry, IMPACT_ESTIMATOR))


def fit_and_register_estimator(
    config: dict[str, Any], registry: ModelRegistry | None = None, progress: Progress | None = None
) -> Published:
    """The ``loadwise fit-estimator`` job: probe the registry, fit, evaluate on held-out points,
    register, gate."""
    registry = registry or ModelRegistry()
    registry.check()
    fitted = fit_estimator(config, progress)
    if progress:
        progress(f"registering {IMPACT_ESTIMATOR} in {registry.tracking_uri}")
    return register_estimator(fitted, registry)


# -- RL router -----------------------------------------------------------------------------------
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
    """Train the RL router on the workload's TRAINING pool (``train_router`` over an
    ``episode_sampler``), then evaluate it against every baseline on the held-out replays
    (``eval.learned.evaluate_policy``). Writes the training outputs under ``out_dir`` and the report
    under ``out_dir / "eval"``; returns ``(TrainedRouter, EvalReport)``."""
    from eval.learned import evaluate_policy
    from training.rl.config import RouterTrainConfig
    from training.rl.train import train_router
    from training.workloads.episodes import episode_sampler, workload_for
    from warehouse.paths import loadwise_home

    cfg = RouterTrainConfig(**config)
    out = Path(out_dir or loadwise_home() / "rl" / f"{cfg.variant}-{cfg.algo}-seed{cfg.seed}")
    trained = train_router(cfg, episode_sampler(cfg, workload_for(cfg)), out, progress=progress)
    report = evaluate_policy(trained.policy_dir, cfg, seeds, out_dir=out / "eval")
    return trained, report


ROUTER_SETTING_KEYS = ("workload", "where", "profile", "num_instances", "chunked_prefill_tokens")
"""``RouterTrainConfig`` keys of the setting a policy was trained for (trace, GPU profile, instance
count, chunked prefill): a policy of another setting is not a comparable champion (here and in the
nightly flow, which replays a comparable champion on its own windows)."""


def with_champion(report: Any, trained: Any, registry: ModelRegistry) -> tuple[Any, str | None, str | None]:
    """The current ``llm-router`` champion replayed on ``report``'s held-out windows and seeds.

    Returns ``(report, champion, refusal)``: ``report`` with the champion added as router
    ``champion`` when it was trained for the same setting (``ROUTER_SETTING_KEYS``: the nightly
    flow's rule), ``champion`` its version (``None``: none) and ``refusal`` the reason the gate must
    refuse (a champion of another setting is never replaced automatically), else ``None``.
    Who calls this: ``train_and_register_router`` / the ``train-router`` flow, once, before the gate.
    """
    from eval.learned import LEARNED, evaluate_policy
    from flows.registry import _config

    champ = registry.find(LLM_ROUTER, CHAMPION)
    if champ is None:
        return report, None, None
    cfg = trained.config
    ours = cfg.model_dump(mode="json")
    theirs = _config(champ)
    setting = {k: theirs.get(k) for k in ROUTER_SETTING_KEYS}
    if setting != {k: ours.get(k) for k in ROUTER_SETTING_KEYS}:
        return (
            report,
            champ.version,
            f"not promoted: the champion v{champ.version} serves another setting ({setting}); replace it "
            "by hand (loadwise promote --force) after review",
        )
    with tempfile.TemporaryDirectory(prefix="loadwise-champion-") as tmp:
        policy = registry.download_artifact(LLM_ROUTER, champ.version, "policy_dir", Path(tmp))
        replayed = evaluate_policy(policy, cfg, report.seeds, routers=["round_robin"])
    result = replayed.routers[LEARNED].model_copy(
        update={"name": CHAMPION, "description": f"llm-router v{champ.version} (champion)"}
    )
    return report.model_copy(update={"routers": {**report.routers, CHAMPION: result}}), champ.version, None


def router_data_fingerprint(trained: Any, report: Any) -> str:
    """What the router learned from: the warehouse files' content hashes for ``workload = warehouse``
    (``warehouse.ops.data_fingerprint``), else the named workload and whether its data was synthetic."""
    cfg = trained.config
    if cfg.workload == "warehouse":
        from warehouse.ops import data_fingerprint
        from warehouse.paths import default_warehouse_path

        data = data_fingerprint(cfg.warehouse or default_warehouse_path(), cfg.where)
        return f"warehouse:{data}"
    return f"workload={cfg.workload};synthetic={report.synthetic};{report.workload_description}"


def register_router(
    trained: Any,
    report: Any,
    registry: ModelRegistry,
    *,
    learned: str = "rl",
    exclude: tuple[str, ...] = (),
    gate: bool = True,
    data_fingerprint: str | None = None,
    champion: str | None = None,
    refusal: str | None = None,
) -> Published:
    """Register a trained router policy as a new ``llm-router`` version; with ``gate``, run the
    statistical gate (``eval.gate.promotion_gate``) on ``report``: ``learned`` (the policy's name in
    it) against router ``champion`` when the report has one (``with_champion``) and the best
    baseline (``exclude``: not baselines); the move is a compare-and-set against ``champion`` (the
    version replayed, or seen when there was nothing comparable to replay). ``refusal``: a reason the
    gate must refuse whatever the figures say (``with_champion``)."""
    from eval.gate import promotion_gate
    from eval.report import to_markdown
    from training.rl import policy_serving

    example = trained.input_example()
    policy = policy_serving.load_policy(trained.policy_dir)
    report_md = to_markdown(report)
    cfg = trained.config
    in_report = CHAMPION if CHAMPION in report.routers and learned != CHAMPION else None
    not_baselines = (*exclude, *((in_report,) if in_report else ()))
    pkg = ModelPackage(
        name=LLM_ROUTER,
        serving_module=Path(policy_serving.__file__),
        model_class="RouterPolicyModel",
        artifacts={"policy_dir": Path(trained.policy_dir)},
        input_example=example,
        output_example=policy_serving.predict_frame(policy, example),
        pip_requirements=ROUTER_REQUIREMENTS,
        config=cfg.model_dump(mode="json"),
        metrics={
            **router_metrics(report, learned, not_baselines),
            **{f"train.{k}": float(v) for k, v in trained.train_stats.items() if isinstance(v, int | float)},
        },
        data_fingerprint=data_fingerprint or router_data_fingerprint(trained, report),
        reports={"evaluation.md": report_md, "evaluation.json": report.model_dump_json(indent=1)},
        description=f"{cfg.variant} RL router ({cfg.algo}) for {cfg.num_instances} x {cfg.profile}",
    )

    def decide(version: RegisteredVersion) -> PromotionDecision:
        result = promotion_gate(report, learned, in_report, exclude=exclude)
        if refusal is not None:
            result = result.model_copy(update={"passed": False, "reason": f"{refusal}; {result.reason}"})
        return gate_router(registry, version.version, result, champion)

    return _publish(registry, pkg, report_md, decide if gate else None)


def train_and_register_router(
    config: dict[str, Any],
    registry: ModelRegistry | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
) -> tuple[Published, Any]:
    """The ``loadwise train-router`` job: probe the registry, train, evaluate against every baseline
    and the comparable champion (replayed on the same windows), register, gate."""
    registry = registry or ModelRegistry()
    registry.check()
    trained, report = train_router_job(config, seeds=seeds, progress=progress)
    report, champion, refusal = with_champion(report, trained, registry)
    published = register_router(trained, report, registry, champion=champion, refusal=refusal)
    return published, report


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
    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after training
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
def register_router_task(
    trained: Any, report: Any, tracking_uri: str | None, champion: str | None, refusal: str | None
) -> Published:
    return register_router(trained, report, ModelRegistry(tracking_uri), champion=champion, refusal=refusal)


@task(
    name="evaluate-champion",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def champion_task(report: Any, trained: Any, tracking_uri: str | None) -> tuple[Any, str | None, str | None]:
    return with_champion(report, trained, ModelRegistry(tracking_uri))


@flow(name="train-router", log_prints=True)
def train_router_flow(
    config: dict[str, Any] | None = None, seeds: list[int] | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Train the RL router, evaluate it against every baseline and the champion, register
    ``llm-router``, gate."""
    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after training
    trained, report = train_router_task(config or {}, seeds or [0, 1, 2])
    report, champion, refusal = champion_task(report, trained, tracking_uri)
    published = register_router_task(trained, report, tracking_uri, champion, refusal)
    out = report_task(LLM_ROUTER, published)
    out["evaluation"] = report.summary()
    return out


@flow(name="refit-impact-estimator", log_prints=True)
def refit_impact_estimator(
    config: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Fit, evaluate, register ``impact-estimator``; the report is a markdown artifact."""
    ModelRegistry(tracking_uri).check()  # a bad store fails now, not after fitting
    fitted = fit_estimator_task(config or {})
    return report_task(IMPACT_ESTIMATOR, register_task(IMPACT_ESTIMATOR, fitted, tracking_uri))
