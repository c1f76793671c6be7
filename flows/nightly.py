"""The ``nightly-retrain`` Prefect flow: from newly arrived traces to a promoted champion router.

Who calls this: ``loadwise run`` (the README's main job, once), ``loadwise serve`` (on a cron
schedule: the ``nightly`` deployment, plus an hourly ``drift-watch`` that retrains only on drift) and
``prefect deploy`` workers (``prefect.yaml``). Steps, each a Prefect task:

1. **ingest-traces**: the trace files of the data folder into the DuckDB warehouse (idempotent by
   content hash; a malformed row is quarantined with its reason). Retries on I/O errors only.
2. **check-drift**: requests of files after the last watermark (``warehouse.ops``) vs those up to it
   (the window the models were trained on): per-task PSI / KS of prompt and output lengths, arrival
   rate (``features.drift``). Recorded in ``ops.nightly_runs``; with ``retrain = "on-drift"`` a
   drift above the thresholds is what triggers retraining.
3. **retrain-impact-estimator**, **retrain-length-predictor**: fit / train, register, simple gate
   (``flows.models``).
4. **train-router**: the guided-RL router on windows of the warehouse's production trace
   (``where``), **evaluate-router**: the challenger, the current champion and every baseline on the
   same held-out windows and seeds (one harness), **register-router** (alias ``challenger``),
   **promote-router**: the statistical gate (``eval.gate``: better mean E2E than the champion and
   the best baseline with a 95 % CI excluding zero, no worse p99) moves ``champion`` or says why not.
5. **publish-report**: markdown report, router table and latency-CDF plot as Prefect artifacts and
   files; one row in ``ops.nightly_runs`` (the watermark advances only here, on success).

**Skipping unchanged work.** Every training/evaluation step is a Prefect task cached on an explicit
key: a SHA-256 of the step's inputs (the content hashes of the warehouse files it reads, its config,
the source code it runs (``STEP_SOURCES``), the tracking URI and, for the evaluation, the champion's
version), stored under ``$LOADWISE_HOME/nightly/cache``. A second run with no new data hits every
cache and retrains nothing; ``force`` refreshes them all.

**Failures.** Each warehouse write is copy-on-write (a failure publishes nothing) and ``champion``
moves only in the last step, after the gate: a step that raises leaves the previous champion serving
and the warehouse consistent; the run is logged as ``failed`` with the error, the watermark stays.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from eval.gate import GateConfig
from features.drift import DriftThresholds
from flows.ingest import retry_on_io
from flows.pipeline import ingest_task, locate_traces, summarize, write_synthetic

STEP_SOURCES = {
    "estimator": ("training/impact", "training/simulator"),
    "predictor": ("training/length", "warehouse"),
    "router": ("training", "eval", "warehouse"),
}
"""The source folders each step's result depends on: their code is part of its cache key (changed
training code retrains; a change to, say, the report renderer in ``flows`` does not)."""

CHALLENGER = "challenger"
CHAMPION = "champion"
LEARNED = "rl"
"""The learned router's registry name (``training.rl.router``)."""
FINGERPRINT_PREFIX = "nightly:"
"""Router versions registered by this flow carry ``loadwise.data_fingerprint = nightly:<train key>``."""


