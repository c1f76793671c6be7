"""The ``llm-router`` job: train the RL router, evaluate it with the champion and every baseline,
register, gate.

Who calls this: ``loadwise train-router`` (directly, or with ``--flow`` through the ``train-router``
flow) and the nightly flow's router steps (``flows.nightly.router``: the training, champion lookup,
evaluation and registration below, as tasks of ``flows.tasks``), once per run.

- **Train** (``train_router_policy``): the guided-RL router on episodes from the setting's TRAINING
  pool (``training.workloads.episodes``), one training per process at a time.
- **Champion** (``find_router_champion``): the current ``llm-router`` champion and whether it was
  trained for the same setting (``ROUTER_SETTING_KEYS``); a champion of another setting is neither
  replayed nor replaced automatically (``RouterChampion.refusal``).
- **Evaluate** (``evaluate_router``): the policy, the comparable champion (its policy downloaded,
  ``fetch_router_policy``) and every baseline on the same held-out replays and seeds: one
  ``eval.spec.EvalSpec`` with two learned policies.
- **Register** (``register_router``): a new version (alias ``challenger``) with the evaluation report;
  with ``gate`` the statistical gate (``eval.gate.promotion_gate``) decides the move
  (``flows.models.gate.gate_router``).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flows.models.gate import LLM_ROUTER, gate_router
from flows.models.publish import Published, publish
from flows.registry import (
    CHAMPION,
    TAG_PREFIX,
    ModelPackage,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
)

if TYPE_CHECKING:
    from eval.report import EvalReport
    from eval.spec import EvalSpec
    from training.rl.config import RouterTrainConfig
    from training.rl.train import TrainedRouter

ROUTER_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""The router's pyfunc runs the exported numpy policy: no torch or stable-baselines3 at serving."""

ROUTER_SETTING_KEYS = ("workload", "where", "profile", "num_instances", "chunked_prefill_tokens")
"""``RouterTrainConfig`` keys of the setting a policy was trained for (trace, GPU profile, instance
count, chunked prefill): a policy of another setting is not a comparable champion (here and in the
nightly flow, which replays a comparable champion on its own windows)."""

_TRAINING = threading.Lock()
"""One training per process at a time: stable-baselines3 seeds torch's and numpy's global RNGs, so
two trainings in threads of one process would interleave draws and lose bit-for-bit reproducibility
(measured: a thread-pool run of two candidates differed from a Dask run under load)."""


def router_config(config: RouterTrainConfig | Mapping[str, Any] | None) -> RouterTrainConfig:
    """``config`` as a validated ``RouterTrainConfig`` (a mapping: its fields; ``None``: the defaults)."""
    from training.rl.config import RouterTrainConfig

    return RouterTrainConfig.model_validate(config or {})


def default_router_dir(cfg: RouterTrainConfig) -> Path:
    """Where ``loadwise train-router`` writes a training: ``$LOADWISE_HOME/rl/<variant>-<algo>-seed<n>``."""
    from warehouse.settings import loadwise_home

    return loadwise_home() / "rl" / f"{cfg.variant}-{cfg.algo}-seed{cfg.seed}"


def train_router_policy(cfg: RouterTrainConfig, out_dir: Path, progress: bool = True) -> TrainedRouter:
    """Train the RL router on windows of the setting's TRAINING pool (``train_router`` over an
    ``episode_sampler``); writes under ``out_dir``. Trainings of one process take turns (``_TRAINING``)."""
    from training.rl.train import train_router
    from training.workloads.episodes import episode_sampler

    with _TRAINING:
        return train_router(cfg, episode_sampler(cfg), Path(out_dir), progress=progress)


@dataclass(frozen=True)
class RouterChampion:
    """The current ``llm-router`` champion: its version and run, the setting it was trained for
    (``ROUTER_SETTING_KEYS`` of its ``loadwise.config`` tag; a key missing in an older version:
    ``None``) and whether that is the setting being evaluated (``comparable``)."""

    version: str
    run_id: str
    setting: dict[str, object]
    comparable: bool

    @property
    def refusal(self) -> str | None:
        """Why the gate must refuse whatever the figures say (a champion of another setting), else None."""
        if self.comparable:
            return None
        return (
            f"not promoted: the champion v{self.version} serves another setting ({self.setting}); "
            "replace it by hand (loadwise promote --force) after review"
        )

    @property
    def description(self) -> str:
        """The champion's line in evaluation reports."""
        return f"{LLM_ROUTER} v{self.version} (champion)"


def router_setting(config: Mapping[str, object]) -> dict[str, object]:
    """The ``ROUTER_SETTING_KEYS`` of a router config (``None`` where it has no such key)."""
    return {k: config.get(k) for k in ROUTER_SETTING_KEYS}


def find_router_champion(registry: ModelRegistry, cfg: RouterTrainConfig) -> RouterChampion | None:
    """The current ``llm-router`` champion compared with setting ``cfg`` (``None``: there is none).
    A store error raises: it must not read as "no champion"."""
    from flows.registry import _config

    found = registry.find(LLM_ROUTER, CHAMPION)
    if found is None:
        return None
    theirs = router_setting(_config(found))
    ours = router_setting(cfg.model_dump(mode="json"))
    return RouterChampion(found.version, found.run_id, theirs, comparable=theirs == ours)


def registered_router(registry: ModelRegistry, data_fingerprint: str) -> RegisteredVersion | None:
    """The ``llm-router`` version registered with ``loadwise.data_fingerprint = data_fingerprint``
    (``None``: none). A store error raises (no guess)."""
    tag = f"{TAG_PREFIX}data_fingerprint"
    return next((v for v in registry.versions(LLM_ROUTER) if v.tags.get(tag) == data_fingerprint), None)


