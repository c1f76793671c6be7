"""The ``nightly-retrain`` Prefect flow: from newly arrived traces to a promoted champion router.

Who calls this: ``loadwise run`` (the README's main job, once), ``loadwise serve`` (on a cron
schedule: the ``nightly`` deployment, plus an hourly ``drift-watch`` that retrains only on drift) and
``prefect deploy`` workers (``prefect.yaml``). Its settings are ``flows.nightly_config.NightlyConfig``,
validated whole when read, so a bad value fails before any step. Steps, each a Prefect task:

1. **ingest-traces**: the trace files of the data folder into the DuckDB warehouse (idempotent by
   content hash; a malformed row is quarantined with its reason). Retries on I/O errors only.
2. **check-drift**: requests of files after the last watermark (``warehouse.ops``) vs those up to it
   (the window the models were trained on): per-task PSI / KS of prompt and output lengths, arrival
   rate (``features.drift``). Recorded in ``ops.nightly_runs``; with ``retrain = "on-drift"`` a
   drift above the thresholds is what triggers retraining.
3. **retrain-impact-estimator**, **retrain-length-predictor**: fit / train, register, simple gate
   (``flows.models``).
4. **train-router**: the guided-RL router on windows of the warehouse's production trace
   (``where``; one candidate per ``router_seeds``, submitted to the flow's task runner, the best on
   training-pool validation kept), **evaluate-router**: the challenger, the current champion and
   every baseline on the same held-out windows and seeds (one harness; the replays are tasks on the
   flow's task runner: threads here, a Dask cluster to scale out), **register-router** (alias
   ``challenger``),
   **promote-router**: the statistical gate (``eval.gate``: better mean E2E than the champion and
   the best baseline with a 95 % CI excluding zero, no worse p99) moves ``champion`` or says why not.
5. **publish-report**: markdown report, router table and latency-CDF plot as Prefect artifacts and
   files; one row in ``ops.nightly_runs`` (the watermark advances only here, on success).

**Skipping unchanged work.** Every training/evaluation step is a Prefect task cached on an explicit
key: a SHA-256 of the step's inputs (the content hashes of the warehouse files it reads, its config,
the source code it runs (``STEP_SOURCES``), the tracking URI and, for the evaluation, the champion's
version), stored under ``$LOADWISE_HOME/nightly/cache``. The evaluation, whose replays are tasks of
their own, is content-addressed instead: its outputs are published atomically to
``$LOADWISE_HOME/nightly/evaluations/<key>``. A second run with no new data hits every cache and
retrains nothing; ``force`` refreshes them all.

**Failures.** Each warehouse write is copy-on-write (a failure publishes nothing) and ``champion``
moves only in the last step, after the gate: a step that raises leaves the previous champion serving
and the warehouse consistent; the run is logged as ``failed`` with the error, the watermark stays.
"""

from __future__ import annotations

import hashlib
import json
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from features.drift import DriftThresholds
from flows.ingest import counts_by_source, retry_on_io
from flows.models import ROUTER_SETTING_KEYS
from flows.nightly_config import NightlyConfig, router_train_settings
from flows.pipeline import ingest_task, locate_traces, summarize, write_synthetic
from flows.registry import code_fingerprint

STEP_SOURCES = {
    "estimator": ("training/impact", "training/simulator"),
    "predictor": ("training/length", "warehouse"),
    "router": ("training", "eval", "warehouse"),
}
"""The source folders each step's result depends on: their code is part of its cache key (changed
training code retrains; a change to, say, the report renderer in ``flows`` does not)."""

CHALLENGER = "challenger"
CHAMPION = "champion"
FINGERPRINT_PREFIX = "nightly:"
"""Router versions registered by this flow carry ``loadwise.data_fingerprint = nightly:<train key>``."""


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
    markdown = report.to_markdown()
    create_markdown_artifact(markdown, key="nightly-drift", description="new window vs training window")
    return {**out, "drifted": report.drifted, "reasons": report.reasons, "markdown": markdown}