class NightlyConfig(BaseModel):
    """Every setting of one nightly run (``loadwise run --config FILE``: TOML, YAML or JSON).

    Units: requests, req/s, environment steps. ``predictor`` / ``estimator`` / ``router`` are passed
    to ``PredictorConfig`` / ``EstimatorConfig`` / ``RouterTrainConfig`` (their fields, validated
    there); ``router`` may not set the workload, profile or rate: the nightly run decides them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    warehouse: str | None = Field(default=None, description="DuckDB file (default: the data home's)")
    data_dir: str | None = Field(default=None, description="trace folder (default: ../shared/data)")
    synthetic_rows: int = Field(default=20_000, ge=100, description="rows when no real traces exist")
    seed: int = 0
    where: str = Field(
        default="format = 'azure'",
        description="SQL filter over marts.requests: the production trace the router learns from, is "
        "judged on, and whose drift is checked",
    )
    profile: str | None = Field(
        default=None, description="GPU profile (default: eval.scheduled.pick_profile)"
    )
    rate_rps: float | None = Field(default=None, gt=0, description="default: the profile's loaded rate")
    num_instances: int = Field(default=4, ge=1)
    estimator: dict[str, Any] = Field(default_factory=dict)
    predictor: dict[str, Any] = Field(default_factory=dict)
    train_predictor: bool = True
    router: dict[str, Any] = Field(
        default_factory=lambda: {"total_timesteps": 20_000, "checkpoint_every_steps": 100_000}
    )
    eval_seeds: tuple[int, ...] = Field(default=(0, 1, 2, 3, 4), min_length=1)
    eval_requests: int = Field(default=2000, ge=10, description="requests per held-out window")
    eval_workers: int = Field(default=1, ge=1, description="processes for the evaluation replays")
    drift: DriftThresholds = DriftThresholds()
    gate: GateConfig = GateConfig()
    retrain: Literal["changed", "on-drift"] = Field(
        default="changed",
        description="'changed': retrain every step whose inputs changed (nightly); 'on-drift': only when "
        "the new window drifted or no champion exists (the frequent drift-watch schedule)",
    )
    force: bool = Field(default=False, description="ignore the step caches (retrain everything)")

    @classmethod
    def from_file(cls, path: str | Path) -> NightlyConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (unknown keys are an error)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: config must be .toml, .yaml, .yml or .json")
        return cls.model_validate(data)


def code_fingerprint(folders: tuple[str, ...], root: Path | None = None) -> str:
    """SHA-256 over the Python source under ``folders`` (relative to the project root)."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in folders:
        for file in sorted((root / folder).rglob("*.py")):
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def step_key(step: str, **inputs: Any) -> str:
    """The cache key of ``step`` for ``inputs`` (JSON-able)."""
    text = json.dumps({"step": step, **inputs}, sort_keys=True, default=str)
    return f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _explicit_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: the task's ``key`` argument (computed by the flow from its inputs)."""
    return str(parameters["key"])


# -- steps ---------------------------------------------------------------------------------------
@task(name="check-drift", cache_policy=NO_CACHE)
def drift_task(
    warehouse: str, where: str, watermark: int | None, thresholds: DriftThresholds
) -> dict[str, Any]:
    """The new window (files after ``watermark``) vs the reference window (files up to it)."""
    from features.drift import detect_drift
    from warehouse.ops import request_windows

    reference, new = request_windows(warehouse, where, watermark)
    out: dict[str, Any] = {"reference_requests": len(reference), "new_requests": len(new)}
    if reference.empty or new.empty:
        why = "no reference window (first run)" if reference.empty else "no new requests since the watermark"
        return {**out, "drifted": None, "reasons": [why], "markdown": f"Drift: not checked ({why}).\n"}
    report = detect_drift(reference, new, thresholds)
    return {**out, "drifted": report.drifted, "reasons": report.reasons, "markdown": report.to_markdown()}


@task(
    name="retrain-impact-estimator",
    retries=1,
    retry_condition_fn=retry_on_io,
    cache_key_fn=_explicit_key,
    persist_result=True,
)
def estimator_task(key: str, config: dict[str, Any], tracking_uri: str | None) -> dict[str, Any]:
    from flows.models import fit_and_register_estimator
    from flows.registry import ModelRegistry

    return fit_and_register_estimator(config, ModelRegistry(tracking_uri), progress=print).to_dict()


@task(
    name="retrain-length-predictor",
    retries=1,
    retry_condition_fn=retry_on_io,
    cache_key_fn=_explicit_key,
    persist_result=True,
)
def predictor_task(
    key: str, config: dict[str, Any], warehouse: str, tracking_uri: str | None
) -> dict[str, Any]:
    from flows.models import train_and_register_predictor
    from flows.registry import ModelRegistry

    published = train_and_register_predictor(config, Path(warehouse), ModelRegistry(tracking_uri), print)
    return published.to_dict()


@task(name="train-router", cache_key_fn=_explicit_key, persist_result=True)
def train_router_task(key: str, config: dict[str, Any], out_dir: str) -> Any:
    """Train the RL router on windows of the training part of the trace; returns ``TrainedRouter``."""
    from eval.learned import episode_sampler
    from training.rl.config import RouterTrainConfig
    from training.rl.train import train_router

    cfg = RouterTrainConfig(**config)
    return train_router(cfg, episode_sampler(cfg), Path(out_dir), progress=False)


