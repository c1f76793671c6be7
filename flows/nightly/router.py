"""Step 4 of the nightly flow, the router: ``train-router``, ``evaluate-router``, ``register-router``,
``promote-router``.

Who calls this: the flow (``flows.nightly.flow``), once per run that retrains. The library calls are
``flows.models.router``'s (the same as ``loadwise train-router``'s), run as tasks of ``flows.tasks``:

- **train-router**: the guided-RL router on windows of the warehouse's production trace (``where``),
  one candidate per ``router_seeds`` submitted to the flow's task runner (``train-router-policy``,
  each cached on its config, data and source); the best on training-pool validation is kept.
  Skipped when the version trained from these inputs already is the champion.
- **evaluate-router**: the challenger, the current champion (when it serves the same setting; its
  policy fetched from the registry) and every baseline on the same held-out windows and seeds: one
  ``eval.spec.EvalSpec`` whose replays are tasks on the flow's task runner. Content-addressed: the
  outputs are published atomically to ``$LOADWISE_HOME/nightly/evaluations/<key>``; the report is
  stored in ``marts.eval_results`` (``store-evaluation``).
- **register-router**: a new ``llm-router`` version, alias ``challenger`` (cached).
- **promote-router**: the statistical gate (``eval.gate``: better mean E2E than the champion and the
  best baseline with a 95 % CI excluding zero, no worse p99) moves ``champion`` by compare-and-set
  against the champion the evaluation saw, or says why not. Never cached.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from eval.spec import evaluate_spec
from flows import tasks
from flows.models.router import RouterChampion, registered_router, router_eval_spec
from flows.nightly.config import NightlyConfig
from flows.nightly.keys import FINGERPRINT_PREFIX, StepCache, step_key
from flows.nightly.results import CandidateStats, RouterOutcome, StepLog, StepOutcome
from flows.registry import CHAMPION, ModelRegistry, PromotionDecision

if TYPE_CHECKING:
    from eval.report import EvalReport
    from training.rl.config import RouterTrainConfig
    from training.rl.train import TrainedRouter

CHALLENGER = "challenger"
"""The router trained tonight, in the evaluation report and the gate."""

ROUTER_STEPS = ("train-router", "evaluate-router", "register-router", "promote-router")


def router_steps(
    cfg: NightlyConfig,
    db: str,
    home: Path,
    configs: dict[int, RouterTrainConfig],
    champion: RouterChampion | None,
    cache: StepCache,
    log: StepLog,
    tracking_uri: str | None,
) -> RouterOutcome:
    """Train the candidates (``configs``, by seed), evaluate the best against ``champion`` (replayed
    only when ``comparable``) and every baseline, register it, run the gate and promote."""
    from eval.gate import promotion_gate
    from warehouse.ops import data_fingerprint

    comparable = champion if champion is not None and champion.comparable else None
    log.start("train-router")
    data = data_fingerprint(db, cfg.where)
    keys = {
        seed: step_key("router", config=c.model_dump(mode="json"), data=data, **cache.inputs("router"))
        for seed, c in configs.items()
    }
    first = next(iter(keys.values()))
    train_key = first if len(keys) == 1 else step_key("router-best-of", candidates=keys)
    existing = registered_router(ModelRegistry(tracking_uri), FINGERPRINT_PREFIX + train_key)
    if existing is not None and comparable and existing.version == comparable.version and not cfg.force:
        why = f"llm-router v{existing.version}, trained from these inputs, is already the champion"
        log.skip(ROUTER_STEPS, why)
        return RouterOutcome(challenger_version=existing.version)
    trained, stats = train_candidates(configs, keys, home, cache, log)

    log.start("evaluate-router")
    eval_key = step_key(
        "evaluate",
        train=train_key,
        champion=asdict(comparable) if comparable else None,
        seeds=cfg.eval_seeds,
        n=cfg.eval_requests,
    )
    eval_dir = home / "evaluations" / eval_key
    report = evaluate(trained, comparable, cfg, eval_dir, db, tracking_uri, log, stats)

    log.start("register-router")
    register = cache.cached(tasks.register_router, f"register-{train_key}")
    state = register(
        trained,
        report,
        tracking_uri,
        learned=CHALLENGER,
        exclude=(CHAMPION,),
        gate=False,
        data_fingerprint=FINGERPRINT_PREFIX + train_key,
        return_state=True,
    )
    published = state.result()
    log.ran("register-router", cached=state.name == "Cached")

    log.start("promote-router")
    result = promotion_gate(report, CHALLENGER, CHAMPION if comparable else None, cfg.gate)
    refusal = champion.refusal if champion is not None else None
    if refusal is not None:  # a champion of another setting: never replaced automatically
        result = result.model_copy(update={"passed": False, "reason": f"{refusal}; {result.reason}"})
    expected = champion.version if champion else None  # the champion the run saw (compare-and-set)
    decision = tasks.promote_router(published.version.version, result, tracking_uri, expected)
    if result.passed and not decision.promoted:  # the champion moved since the evaluation
        result = result.model_copy(update={"passed": False, "reason": decision.reason})
    log.record(StepOutcome("promote-router", "promoted" if decision.promoted else "kept the champion"))
    print(f"gate: {result.reason}")
    judged = PromotionDecision(decision.promoted, result.reason, comparable.version if comparable else None)
    return RouterOutcome(
        published=replace(published, decision=judged),
        evaluation=report.summary(),
        gate=result,
        promoted=decision.promoted,
        challenger_version=published.version.version,
        eval_dir=eval_dir,
    )


def train_candidates(
    configs: dict[int, RouterTrainConfig],
    keys: dict[int, str],
    home: Path,
    cache: StepCache,
    log: StepLog,
) -> tuple[TrainedRouter, list[CandidateStats]]:
    """Train one router per candidate config, submitted to the flow's task runner (side by side on a
    Dask cluster; one at a time within a process, ``flows.models.router._TRAINING``); returns the one
    with the best validation mean E2E (on TRAINING-pool windows: the held-out windows stay unseen
    until the evaluation) and every candidate's figures (artifact ``nightly-router-candidates``)."""
    from prefect.artifacts import create_table_artifact

    futures = {
        seed: cache.cached(tasks.train_router_policy, keys[seed]).submit(c, str(home / "router" / keys[seed]))
        for seed, c in configs.items()
    }
    results: dict[int, TrainedRouter] = {}
    states = []
    for seed, future in futures.items():
        future.wait()
        states.append(future.state.name)
        results[seed] = future.result()
    stats = [
        CandidateStats(
            seed=seed,
            best_validation_e2e_s=float(r.train_stats.get("best_validation_e2e_s", float("inf"))),
            steps_per_s=float(r.train_stats.get("steps_per_s", 0.0)),
            wall_s=float(r.train_stats.get("wall_s", 0.0)),
        )
        for seed, r in results.items()
    ]
    best = min(stats, key=lambda st: st.best_validation_e2e_s).seed
    create_table_artifact(
        [{**asdict(st), "chosen": st.seed == best} for st in stats],
        key="nightly-router-candidates",
        description="RL router candidates: validation mean E2E on training-pool windows",
    )
    log.record(StepOutcome("train-router", "cached" if all(n == "Cached" for n in states) else "ran"))
    if len(results) > 1:
        print(f"router candidates (validation mean E2E): {[asdict(st) for st in stats]}; chose seed {best}")
    return results[best], stats