@task(
    name="retrain-impact-estimator",
    retries=1,
    retry_condition_fn=retry_on_io,
    cache_key_fn=_explicit_key,
    persist_result=True,
)
def estimator_task(key: str, config: dict[str, Any], tracking_uri: str | None) -> dict[str, Any]:
    from flows.models import IMPACT_ESTIMATOR, fit_and_register_estimator, model_report_artifact
    from flows.registry import ModelRegistry

    published = fit_and_register_estimator(config, ModelRegistry(tracking_uri), progress=print)
    return model_report_artifact(IMPACT_ESTIMATOR, published)


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
    from flows.models import LENGTH_PREDICTOR, model_report_artifact, train_and_register_predictor
    from flows.registry import ModelRegistry

    published = train_and_register_predictor(config, Path(warehouse), ModelRegistry(tracking_uri), print)
    return model_report_artifact(LENGTH_PREDICTOR, published)


_TRAINING = threading.Lock()
"""One training per process at a time: stable-baselines3 seeds torch's and numpy's global RNGs, so
two trainings in threads of one process would interleave draws and lose bit-for-bit reproducibility
(measured: a thread-pool run of two candidates differed from a Dask run under load)."""


def train_one(config: dict[str, Any], out_dir: str) -> Any:
    """Train the RL router on windows of the training part of the trace (under ``_TRAINING``)."""
    from training.rl.config import RouterTrainConfig
    from training.rl.train import train_router
    from training.workloads.episodes import episode_sampler

    cfg = RouterTrainConfig(**config)
    with _TRAINING:
        return train_router(cfg, episode_sampler(cfg), Path(out_dir), progress=False)


@task(name="train-router", cache_key_fn=_explicit_key, persist_result=True)
def train_router_task(key: str, config: dict[str, Any], out_dir: str) -> Any:
    """``train_one`` as a cached task; returns ``TrainedRouter``."""
    return train_one(config, out_dir)