@task(name="evaluate-router", cache_key_fn=_explicit_key, persist_result=True)
def evaluate_task(
    key: str,
    config: dict[str, Any],
    policy_dir: str,
    champion: dict[str, str] | None,
    seeds: list[int],
    num_requests: int,
    workers: int,
    out_dir: str,
    tracking_uri: str | None,
) -> Any:
    """Challenger, champion and every baseline on the same held-out windows; returns the report."""
    from eval.sinks import DuckDBSink

    champion_dir = None
    if champion:
        from flows.models import LLM_ROUTER
        from flows.registry import ModelRegistry

        champion_dir = ModelRegistry(tracking_uri).download_artifact(
            LLM_ROUTER, champion["version"], "policy_dir", Path(out_dir) / "champion_policy"
        )
    run = evaluate_challenger(config, Path(policy_dir), champion_dir, seeds, num_requests, workers, champion)
    from eval.harness import write_outputs

    write_outputs(run, Path(out_dir))
    DuckDBSink(Path(config["warehouse"])).write(run.report)
    return run.report


@task(
    name="register-router",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
    cache_key_fn=_explicit_key,
    persist_result=True,
)
def register_router_task(
    key: str, train_key: str, trained: Any, report: Any, tracking_uri: str | None
) -> dict[str, Any]:
    from flows.models import register_router
    from flows.registry import ModelRegistry

    published = register_router(
        trained,
        report,
        ModelRegistry(tracking_uri),
        learned=CHALLENGER,
        exclude=(CHAMPION,),
        gate=False,
        data_fingerprint=FINGERPRINT_PREFIX + train_key,
    )
    return published.to_dict()


