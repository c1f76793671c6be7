"""Step 4 of the nightly flow, the router: ``train-router``, ``evaluate-router``, ``register-router``,
``promote-router``. Every run that retrains ends with a deployable ``llm-router`` champion when one
candidate deserves it.

Who calls this: the flow (``flows.nightly.flow``), once per run that retrains. The library calls are
``flows.models.router``'s (the same as ``loadwise train-router``'s), run as tasks of ``flows.tasks``:

- **train-router**: the guided-RL router on windows of the warehouse's production trace (``where``),
  one candidate per ``router_seeds`` submitted to the flow's task runner (``train-router-policy``,
  each cached on its config, data and source); the best on training-pool validation is kept. The
  night's candidates are that RL policy (``challenger``) and the tuned rules of
  ``flows.models.router.RULE_CANDIDATES`` (``rule-<rule>[+hold]``: the registry routers' rules as
  ``RulePolicy`` folders, the latency-aware one estimating with the impact estimator fitted this
  run). Skipped when the champion was chosen from these very candidates (``CANDIDATES_TAG``); a
  candidate identical to the champion (same data fingerprint) is not a candidate: it is the champion.
- **evaluate-router**: every candidate, the current champion (when it serves the same setting; its
  policy fetched from the registry) and every baseline on the same held-out windows and seeds: one
  ``eval.spec.EvalSpec`` whose replays are tasks on the flow's task runner. Content-addressed: the
  outputs are published atomically to ``$LOADWISE_HOME/nightly/evaluations/<key>``; the report is
  stored in ``marts.eval_results`` (``store-evaluation``).
- **register-router**: the night's best candidate (``flows.models.gate.choose_candidate``: lowest
  held-out mean E2E) as a new ``llm-router`` version, alias ``challenger`` (cached), whatever its
  kind: the same pyfunc, its kind in ``loadwise.policy``.
- **promote-router**: with no ``llm-router`` champion at all, ``first_champion_gate`` (the best
  candidate unless significantly worse than the best baseline); else the statistical gate
  (``eval.gate``: better mean E2E than the champion and the best baseline with a 95 % CI excluding
  zero, the confidence raised for having picked the best of k candidates, no worse p99). It moves
  ``champion`` by compare-and-set against the champion the evaluation saw, or says why not, and tags
  the version with why it was chosen. Never cached.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.spec import evaluate_spec
from flows import tasks
from flows.models.router import (
    CANDIDATES_TAG,
    CHOSEN_TAG,
    RouterCandidate,
    RouterChampion,
    rl_candidate,
    router_eval_spec,
    rule_candidates,
)
from flows.nightly.config import NightlyConfig
from flows.nightly.keys import FINGERPRINT_PREFIX, StepCache, step_key
from flows.nightly.results import CandidateFigures, CandidateStats, RouterOutcome, StepLog, StepOutcome
from flows.registry import CHAMPION, PromotionDecision, code_fingerprint

if TYPE_CHECKING:
    from eval.gate import GateResult
    from eval.report import EvalReport
    from training.rl.config import RouterTrainConfig
    from training.rl.policy_serving import LinearLatency
    from training.rl.train import TrainedRouter

CHALLENGER = "challenger"
"""The RL router trained tonight, in the evaluation report and the gate."""

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
    latency: LinearLatency | None = None,
) -> RouterOutcome:
    """Train the RL candidates (``configs``, by seed), package the rule candidates (``latency``: the
    model the latency-aware rule estimates with; ``None``: that rule is left out), evaluate them
    against ``champion`` (replayed only when ``comparable``) and every baseline, register the best,
    gate it and promote."""
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
    setting = next(iter(configs.values()))
    rules = rule_candidates(setting, latency, home / "router")
    candidates_key = step_key(
        "router-candidates",
        rl=train_key,
        rules=[r.fingerprint for r in rules],
        seeds=cfg.eval_seeds,
        n=cfg.eval_requests,
        gate=cfg.gate.model_dump(mode="json"),
    )
    if comparable is not None and not cfg.force:
        why = None
        if comparable.candidates == candidates_key:
            why = f"llm-router v{comparable.version} ({comparable.policy}), chosen from these candidates,"
        elif not rules and comparable.fingerprint == FINGERPRINT_PREFIX + train_key:
            why = f"llm-router v{comparable.version}, trained from these inputs,"
        if why is not None:
            log.skip(ROUTER_STEPS, f"{why} is already the champion")
            return RouterOutcome(challenger_version=comparable.version)
    trained, stats = train_candidates(configs, keys, home, cache, log)
    example = trained.policy_dir / "input_example.json"
    night = [
        rl_candidate(trained, CHALLENGER, FINGERPRINT_PREFIX + train_key),
        *rule_candidates(trained.config, latency, home / "router", example),
    ]
    champ_fp = comparable.fingerprint if comparable is not None else None
    candidates = [c for c in night if c.fingerprint != champ_fp]
    if not candidates:  # possible only with a champion: the one candidate is it
        assert comparable is not None
        why = f"the night's only candidate is the champion, llm-router v{comparable.version}"
        log.skip(ROUTER_STEPS[1:], why)
        return RouterOutcome(challenger_version=comparable.version)

    log.start("evaluate-router")
    eval_key = step_key(
        "evaluate",
        train=train_key,
        candidates=[c.fingerprint for c in candidates],
        champion=asdict(comparable) if comparable else None,
        seeds=cfg.eval_seeds,
        n=cfg.eval_requests,
    )
    eval_dir = home / "evaluations" / eval_key
    report = evaluate(candidates, trained.config, comparable, cfg, eval_dir, db, tracking_uri, log, stats)

    from flows.models.gate import choose_candidate

    names = [c.name for c in candidates]
    best, why = choose_candidate(report, names)
    chosen = next(c for c in candidates if c.name == best)
    others = tuple(n for n in names if n != best)
    print(f"router candidates: chose {why}")

    log.start("register-router")
    result = gate_candidate(report, chosen, others, champion, comparable, cfg)
    figures = candidate_figures(report, candidates, best, result)
    register_key = step_key(
        "register",
        candidate=chosen.fingerprint,
        models_code=code_fingerprint(("flows/models",)),
        **cache.inputs("router"),
    )
    register = cache.cached(tasks.register_router, register_key)
    state = register(
        chosen,
        report,
        tracking_uri,
        exclude=(CHAMPION, *others),
        gate=False,
        reports={"candidates.md": candidates_markdown(figures, why)},
        return_state=True,
    )
    published = state.result()
    log.ran("register-router", cached=state.name == "Cached")

    log.start("promote-router")
    expected = champion.version if champion else None  # the champion the run saw (compare-and-set)
    tags = {CHOSEN_TAG: why, CANDIDATES_TAG: candidates_key}
    decision = tasks.promote_router(published.version.version, result, tracking_uri, expected, tags)
    if result.passed and not decision.promoted:  # the champion moved since the evaluation
        result = result.model_copy(update={"passed": False, "reason": decision.reason})
    log.record(StepOutcome("promote-router", "promoted" if decision.promoted else "kept the champion"))
    print(f"gate: {result.reason}")
    judged = PromotionDecision(decision.promoted, result.reason, comparable.version if comparable else None)
    return RouterOutcome(
        published=replace(published, decision=judged),
        evaluation=report.summary(),
        evaluation_id=report.stored_id(),
        gate=result,
        promoted=decision.promoted,
        challenger_version=published.version.version,
        eval_dir=eval_dir,
        candidates=tuple(figures),
        chosen=best,
        chosen_policy=chosen.policy,
        chosen_why=why,
    )


def gate_candidate(
    report: EvalReport,
    chosen: RouterCandidate,
    others: tuple[str, ...],
    champion: RouterChampion | None,
    comparable: RouterChampion | None,
    cfg: NightlyConfig,
) -> GateResult:
    """The decision on the night's best candidate: ``first_champion_gate`` while ``llm-router`` has
    no champion; else the statistical gate against the comparable champion (if any) and the best
    baseline, its confidence raised for the choice among ``1 + len(others)`` candidates
    (``selection_adjusted``); a champion of another setting refuses whatever the figures say."""
    from eval.gate import promotion_gate
    from flows.models.gate import first_champion_gate, selection_adjusted

    if champion is None:
        return first_champion_gate(report, chosen.name, cfg.gate, exclude=others)
    gate_cfg = selection_adjusted(cfg.gate, 1 + len(others))
    result = promotion_gate(report, chosen.name, CHAMPION if comparable else None, gate_cfg, exclude=others)
    if champion.refusal is not None:  # a champion of another setting: never replaced automatically
        result = result.model_copy(update={"passed": False, "reason": f"{champion.refusal}; {result.reason}"})
    return result


def candidate_figures(
    report: EvalReport, candidates: list[RouterCandidate], chosen: str, gate: GateResult
) -> list[CandidateFigures]:
    """Every candidate's held-out figures (means over seeds) against the gate's best baseline."""
    summary = report.summary()
    best = summary[gate.best_baseline]
    rows = []
    for c in candidates:
        s = summary[c.name]
        mean, p99 = float(s["e2e_mean"] or 0.0), float(s["e2e_p99"] or 0.0)
        base = float(best["e2e_mean"] or 0.0)
        rows.append(
            CandidateFigures(
                name=c.name,
                policy=c.policy,
                description=c.description,
                mean_e2e_s=mean,
                p99_e2e_s=p99,
                vs_best_baseline_pct=100.0 * (base - mean) / base if base else float("nan"),
                chosen=c.name == chosen,
            )
        )
    return rows


def candidates_markdown(figures: list[CandidateFigures], why: str) -> str:
    """The candidates table (the version's ``reports/candidates.md`` and the run's report)."""
    lines = [
        "| candidate | policy | mean E2E (s) | p99 E2E (s) | vs best baseline (%) | chosen |",
        "|---|---|---|---|---|---|",
        *(
            f"| {f.name} | `{f.policy}` | {f.mean_e2e_s:.3f} | {f.p99_e2e_s:.2f} | "
            f"{f.vs_best_baseline_pct:+.1f} | {'**yes**' if f.chosen else ''} |"
            for f in figures
        ),
        "",
        f"Chosen: {why}.",
    ]
    return "\n".join(lines) + "\n"


PROGRESS_EVERY_S = 2.0
"""How often the flow reads the RL candidates' training logs for ``train-router``'s progress."""


def wait_reporting(futures: list[Any], report: Callable[[], None], every_s: float = PROGRESS_EVERY_S) -> None:
    """Wait for every future, calling ``report`` before each wait of at most ``every_s``. The
    pending list is taken once per pass: a future can finish between two reads of its state (a
    second read that finds nothing pending once failed a CI run with ``StopIteration``)."""
    while pending := [f for f in futures if not f.state.is_final()]:
        report()
        pending[0].wait(timeout=every_s)


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
    dirs = [home / "router" / keys[seed] for seed in configs]
    total = sum(c.total_timesteps for c in configs.values())
    wait_reporting(
        list(futures.values()),
        lambda: log.progress("train-router", min(total, sum(trained_steps(d) for d in dirs)), total, "steps"),
    )
    log.progress("train-router", total, total, "steps")
    results: dict[int, TrainedRouter] = {}
    states = []
    for seed, future in futures.items():
        states.append(future.state.name)
        results[seed] = in_this_home(future.result(), home / "router" / keys[seed])
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


def in_this_home(trained: TrainedRouter, out: Path) -> TrainedRouter:
    """``trained`` with its folders in this data home. A cached training result names its policy
    folder and its warehouse by absolute path; the step's cache key does not depend on where the home
    is (``flows.nightly.keys.home_relative``), so in a home that was moved since (the old folder gone)
    a cache hit names folders that are no longer there: here they become the same folders under this
    home (``out``: this run's output folder for the training, ``<home>/nightly/router/<key>``).
    Unchanged when the policy folder exists (the usual case, and a copied home)."""
    old = trained.policy_dir
    if old.exists() or out.name not in old.parts:
        return trained
    i = len(old.parts) - 1 - old.parts[::-1].index(out.name)
    moved = out.joinpath(*old.parts[i + 1 :])
    old_home, new_home = Path(*old.parts[: i + 1]).parents[2], out.parents[2]
    cfg = trained.config
    if cfg.warehouse and Path(cfg.warehouse).is_relative_to(old_home):
        cfg = cfg.model_copy(update={"warehouse": str(new_home / Path(cfg.warehouse).relative_to(old_home))})
    return replace(trained, policy_dir=moved, config=cfg)


def trained_steps(out_dir: Path) -> int:
    """Environment steps a candidate trained so far: the ``step`` of the last line of its
    ``train_log.jsonl`` (one line per episode, flushed; ``training.rl.train``), 0 before the first
    episode or when the log is not there (a cached candidate). Reads the file's tail only."""
    path = out_dir / "train_log.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the seek, or still being written
    return 0


def counting_executor(log: StepLog, step: str) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """``flows.distributed.prefect_executor`` that reports each finished replay to ``log``."""

    def execute(fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        futures = tasks.replay.map(fn, jobs)
        log.progress(step, 0, len(jobs), "replays")
        for done, future in enumerate(futures, 1):  # in job order: any task runner's futures
            future.wait()
            log.progress(step, done, len(jobs), "replays")
        return [f.result() for f in futures]

    return execute


def evaluate(
    candidates: list[RouterCandidate],
    setting: RouterTrainConfig,
    champion: RouterChampion | None,
    cfg: NightlyConfig,
    eval_dir: Path,
    db: str,
    tracking_uri: str | None,
    log: StepLog,
    rl_stats: list[CandidateStats],
) -> EvalReport:
    """The candidates vs ``champion`` (when given) and every baseline on the held-out windows of
    ``setting``; the replays on the flow's task runner.

    Content-addressed: ``eval_dir`` is named by the step's input key and is published atomically
    (``report.json``, ``report.md``, plots, ``candidates.json``: the RL candidates' training
    figures), so an existing one is this evaluation, already done.
    """
    from eval.report import EvalReport
    from eval.spec import LearnedPolicy

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
    first, *rest = candidates
    spec = router_eval_spec(
        setting,
        first.policy_dir,
        cfg.eval_seeds,
        name=first.name,
        description=first.description if first.name != CHALLENGER else "the RL router trained tonight",
        requests=cfg.eval_requests,
        champion=champion,
        champion_dir=champion_dir,
    )
    learned = dict(spec.learned)
    for c in rest:
        learned[c.name] = LearnedPolicy(policy_dir=c.policy_dir, description=c.description)
    spec = spec.model_copy(update={"learned": learned})
    report = evaluate_spec(spec, out_dir=tmp, executor=counting_executor(log, "evaluate-router"))
    (tmp / "candidates.json").write_text(json.dumps([asdict(st) for st in rl_stats], indent=1))
    tasks.store_evaluation(report, db)
    shutil.rmtree(eval_dir, ignore_errors=True)
    tmp.rename(eval_dir)
    log.ran("evaluate-router", cached=False)
    return report