def fetch_router_policy(registry: ModelRegistry, version: str, dst: Path) -> Path:
    """Download ``llm-router`` ``version``'s policy folder under ``dst``; returns the folder."""
    return registry.download_artifact(LLM_ROUTER, version, "policy_dir", Path(dst))


def router_eval_spec(
    cfg: RouterTrainConfig,
    policy_dir: Path,
    seeds: Sequence[int],
    *,
    name: str = "rl",
    description: str | None = None,
    requests: int | None = None,
    champion: RouterChampion | None = None,
    champion_dir: Path | None = None,
) -> EvalSpec:
    """The router's evaluation: every baseline, the policy (as router ``name``) and, with
    ``champion_dir``, the champion (router ``champion``) on the setting's held-out replays."""
    from eval.spec import EvalSpec, LearnedPolicy

    learned = {name: LearnedPolicy(policy_dir=Path(policy_dir), description=description)}
    if champion_dir is not None:
        what = champion.description if champion else f"{LLM_ROUTER} (champion)"
        learned[CHAMPION] = LearnedPolicy(policy_dir=Path(champion_dir), description=what)
    return EvalSpec.for_setting(cfg, seeds, requests=requests, learned=learned)


def evaluate_router(
    trained: TrainedRouter,
    seeds: Sequence[int],
    *,
    champion: RouterChampion | None = None,
    champion_dir: Path | None = None,
    out_dir: Path | None = None,
) -> EvalReport:
    """``loadwise train-router``'s evaluation (``router_eval_spec``: the policy as ``rl``); report,
    markdown and plots under ``out_dir``."""
    from eval.spec import evaluate_spec

    spec = router_eval_spec(
        trained.config, trained.policy_dir, seeds, champion=champion, champion_dir=champion_dir
    )
    return evaluate_spec(spec, out_dir=out_dir)


def router_metrics(
    report: EvalReport, learned: str = "rl", exclude: tuple[str, ...] = ()
) -> dict[str, float]:
    """Headline metrics of the learned router from an evaluation report (seconds, %); routers in
    ``exclude`` (e.g. the champion) are not baselines."""
    summary = report.summary()
    ours = summary[learned]
    baselines = {n: s for n, s in summary.items() if n != learned and n not in exclude and not s["oracle"]}
    best_name = min(baselines, key=lambda n: _num(baselines[n]["e2e_mean"]))
    best = baselines[best_name]
    metrics = {
        "mean_e2e_s": _num(ours["e2e_mean"]),
        "p50_e2e_s": _num(ours["e2e_p50"]),
        "p99_e2e_s": _num(ours["e2e_p99"]),
        "mean_ttft_s": _num(ours["ttft_mean"]),
        "best_baseline_mean_e2e_s": _num(best["e2e_mean"]),
        "vs_best_baseline_pct": 100.0
        * (_num(best["e2e_mean"]) - _num(ours["e2e_mean"]))
        / _num(best["e2e_mean"]),
    }
    if ours["vs_round_robin_pct"] is not None:
        metrics["improvement_vs_round_robin_pct"] = _num(ours["vs_round_robin_pct"])
    return metrics


def _num(value: float | bool | None) -> float:
    return cast(float, value)


def router_data_fingerprint(trained: TrainedRouter, report: EvalReport) -> str:
    """What the router learned from: the warehouse files' content hashes for ``workload = warehouse``
    (``warehouse.ops.data_fingerprint``), else the named workload and whether its data was synthetic."""
    cfg = trained.config
    if cfg.workload == "warehouse":
        from warehouse.ops import data_fingerprint
        from warehouse.settings import default_warehouse_path

        data = data_fingerprint(cfg.warehouse or default_warehouse_path(), cfg.where)
        return f"warehouse:{data}"
    return f"workload={cfg.workload};synthetic={report.synthetic};{report.workload_description}"


def register_router(
    trained: TrainedRouter,
    report: EvalReport,
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
    it) against router ``champion`` when the report has one (``evaluate_router``) and the best
    baseline (``exclude``: not baselines); the move is a compare-and-set against ``champion`` (the
    version replayed, or seen when there was nothing comparable to replay). ``refusal``: a reason the
    gate must refuse whatever the figures say (``RouterChampion.refusal``)."""
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

    decider: Callable[[RegisteredVersion], PromotionDecision] | None = decide if gate else None
    return publish(registry, pkg, report_md, decider)


def train_and_register_router(
    config: RouterTrainConfig | Mapping[str, Any] | None,
    registry: ModelRegistry | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
) -> tuple[Published, EvalReport]:
    """The ``loadwise train-router`` job: probe the registry, train, evaluate against every baseline
    and the comparable champion (replayed on the same windows), register, gate. The training and its
    evaluation (``eval/``) are written under ``default_router_dir``."""
    registry = registry or ModelRegistry()
    registry.check()
    cfg = router_config(config)
    out = default_router_dir(cfg)
    trained = train_router_policy(cfg, out, progress=progress)
    champion = find_router_champion(registry, cfg)
    with tempfile.TemporaryDirectory(prefix="loadwise-champion-") as tmp:
        champion_dir = None
        if champion is not None and champion.comparable:
            champion_dir = fetch_router_policy(registry, champion.version, Path(tmp))
        report = evaluate_router(
            trained, seeds, champion=champion, champion_dir=champion_dir, out_dir=out / "eval"
        )
    published = register_router(
        trained,
        report,
        registry,
        champion=champion.version if champion else None,
        refusal=champion.refusal if champion else None,
    )
    return published, report