@task(
    name="promote-router",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def promote_task(version: str, passed: bool, tracking_uri: str | None) -> bool:
    """Move ``champion`` to ``version`` when the gate passed (the only step that changes serving)."""
    if not passed:
        return False
    from flows.models import LLM_ROUTER
    from flows.registry import ModelRegistry

    ModelRegistry(tracking_uri).promote(LLM_ROUTER, version)
    return True


# -- library functions the steps call --------------------------------------------------------------
def evaluate_challenger(
    config: dict[str, Any],
    policy_dir: Path,
    champion_dir: Path | None,
    seeds: list[int],
    num_requests: int,
    workers: int = 1,
    champion: dict[str, str] | None = None,
) -> Any:
    """One ``EvalRun``: every baseline plus ``challenger`` (``policy_dir``) and, when given,
    ``champion`` (``champion_dir``), replayed on the same held-out windows of the router's trace."""
    from dataclasses import replace

    from eval.harness import EvalRun, run_evaluation
    from eval.learned import cluster_for
    from eval.workloads import WorkloadOptions, warehouse_workload
    from training.rl.config import RouterTrainConfig
    from training.routing.registry import router_names
    from training.simulator import load_latency_model

    cfg = RouterTrainConfig(**config)
    workload = warehouse_workload(
        cfg.warehouse,
        cfg.where,
        WorkloadOptions(num_requests=num_requests, rate=cfg.rate_rps, num_instances=cfg.num_instances),
        profile=cfg.profile,
        windows=True,
    )
    cluster, model = cluster_for(cfg), load_latency_model(cfg.profile)
    names = [n for n in router_names() if n != LEARNED] + [LEARNED]

    def run(routers: list[str], policy: Path) -> EvalRun:
        return run_evaluation(
            routers,
            workload,
            cluster,
            model,
            seeds,
            context_options={"policy_dir": str(policy)},
            workers=workers,
        )

    base = run(names, policy_dir)
    runs = {CHALLENGER: (base, "the RL router trained tonight")}
    if champion_dir is not None:
        version = (champion or {}).get("version", "?")
        runs[CHAMPION] = (run(["round_robin", LEARNED], champion_dir), f"llm-router v{version} (champion)")
    routers = {n: r for n, r in base.report.routers.items() if n != LEARNED}
    first = {n: a for n, a in base.first_seed.items() if n != LEARNED}
    for name, (r, description) in runs.items():
        routers[name] = r.report.routers[LEARNED].model_copy(
            update={"name": name, "description": description}
        )
        first[name] = r.first_seed[LEARNED]
    return replace(base, report=base.report.model_copy(update={"routers": routers}), first_seed=first)


def _router_config(cfg: NightlyConfig, warehouse: str, profile: str, rate: float) -> dict[str, Any]:
    fixed = {"workload", "warehouse", "where", "profile", "rate_rps", "num_instances"}
    clash = fixed & set(cfg.router)
    if clash:
        raise ValueError(f"router config may not set {sorted(clash)}: the nightly config decides them")
    return {
        "seed": cfg.seed,
        **cfg.router,
        "workload": "warehouse",
        "warehouse": warehouse,
        "where": cfg.where,
        "profile": profile,
        "rate_rps": rate,
        "num_instances": cfg.num_instances,
    }


def _registered_from(tracking_uri: str | None, key: str) -> Any:
    """The ``llm-router`` version this flow registered for train key ``key`` (None: none yet)."""
    from flows.models import LLM_ROUTER
    from flows.registry import ModelRegistry, RegistryError

    try:
        versions = ModelRegistry(tracking_uri).versions(LLM_ROUTER)
    except RegistryError:
        return None
    tag = "loadwise.data_fingerprint"
    return next((v for v in versions if v.tags.get(tag) == FINGERPRINT_PREFIX + key), None)


def _champion(tracking_uri: str | None) -> dict[str, str] | None:
    from flows.models import LLM_ROUTER
    from flows.registry import ModelRegistry, RegistryError

    try:
        found = ModelRegistry(tracking_uri).find(LLM_ROUTER, CHAMPION)
    except RegistryError:
        return None
    return {"version": found.version, "run_id": found.run_id} if found else None


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")


# -- the flow ----------------------------------------------------------------------------------
@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(config: NightlyConfig | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Ingest new traces, check drift, retrain what changed, evaluate, gate, promote, report.

    Returns the run summary (also the ``loadwise run --json`` payload): ``warehouse``, ``synthetic``,
    ``ingest``, ``drift``, ``steps`` (name -> ``ran`` | ``cached`` | ``skipped: why``), ``models``,
    ``evaluation`` (router -> headline figures), ``gate``, ``promoted``, ``report_dir``.
    """
    from warehouse.paths import loadwise_home
    from warehouse.store import resolve_path

    cfg = config or NightlyConfig()
    started = datetime.now(UTC)
    db = str(resolve_path(cfg.warehouse))
    home = loadwise_home() / "nightly"
    state: dict[str, Any] = {"step": "start"}
    try:
        return _nightly(cfg, db, home, tracking_uri, started, state)
    except Exception as exc:
        _record_failure(db, started, state, exc)
        raise


def _nightly(
    cfg: NightlyConfig,
    db: str,
    home: Path,
    tracking_uri: str | None,
    started: datetime,
    state: dict[str, Any],
) -> dict[str, Any]:
    from eval.gate import promotion_gate
    from eval.scheduled import DEFAULT_RATE_RPS, pick_profile
    from flows.models import has_predictor_data
    from flows.registry import ModelRegistry
    from warehouse.ops import data_fingerprint, last_watermark, max_file_id, record_run
    from warehouse.paths import loadwise_home, shared_data_dir

    run_id = _run_id()
    out_dir = home / "runs" / f"{started:%Y%m%dT%H%M%SZ}-{run_id[:8]}"
    steps: dict[str, str] = {}

    def step(name: str) -> None:
        state["step"] = name

    # 1. ingest
    step("ingest-traces")
    paths = locate_traces(str(Path(cfg.data_dir) if cfg.data_dir else shared_data_dir()))
    synthetic = not paths
    if synthetic:
        print(
            "no real traces in the data folder: generating a SYNTHETIC Azure-like workload "
            "(source 'synthetic')"
        )
        paths = write_synthetic(str(loadwise_home() / "synthetic"), cfg.synthetic_rows, cfg.seed)
    ingest = ingest_task(paths, db, "synthetic" if synthetic else None)
    print(
        f"ingest: {ingest['rows_read']} rows read = {ingest['ingested']} ingested + {ingest['quarantined']} "
        f"quarantined; {ingest['duplicates_skipped']} rows in already-ingested files skipped"
    )
    summary = summarize(db)

    # 2. drift
    step("check-drift")
    mark = last_watermark(db)
    drift = drift_task(db, cfg.where, mark.file_id if mark else None, cfg.drift)
    print(f"drift: {drift['new_requests']} new requests; {'; '.join(drift['reasons']) or 'no drift'}")
    champion = _champion(tracking_uri)
    train = cfg.retrain == "changed" or bool(drift["drifted"]) or champion is None or cfg.force
    profile = cfg.profile or pick_profile()
    rate = cfg.rate_rps or DEFAULT_RATE_RPS.get(profile, 12.0)
    uri = ModelRegistry(tracking_uri).tracking_uri

    def inputs(step: str) -> dict[str, str]:
        return {"code": code_fingerprint(STEP_SOURCES[step]), "tracking_uri": uri}

    models: list[dict[str, Any]] = []
    evaluation = gate = eval_dir = None
    promoted = False
    challenger_version: str | None = None

    def _run(task_: Any) -> Callable[..., Any]:
        return _cached_task(task_, home / "cache", cfg.force)

    def cached(name: str, run_state: Any) -> Any:
        steps[name] = "cached" if run_state.name == "Cached" else "ran"
        return run_state.result()

    if not train:
        why = "retrain = on-drift and the new window did not drift"
        for name in ("retrain-impact-estimator", "retrain-length-predictor", "train-router"):
            steps[name] = f"skipped: {why}"
    else:
        # 3. estimator and predictor
        step("retrain-impact-estimator")
        est_cfg = {"profile": profile, **cfg.estimator}
        key = step_key("estimator", config=est_cfg, **inputs("estimator"))
        models.append(
            cached(
                "retrain-impact-estimator",
                _run(estimator_task)(key, est_cfg, tracking_uri, return_state=True),
            )
        )
        step("retrain-length-predictor")
        if not cfg.train_predictor or synthetic or not has_predictor_data(db):
            why = "disabled" if not cfg.train_predictor else "no prompt texts with output lengths (CASTILLO)"
            steps["retrain-length-predictor"] = f"skipped: {why}"
        else:
            data = data_fingerprint(db, "format = 'castillo'")
            key = step_key("predictor", config=cfg.predictor, data=data, **inputs("predictor"))
            models.append(
                cached(
                    "retrain-length-predictor",
                    _run(predictor_task)(key, dict(cfg.predictor), db, tracking_uri, return_state=True),
                )
            )

        # 4. router: train, evaluate against champion + baselines, register, gate, promote
        step("train-router")
        router_cfg = _router_config(cfg, db, profile, rate)
        data = data_fingerprint(db, cfg.where)
        train_key = step_key("router", config=router_cfg, data=data, **inputs("router"))
        existing = _registered_from(tracking_uri, train_key)
        if existing is not None and champion and existing.version == champion["version"] and not cfg.force:
            why = f"llm-router v{existing.version}, trained from these inputs, is already the champion"
            for name in ("train-router", "evaluate-router", "register-router", "promote-router"):
                steps[name] = f"skipped: {why}"
            challenger_version = existing.version
        else:
            trained = cached(
                "train-router",
                _run(train_router_task)(
                    train_key, router_cfg, str(home / "router" / train_key), return_state=True
                ),
            )
            step("evaluate-router")
            eval_key = step_key(
                "evaluate", train=train_key, champion=champion, seeds=cfg.eval_seeds, n=cfg.eval_requests
            )
            report = cached(
                "evaluate-router",
                _run(evaluate_task)(
                    eval_key,
                    router_cfg,
                    str(trained.policy_dir),
                    champion,
                    list(cfg.eval_seeds),
                    cfg.eval_requests,
                    cfg.eval_workers,
                    str(home / "evaluations" / eval_key),
                    tracking_uri,
                    return_state=True,
                ),
            )
            evaluation = report.summary()
            step("register-router")
            register = _run(register_router_task)
            published = cached(
                "register-router",
                register(
                    f"register-{train_key}", train_key, trained, report, tracking_uri, return_state=True
                ),
            )
            challenger_version = published["model"]["version"]
            step("promote-router")
            result = promotion_gate(report, CHALLENGER, CHAMPION if champion else None, cfg.gate)
            eval_dir = home / "evaluations" / eval_key
            promoted = promote_task(challenger_version, result.passed, tracking_uri)
            steps["promote-router"] = "promoted" if promoted else "kept the champion"
            gate = result
            models.append(
                {
                    **published,
                    "promotion": {
                        "promoted": promoted,
                        "reason": result.reason,
                        "champion_version": champion and champion["version"],
                    },
                }
            )
            print(f"gate: {result.reason}")

    # 5. report + watermark
    step("publish-report")
    watermark = max_file_id(db) if train else (mark.file_id if mark else None)
    report_md = render_report(cfg, ingest, drift, steps, models, evaluation, gate, eval_dir)
    publish_artifacts(report_md, evaluation, out_dir, eval_dir)
    record_run(
        db,
        run_id=run_id,
        started_at=started,
        status="ok",
        watermark_file_id=watermark,
        new_requests=drift["new_requests"],
        drifted=drift["drifted"],
        drift_reasons="; ".join(drift["reasons"]),
        retrained=",".join(n for n, s in steps.items() if s == "ran"),
        challenger_version=challenger_version,
        promoted=promoted,
        decision=gate.reason if gate else "; ".join(v for v in steps.values() if v.startswith("skipped")),
        details={"steps": steps, "gate": gate.model_dump(mode="json") if gate else None},
    )
    print(f"report: {out_dir / 'report.md'}")
    return {
        "warehouse": db,
        "synthetic": synthetic,
        "ingest": ingest,
        "summary": summary,
        "drift": {k: v for k, v in drift.items() if k != "markdown"},
        "steps": steps,
        "models": models,
        "evaluation": evaluation,
        "gate": gate.model_dump(mode="json") if gate else None,
        "promoted": promoted,
        "report_dir": str(out_dir),
    }


def _cached_task(task_: Any, cache_dir: Path, force: bool) -> Callable[..., Any]:
    """``task_`` with its results (and cache records) under ``cache_dir``, refreshed when ``force``."""
    return task_.with_options(result_storage=cache_dir, refresh_cache=force or None)


def render_report(
    cfg: NightlyConfig,
    ingest: dict[str, Any],
    drift: dict[str, Any],
    steps: dict[str, str],
    models: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    gate: Any,
    eval_dir: Path | None,
) -> str:
    """The run's markdown report (also the Prefect artifact)."""
    lines = [
        "# nightly-retrain",
        "",
        f"**Decision**: {gate.reason if gate else 'no router evaluation this run'}",
        "",
        f"Ingest: {ingest['rows_read']} rows read, {ingest['ingested']} ingested, {ingest['quarantined']} "
        f"quarantined, {ingest['duplicates_skipped']} in already-ingested files.",
        "",
        "## Steps",
        "",
        "| step | outcome |",
        "|---|---|",
        *(f"| {name} | {outcome} |" for name, outcome in steps.items()),
        "",
        "## Drift (new window vs training window)",
        "",
        drift["markdown"],
        "",
        "## Models",
        "",
        "| model | version | aliases | decision |",
        "|---|---|---|---|",
        *(
            f"| {m['model']['name']} | {m['model']['version']} | {','.join(m['model']['aliases'])} | "
            f"{m['promotion']['reason']} |"
            for m in models
        ),
    ]
    if gate is not None:
        lines += ["", "## Promotion gate", "", gate.to_markdown()]
    if evaluation is not None and eval_dir is not None:
        lines += [
            "",
            "## Routers on the held-out windows (mean over seeds)",
            "",
            "| router | mean E2E (s) | ± 95 % | p99 E2E (s) | mean TTFT (s) | vs round robin (%) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {s['e2e_mean']:.3f} | {s['e2e_mean_ci95']:.3f} | {s['e2e_p99']:.2f} | "
                f"{s['ttft_mean']:.3f} | {_pct(s['vs_round_robin_pct'])} |"
                for name, s in sorted(evaluation.items(), key=lambda kv: kv[1]["e2e_mean"])
            ),
            "",
            f"Latency CDF: `{eval_dir / 'e2e_cdf.png'}`; full report: `{eval_dir / 'report.md'}`.",
        ]
    lines += ["", f"Config: `{cfg.model_dump_json()}`", ""]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "" if value is None else f"{value:+.1f}"


def publish_artifacts(
    report_md: str, evaluation: dict[str, Any] | None, out_dir: Path, eval_dir: Path | None
) -> None:
    """Write ``report.md`` and create the Prefect artifacts (report, router table, CDF link)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report_md)
    create_markdown_artifact(report_md, key="nightly-retrain-report", description="nightly-retrain")
    if evaluation is not None:
        rows = [{"router": n, **s} for n, s in evaluation.items()]
        create_table_artifact(rows, key="nightly-retrain-routers", description="held-out evaluation")
        cdf = eval_dir / "e2e_cdf.png" if eval_dir else None
        if cdf is not None and cdf.exists():
            create_link_artifact(cdf.as_uri(), link_text="E2E latency CDF", key="nightly-retrain-cdf")


def _record_failure(db: str, started: datetime, state: dict[str, Any], exc: BaseException) -> None:
    """Log the failed run (the watermark does not move); never masks the original error."""
    from warehouse.ops import record_run

    if not Path(db).exists():  # failed before the warehouse existed: nothing to log into
        return
    try:
        record_run(
            db,
            run_id=_run_id(),
            started_at=started,
            status="failed",
            watermark_file_id=None,
            decision=f"{state['step']} failed: {type(exc).__name__}: {exc}"[:2000],
            details={"traceback": traceback.format_exc()[-4000:]},
        )
    except Exception as log_exc:  # the warehouse itself may be what failed
        print(f"could not record the failed run in ops.nightly_runs: {log_exc}")