def evaluate(
    trained: TrainedRouter,
    champion: RouterChampion | None,
    cfg: NightlyConfig,
    eval_dir: Path,
    db: str,
    tracking_uri: str | None,
    log: StepLog,
    candidates: list[CandidateStats],
) -> EvalReport:
    """The challenger vs ``champion`` (when given) and every baseline on the held-out windows; the
    replays on the flow's task runner.

    Content-addressed: ``eval_dir`` is named by the step's input key and is published atomically
    (``report.json``, ``report.md``, plots, ``candidates.json``), so an existing one is this
    evaluation, already done.
    """
    from eval.report import EvalReport
    from flows.distributed import prefect_executor

    done = eval_dir / "report.json"
    if done.exists() and not cfg.force:
        log.ran("evaluate-router", cached=True)
        return EvalReport.model_validate_json(done.read_text())
    tmp = eval_dir.with_name(eval_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    champion_dir = None
    if champion is not None:
        champion_dir = Path(
            tasks.fetch_router_policy(champion.version, str(tmp / "champion_policy"), tracking_uri)
        )
    spec = router_eval_spec(
        trained.config,
        trained.policy_dir,
        cfg.eval_seeds,
        name=CHALLENGER,
        description="the RL router trained tonight",
        requests=cfg.eval_requests,
        champion=champion,
        champion_dir=champion_dir,
    )
    report = evaluate_spec(spec, out_dir=tmp, executor=prefect_executor)
    (tmp / "candidates.json").write_text(json.dumps([asdict(st) for st in candidates], indent=1))
    tasks.store_evaluation(report, db)
    shutil.rmtree(eval_dir, ignore_errors=True)
    tmp.rename(eval_dir)
    log.ran("evaluate-router", cached=False)
    return report