@task(name="fetch-champion-policy", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def fetch_champion_task(version: str, dst: str, tracking_uri: str | None) -> str:
    """Download the champion's policy folder from the registry (I/O: retried)."""
    from flows.models import LLM_ROUTER
    from flows.registry import ModelRegistry

    return str(ModelRegistry(tracking_uri).download_artifact(LLM_ROUTER, version, "policy_dir", Path(dst)))


@task(name="store-evaluation", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def store_evaluation_task(report: Any, warehouse: str) -> None:
    """``marts.eval_results`` (copy-on-write; I/O: retried)."""
    from eval.sinks import DuckDBSink

    DuckDBSink(Path(warehouse)).write(report)


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
def promote_task(version: str, gate: Any, tracking_uri: str | None, expected: str | None) -> dict[str, Any]:
    """Log the gate's comparison next to ``version``; when the gate passed, move ``champion`` to it
    only if the champion is still ``expected``, the version the evaluation replayed (``None``: there
    was none): a compare-and-set under the registry's champion lock (``flows.models.gate_router``).
    The only step that changes what serves. Returns ``{"promoted": bool, "reason": str}``."""
    from flows.models import gate_router
    from flows.registry import ModelRegistry

    decision = gate_router(ModelRegistry(tracking_uri), version, gate, expected)
    return {"promoted": decision.promoted, "reason": decision.reason}


# -- library functions the steps call --------------------------------------------------------------
def evaluate_challenger(
    config: dict[str, Any],
    policy_dir: Path,
    champion_dir: Path | None,
    seeds: list[int],
    num_requests: int,
    champion: dict[str, str] | None = None,
    executor: Any = None,
) -> Any:
    """One ``EvalRun``: every baseline plus ``challenger`` (``policy_dir``) and, when given,
    ``champion`` (``champion_dir``), replayed on the same held-out windows of the router's trace.
    ``executor`` runs the replays (``flows.distributed.prefect_executor``: the flow's task runner)."""
    from dataclasses import replace

    from eval.harness import EvalRun, run_evaluation
    from eval.learned import LEARNED
    from training.rl.config import RouterTrainConfig
    from training.routing.registry import router_names
    from training.simulator import load_latency_model
    from training.workloads.episodes import cluster_for, workload_for

    cfg = RouterTrainConfig(**config)
    workload = workload_for(cfg, num_requests)
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
            executor=executor,
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
    return router_train_settings(cfg, warehouse, profile, rate)  # what NightlyConfig validated


def _registered_from(tracking_uri: str | None, key: str) -> Any:
    """The ``llm-router`` version this flow registered for train key ``key`` (None: none yet)."""
    from flows.models import LLM_ROUTER
    from flows.registry import TAG_PREFIX, ModelRegistry

    versions = ModelRegistry(tracking_uri).versions(LLM_ROUTER)  # a store error fails the run: no guess
    tag = f"{TAG_PREFIX}data_fingerprint"
    return next((v for v in versions if v.tags.get(tag) == FINGERPRINT_PREFIX + key), None)


def _champion(tracking_uri: str | None) -> dict[str, Any] | None:
    """The current ``llm-router`` champion: version, run id and the setting it was trained for."""
    from flows.models import LLM_ROUTER
    from flows.registry import TAG_PREFIX, ModelRegistry

    # None only when there is no champion; a store error fails the run (it must not read as "none")
    found = ModelRegistry(tracking_uri).find(LLM_ROUTER, CHAMPION)
    if found is None:
        return None
    config = json.loads(found.tags.get(f"{TAG_PREFIX}config", "{}"))
    setting = {k: config.get(k) for k in ROUTER_SETTING_KEYS}  # missing in an older version: None
    return {"version": found.version, "run_id": found.run_id, "setting": setting}


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
    from warehouse.store import check_write_target

    cfg = config or NightlyConfig()  # validated whole when built (flows.nightly_config)
    started = datetime.now(UTC)
    home = loadwise_home() / "nightly"
    state: dict[str, Any] = {"step": "start"}
    try:
        db = str(check_write_target(cfg.warehouse))  # not a warehouse: refused before any work, no row
        try:
            return _nightly(cfg, db, home, tracking_uri, started, state)
        except Exception as exc:
            _record_failure(db, started, state, exc)
            raise
    except Exception as exc:
        # Prefect keeps the exception (the run's state) for the life of the process; the locals of
        # the finished frames in its traceback would keep whatever they held alive with it: a DuckDB
        # connection then outlives the interpreter (nanobind "leaked instance ... DuckDBPyConnection"
        # on stderr after the error). The traceback's text is unchanged.
        traceback.clear_frames(exc.__traceback__)
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
    create_table_artifact(
        counts_by_source(ingest), key="nightly-ingest", description="rows read / ingested / quarantined"
    )
    summary = summarize(db)
    latest_file = max_file_id(db)  # the watermark this run advances to (files ingested later wait)

    # 2. drift
    step("check-drift")
    mark = last_watermark(db)
    drift = drift_task(db, cfg.where, mark.file_id if mark else None, cfg.drift)
    print(f"drift: {drift['new_requests']} new requests; {'; '.join(drift['reasons']) or 'no drift'}")
    champion = _champion(tracking_uri)
    train = cfg.retrain == "changed" or bool(drift["drifted"]) or champion is None or cfg.force
    profile = cfg.profile or pick_profile()
    rate = cfg.rate_rps or DEFAULT_RATE_RPS.get(profile, 12.0)
    router_cfg = _router_config(cfg, db, profile, rate)
    other_setting = None
    if champion and champion["setting"] != {k: router_cfg.get(k) for k in ROUTER_SETTING_KEYS}:
        other_setting, champion = champion, None  # not replayed, and never replaced automatically
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

        # 4. router: train candidates, evaluate against champion + baselines, register, gate, promote
        step("train-router")
        data = data_fingerprint(db, cfg.where)
        seeds = cfg.router_seeds or (int(router_cfg["seed"]),)
        candidates = {
            seed: {**router_cfg, "seed": seed} for seed in dict.fromkeys(seeds)
        }  # one per seed, in order
        keys = {
            seed: step_key("router", config=c, data=data, **inputs("router"))
            for seed, c in candidates.items()
        }
        train_key = keys[seeds[0]] if len(keys) == 1 else step_key("router-best-of", candidates=keys)
        existing = _registered_from(tracking_uri, train_key)
        if existing is not None and champion and existing.version == champion["version"] and not cfg.force:
            why = f"llm-router v{existing.version}, trained from these inputs, is already the champion"
            for name in ("train-router", "evaluate-router", "register-router", "promote-router"):
                steps[name] = f"skipped: {why}"
            challenger_version = existing.version
        else:
            trained, candidate_stats = train_candidates(candidates, keys, home, _run, steps)
            step("evaluate-router")
            eval_key = step_key(
                "evaluate", train=train_key, champion=champion, seeds=cfg.eval_seeds, n=cfg.eval_requests
            )
            eval_dir = home / "evaluations" / eval_key
            report = evaluate_step(
                router_cfg, trained, champion, cfg, eval_dir, tracking_uri, steps, candidate_stats
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
            if other_setting is not None:
                why = (
                    f"not promoted: the champion v{other_setting['version']} serves another setting "
                    f"({other_setting['setting']}); replace it by hand (loadwise promote --force)"
                )
                result = result.model_copy(update={"passed": False, "reason": f"{why}; {result.reason}"})
            seen = champion or other_setting  # the champion when the run read it (compare-and-set)
            expected = seen["version"] if seen else None
            outcome = promote_task(challenger_version, result, tracking_uri, expected)
            promoted = bool(outcome["promoted"])
            if result.passed and not promoted:  # the champion moved since the evaluation
                result = result.model_copy(update={"passed": False, "reason": outcome["reason"]})
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
    watermark = latest_file if train else None  # None: consumed nothing (ops keeps the watermark)
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


def train_candidates(
    candidates: dict[int, dict[str, Any]],
    keys: dict[int, str],
    home: Path,
    run: Callable[[Any], Any],
    steps: dict[str, str],
) -> tuple[Any, list[dict[str, Any]]]:
    """Train one router per candidate config, submitted to the flow's task runner (side by side on a
    Dask cluster; one at a time within a process, see ``_TRAINING``); returns the one with the best
    validation mean E2E (on TRAINING-pool windows: the held-out windows stay unseen until the
    evaluation) and every candidate's figures."""
    futures = {
        seed: run(train_router_task).submit(keys[seed], c, str(home / "router" / keys[seed]))
        for seed, c in candidates.items()
    }
    results, states = {}, []
    for seed, future in futures.items():
        future.wait()
        states.append(future.state.name)
        results[seed] = future.result()
    stats = [
        {
            "seed": seed,
            "best_validation_e2e_s": float(r.train_stats.get("best_validation_e2e_s", float("inf"))),
            "steps_per_s": float(r.train_stats.get("steps_per_s", 0.0)),
            "wall_s": float(r.train_stats.get("wall_s", 0.0)),
        }
        for seed, r in results.items()
    ]
    best = int(min(stats, key=lambda st: st["best_validation_e2e_s"])["seed"])
    create_table_artifact(
        [{**st, "chosen": st["seed"] == best} for st in stats],
        key="nightly-router-candidates",
        description="RL router candidates: validation mean E2E on training-pool windows",
    )
    steps["train-router"] = "cached" if all(name == "Cached" for name in states) else "ran"
    if len(results) > 1:
        print(f"router candidates (validation mean E2E): {stats}; chose seed {best}")
    return results[best], stats


def evaluate_step(
    router_cfg: dict[str, Any],
    trained: Any,
    champion: dict[str, str] | None,
    cfg: NightlyConfig,
    eval_dir: Path,
    tracking_uri: str | None,
    steps: dict[str, str],
    candidate_stats: list[dict[str, Any]],
) -> Any:
    """The challenger vs the champion and every baseline; replays on the flow's task runner.

    Content-addressed: ``eval_dir`` is named by the step's input key and is published atomically
    (``report.json``, ``report.md``, plots), so an existing one is this evaluation, already done.
    """
    import shutil

    from eval.harness import write_outputs
    from eval.report import EvalReport
    from flows.distributed import prefect_executor

    done = eval_dir / "report.json"
    if done.exists() and not cfg.force:
        steps["evaluate-router"] = "cached"
        return EvalReport.model_validate_json(done.read_text())
    tmp = eval_dir.with_name(eval_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    champion_dir = None
    if champion:
        champion_dir = Path(
            fetch_champion_task(champion["version"], str(tmp / "champion_policy"), tracking_uri)
        )
    run = evaluate_challenger(
        router_cfg,
        Path(trained.policy_dir),
        champion_dir,
        list(cfg.eval_seeds),
        cfg.eval_requests,
        champion,
        executor=prefect_executor,
    )
    write_outputs(run, tmp)
    (tmp / "candidates.json").write_text(json.dumps(candidate_stats, indent=1))
    store_evaluation_task(run.report, router_cfg["warehouse"])
    shutil.rmtree(eval_dir, ignore_errors=True)
    tmp.rename(eval_dir)
    steps["evaluate-router"] = "ran"
    return run.report


def run_nightly(config: NightlyConfig | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """``nightly_retrain`` on the config's task runner (``loadwise run``)."""
    from flows.distributed import task_runner

    cfg = config or NightlyConfig()
    runner = task_runner(cfg.task_runner, n_workers=cfg.workers)
    return nightly_retrain.with_options(task_runner=runner)(cfg, tracking_uri)


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
    from prefect.artifacts import create_link_artifact

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
