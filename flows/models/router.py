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
- **Candidates** (the nightly flow): the RL policy and the tuned rules (``RULE_CANDIDATES``:
  ``training.rl.policy_serving.RulePolicy``, the registry routers' rules with the impact estimator's
  latency model) as ``RouterCandidate``s, all packaged as the same ``llm-router`` pyfunc
  (``register_candidate``: one input schema, the ``policy`` kind on the version, ``POLICY_TAG``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from flows.models.gate import LLM_ROUTER, gate_router
from flows.models.publish import Published, publish
from flows.registry import (
    CHAMPION,
    TAG_PREFIX,
    ModelPackage,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    TrainingData,
)

if TYPE_CHECKING:
    from eval.report import EvalReport
    from eval.spec import EvalSpec
    from training.rl.config import RouterTrainConfig
    from training.rl.policy_serving import LinearLatency
    from training.rl.train import TrainedRouter

ROUTER_REQUIREMENTS = ["mlflow-skinny==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
"""The router's pyfunc runs the exported numpy policy: no torch or stable-baselines3 at serving, and
MLflow's client only (``mlflow-skinny``: ``mlflow.pyfunc`` without the server, UI and their
dependencies; docs/operations.md measures the install)."""

POLICY_TAG = f"{TAG_PREFIX}policy"
"""On an ``llm-router`` version: what it is, ``rl`` or ``rule:<name>`` (its parameters are in its config
and ``policy_dir/rule_policy.json``). Versions registered before it are ``rl``."""
CHOSEN_TAG = f"{TAG_PREFIX}chosen"
"""On a version the nightly flow chose among its candidates: why (``flows.models.gate.choose_candidate``)."""
CANDIDATES_TAG = f"{TAG_PREFIX}nightly.candidates"
"""On that version: the key of the candidates it was chosen from (a run with the same key skips)."""

RULE_CANDIDATES: tuple[tuple[str, float | None], ...] = (
    ("workload_impact_greedy", None),
    ("workload_impact_greedy", 0.10),
    ("least_tokens", 0.10),
)
"""The tuned rules the nightly flow packages and evaluates next to its RL policies: (rule, KV headroom
of ``+hold`` or ``None``). The best latency-aware placement rule with and without admission control,
and the best load-only one with it (docs/evaluation.md: on memory-bound settings it leads); the
headroom is the ``+hold`` routers' default (``training.routing.admission.DEFAULT_HEADROOM``)."""

ROUTER_SETTING_KEYS = ("workload", "where", "profile", "num_instances", "chunked_prefill_tokens")
"""``RouterTrainConfig`` keys of the setting a policy was trained for (trace, GPU profile, instance
count, chunked prefill): a policy of another setting is not a comparable champion (here and in the
nightly flow, which replays a comparable champion on its own windows)."""

ROUTER_SCOPES: Mapping[str, Mapping[str, object]] = {
    "paper-main": {
        "workload": "main",
        "profile": "v100-llama2-7b-paper",
        "num_instances": 4,
        "rate_rps": 20.0,
        "chunked_prefill_tokens": None,
    },
}
"""The setting each setting alias (``flows.registry.SETTING_ALIASES``) is the champion of: the
``RouterTrainConfig`` values a version must have been trained with to be gated for it
(``scope_refusal``). ``paper-main``: the paper's main setting (docs/evaluation.md), where
``loadwise compare --routers all,llm-router@paper-main --workload main`` judges it."""

_TRAINING = threading.Lock()
"""One training per process at a time: stable-baselines3 seeds torch's and numpy's global RNGs, so
two trainings in threads of one process would interleave draws and lose bit-for-bit reproducibility
(measured: a thread-pool run of two candidates differed from a Dask run under load)."""


def router_config(config: RouterTrainConfig | Mapping[str, Any] | None) -> RouterTrainConfig:
    """``config`` as a validated ``RouterTrainConfig`` (a mapping: its fields; ``None``: the defaults)."""
    from training.rl.config import RouterTrainConfig

    return RouterTrainConfig.model_validate(config or {})


def default_router_dir(cfg: RouterTrainConfig) -> Path:
    """Where ``loadwise train-router`` writes a training: ``$LOADWISE_HOME/rl/<variant>-<algo>-seed<n>``
    (``distill-<variant>-...`` for ``method = "distill"``)."""
    from warehouse.settings import loadwise_home

    method = "distill-" if cfg.method == "distill" else ""
    return loadwise_home() / "rl" / f"{method}{cfg.variant}-{cfg.algo}-seed{cfg.seed}"


def train_router_policy(cfg: RouterTrainConfig, out_dir: Path, progress: bool = True) -> TrainedRouter:
    """Train the RL router on windows of the setting's TRAINING pool (``train_router`` over an
    ``episode_sampler``; ``cfg.method == "distill"``: ``distill_router``, issue 17); writes under
    ``out_dir``. Trainings of one process take turns (``_TRAINING``)."""
    from training.workloads.episodes import episode_sampler

    if cfg.method == "distill":
        from training.rl.distill import distill_router as train
    else:
        from training.rl.train import train_router as train
    with _TRAINING:
        return train(cfg, episode_sampler(cfg), Path(out_dir), progress=progress)


@dataclass(frozen=True)
class RouterChampion:
    """The current ``llm-router`` champion: its version and run, the setting it serves
    (``ROUTER_SETTING_KEYS`` of its ``loadwise.config`` tag; a key missing in an older version:
    ``None``), whether that is the setting being evaluated (``comparable``), and what it is."""

    version: str
    run_id: str
    setting: dict[str, object]
    comparable: bool
    policy: str = "rl"
    """Its ``POLICY_TAG`` (``rl`` for versions registered before the tag)."""
    fingerprint: str | None = None
    """Its ``loadwise.data_fingerprint`` tag: a candidate with the same one is the champion."""
    candidates: str | None = None
    """Its ``CANDIDATES_TAG``: the key of the nightly candidates it was chosen from."""
    alias: str = CHAMPION
    """The gated alias it holds (``champion`` or a setting alias)."""

    @property
    def refusal(self) -> str | None:
        """Why the gate must refuse whatever the figures say (a champion of another setting), else None."""
        if self.comparable:
            return None
        return (
            f"not promoted: the {self.alias} v{self.version} serves another setting ({self.setting}); "
            "replace it by hand (loadwise promote --force) after review"
        )

    @property
    def description(self) -> str:
        """The champion's line in evaluation reports."""
        return f"{LLM_ROUTER} v{self.version} ({self.alias}, {self.policy})"


def router_setting(config: Mapping[str, object]) -> dict[str, object]:
    """The ``ROUTER_SETTING_KEYS`` of a router config (``None`` where it has no such key)."""
    return {k: config.get(k) for k in ROUTER_SETTING_KEYS}


def scope_refusal(alias: str, config: Mapping[str, object]) -> str | None:
    """Why a router trained with ``config`` may not hold setting alias ``alias`` (its
    ``ROUTER_SCOPES`` values differ), else ``None``; ``champion`` has no declared scope (the nightly
    keeps it to one setting through ``RouterChampion.refusal``). An alias without a scope: a
    ``ValueError`` (a registry constant out of step with this table)."""
    if alias == CHAMPION:
        return None
    if alias not in ROUTER_SCOPES:
        raise ValueError(f"setting alias {alias!r} has no scope in ROUTER_SCOPES")
    differ = {k: config.get(k) for k, v in ROUTER_SCOPES[alias].items() if config.get(k) != v}
    if not differ:
        return None
    return (
        f"not promoted: {LLM_ROUTER}@{alias} is the champion of {dict(ROUTER_SCOPES[alias])}; this version "
        f"was trained with {differ}"
    )


def check_scope(alias: str, cfg: RouterTrainConfig) -> None:
    """Before any training: ``RegistryError`` for an alias the gate does not move, ``ValueError`` for
    a setting alias whose scope ``cfg`` is outside (``scope_refusal``)."""
    from flows.registry import check_gated_alias

    check_gated_alias(alias)
    outside = scope_refusal(alias, cfg.model_dump(mode="json"))
    if outside is not None:
        raise ValueError(outside.removeprefix("not promoted: "))


def find_router_champion(
    registry: ModelRegistry, cfg: RouterTrainConfig, alias: str = CHAMPION
) -> RouterChampion | None:
    """The version holding gated ``alias`` (``champion``, or a setting alias such as ``paper-main``)
    compared with setting ``cfg`` (``None``: there is none). A store error raises: it must not read
    as "no champion"."""
    from flows.registry import _config

    found = registry.find(LLM_ROUTER, alias)
    if found is None:
        return None
    theirs = router_setting(_config(found))
    ours = router_setting(cfg.model_dump(mode="json"))
    return RouterChampion(
        found.version,
        found.run_id,
        theirs,
        comparable=theirs == ours,
        policy=found.tags.get(POLICY_TAG, "rl"),
        fingerprint=found.tags.get(f"{TAG_PREFIX}data_fingerprint"),
        candidates=found.tags.get(CANDIDATES_TAG),
        alias=alias,
    )


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


@dataclass(frozen=True)
class RouterCandidate:
    """One router the nightly flow (or ``loadwise train-router``) may register: an RL policy or a
    tuned rule, as a policy folder the ``llm-router`` pyfunc serves.

    Attributes:
        name: its router name in the evaluation report (``challenger``, ``rule-<rule>[+hold]``).
        policy: the ``policy`` kind recorded on the version (``POLICY_TAG``): ``rl`` or ``rule:<name>``.
        policy_dir: the folder logged as the model's ``policy_dir`` artifact (``obs_spec.json``, the
            weights or ``rule_policy.json``, ``input_example.json``: one real snapshot row).
        config: the config logged with the version (RL: ``RouterTrainConfig``; a rule: the setting's
            keys, ``policy`` and the rule's parameters).
        fingerprint: the version's data fingerprint (a rule's: of its config; an identical one is the
            same model, not registered again).
        description: one line for the registry and the reports.
        train_stats: numeric training figures (logged as ``train.*`` metrics; none for a rule).
        checkpoint: the RL training's stable-baselines3 model (``checkpoints/final_model.zip``), kept
            with the version's run (not loaded by the pyfunc: serving runs the exported numpy policy);
            ``None`` for a rule.
    """

    name: str
    policy: str
    policy_dir: Path
    config: dict[str, Any]
    fingerprint: str
    description: str
    train_stats: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None

    def input_example(self) -> np.ndarray:
        """The snapshot row of ``input_example.json`` as the serving tensor: float64 (1, C) in
        ``snapshot_columns`` order (the registered signature: a tensor MLflow checks in ~0.05 ms,
        not ~C named columns in ~5 ms)."""
        from training.rl.policy_serving import load_policy

        d = json.loads((self.policy_dir / "input_example.json").read_text())
        frame = pd.DataFrame([d["values"]], columns=d["columns"])
        columns = list(load_policy(self.policy_dir).columns)
        return frame[columns].to_numpy(dtype=np.float64)


def rl_candidate(
    trained: TrainedRouter, name: str = "rl", fingerprint: str | None = None, report: EvalReport | None = None
) -> RouterCandidate:
    """A trained RL policy as a candidate (``fingerprint``: default ``router_data_fingerprint``)."""
    cfg = trained.config
    if fingerprint is None:
        if report is None:
            raise ValueError("an RL candidate needs its fingerprint or the report it was evaluated in")
        fingerprint = router_data_fingerprint(trained, report)
    return RouterCandidate(
        name=name,
        policy="rl",
        policy_dir=Path(trained.policy_dir),
        config=cfg.model_dump(mode="json"),
        fingerprint=fingerprint,
        description=f"{cfg.variant} RL router ({cfg.algo}) for {cfg.num_instances} x {cfg.profile}",
        train_stats={k: float(v) for k, v in trained.train_stats.items() if isinstance(v, int | float)},
        checkpoint=_existing(Path(trained.policy_dir).parent / "checkpoints" / "final_model.zip"),
    )


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


TRAINING_DATA_KEYS = ("workload", "where", "warehouse", "rate_rps", "episode_requests", "num_instances")
"""The config keys that pick a router's training requests (``training.workloads.episodes.workload_for``)."""


def router_training_data(config: Mapping[str, Any]) -> TrainingData:
    """The training pool a router of ``config``'s setting learns from (its episodes are windows of
    it), as the version's input dataset: one row per request (``request_id``, ``arrival_s``,
    ``prompt_tokens``, ``output_tokens``, ``task``, ``row_id``: the ``marts.requests`` row it replays).
    Source: the warehouse file for ``workload = warehouse``, else the named workload.

    Who calls this: ``register_candidate``, once per registration (the pool is read once per setting
    and process: seconds for the warehouse)."""
    key = json.dumps({k: config.get(k) for k in TRAINING_DATA_KEYS}, sort_keys=True, default=str)
    return _training_data(key)


@functools.lru_cache(maxsize=4)
def _training_data(key: str) -> TrainingData:
    from training.workloads.episodes import workload_for
    from warehouse.settings import default_warehouse_path

    cfg = router_config({k: v for k, v in json.loads(key).items() if v is not None})
    workload = workload_for(cfg)
    frame = pd.DataFrame(
        {
            "request_id": [r.request_id for r in workload.train],
            "arrival_s": np.array([r.arrival_s for r in workload.train], dtype=np.float64),
            "prompt_tokens": np.array([r.prompt_tokens for r in workload.train], dtype=np.int64),
            "output_tokens": np.array([r.output_tokens for r in workload.train], dtype=np.int64),
            "task": [r.task for r in workload.train],
            "row_id": [r.row_id or "" for r in workload.train],
        }
    )
    if cfg.workload == "warehouse":
        source = str(Path(cfg.warehouse or default_warehouse_path()).resolve())
    else:
        source = f"workload {workload.name}: {workload.description}"
    return TrainingData(frame, name=f"{LLM_ROUTER}-train:{workload.name}", source=source)


def rule_latency(profile: str, estimator: Mapping[str, Any] | None, source: str = "") -> LinearLatency | None:
    """The latency model a rule candidate estimates with: the impact estimator's fitted coefficients
    (``estimator``: its JSON, ``FittedEstimator.to_json``) when they were fitted for ``profile``, else
    the profile's own model when it is linear (the paper's V100 profiles); ``None`` otherwise (no
    latency-aware rule then)."""
    from training.rl.policy_serving import LinearLatency
    from training.simulator.latency import LinearLatencyModel
    from training.simulator.profiles import load_latency_model

    if estimator is not None and estimator.get("profile") == profile:
        return LinearLatency.from_dict({"coefficients": estimator["coefficients"], "source": source})
    model = load_latency_model(profile)
    if isinstance(model, LinearLatencyModel):
        coef = {
            "base_s": model.base_s,
            "grad1_s_per_prefill_token": model.grad1,
            "grad2_s_per_decode_context_token": model.grad2,
            "per_decode_seq_s": model.per_decode_seq_s,
            "attention2_s_per_token2": model.attention2,
        }
        return LinearLatency.from_dict({"coefficients": coef, "source": f"profile {profile}"})
    return None


def estimator_latency(registry: ModelRegistry, version: str, profile: str) -> LinearLatency | None:
    """``rule_latency`` with ``impact-estimator`` ``version``'s fitted coefficients (its ``estimator``
    artifact; source ``impact-estimator v<version>``)."""
    from flows.models.gate import IMPACT_ESTIMATOR

    with tempfile.TemporaryDirectory(prefix="loadwise-estimator-") as tmp:
        path = registry.download_artifact(IMPACT_ESTIMATOR, version, "estimator", Path(tmp))
        estimator = json.loads(Path(path).read_text())
    return rule_latency(profile, estimator, source=f"{IMPACT_ESTIMATOR} v{version}")


def rule_candidates(
    cfg: RouterTrainConfig,
    latency: LinearLatency | None,
    folder: Path,
    example: Path | None = None,
    rules: Sequence[tuple[str, float | None]] = RULE_CANDIDATES,
) -> list[RouterCandidate]:
    """``rules`` as candidates for ``cfg``'s setting: each a ``RulePolicy`` over the setting's snapshot
    (``cfg.obs_spec()``: the RL policy's input schema), with the cluster's batch limit and KV block
    size, written to ``folder/rule-<digest>`` (content-addressed), with ``example`` (an
    ``input_example.json`` of the same spec: the RL policy's) when given. A latency-aware rule is left
    out when ``latency`` is ``None``."""
    from training.rl.policy_serving import RulePolicy
    from training.simulator.profiles import default_instance_config

    instance = default_instance_config(cfg.profile, chunked_prefill_tokens=cfg.chunked_prefill_tokens)
    setting = cfg.model_dump(mode="json")
    keys = (*ROUTER_SETTING_KEYS, "warehouse", "rate_rps", "episode_requests", "predictor")
    out = []
    for rule, headroom in rules:
        needs_latency = rule == "workload_impact_greedy"
        if needs_latency and latency is None:
            continue
        policy = RulePolicy(
            rule,
            cfg.obs_spec(),
            latency=latency if needs_latency else None,
            max_batch_size=instance.max_batch_size,
            block_size=instance.block_size,
            hold_kv_headroom=headroom,
        )
        params = {k: v for k, v in policy.params().items() if k != "format"}
        config = {"policy": policy.kind, **{k: setting[k] for k in keys if k in setting}, "rule": params}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:32]
        fingerprint = f"rule:{digest}"
        where = Path(folder) / f"rule-{digest}"
        policy.save(where)
        if example is not None:
            shutil.copyfile(example, where / "input_example.json")
        source = f" with {latency.source}'s latency model" if needs_latency and latency else ""
        out.append(
            RouterCandidate(
                name=f"rule-{policy.name}",
                policy=policy.kind,
                policy_dir=where,
                config=config,
                fingerprint=fingerprint,
                description=f"rule {policy.name}{source} for {cfg.num_instances} x {cfg.profile}",
            )
        )
    return out


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
    alias: str = CHAMPION,
) -> Published:
    """Register a trained router policy as a new ``llm-router`` version (``register_candidate``)."""
    candidate = rl_candidate(trained, learned, data_fingerprint, report)
    return register_candidate(
        candidate, report, registry, exclude=exclude, gate=gate, champion=champion, refusal=refusal,
        alias=alias,
    )  # fmt: skip


def register_candidate(
    candidate: RouterCandidate,
    report: EvalReport,
    registry: ModelRegistry,
    *,
    exclude: tuple[str, ...] = (),
    gate: bool = True,
    champion: str | None = None,
    refusal: str | None = None,
    reports: Mapping[str, str] | None = None,
    alias: str = CHAMPION,
) -> Published:
    """Register ``candidate`` as a new ``llm-router`` version; with ``gate``, run the statistical gate
    (``eval.gate.promotion_gate``) on ``report``: the candidate (``candidate.name`` in it) against
    router ``champion`` when the report has one (``evaluate_router``) and the best baseline
    (``exclude``: not baselines); the move is a compare-and-set against ``champion`` (the version
    replayed, or seen when there was nothing comparable to replay). ``refusal``: a reason the gate
    must refuse whatever the figures say (``RouterChampion.refusal``). ``reports``: more files for
    the version's run (the nightly's candidates table). ``alias``: the gated alias judged and moved
    (``champion``; a setting alias such as ``paper-main``, whose holder ``champion`` then is).

    Every kind is the same pyfunc (``policy_serving.RouterPolicyModel`` over ``policy_dir``): the
    signature is a float64 tensor ``(-1, C)`` of snapshot rows, whose column names the MLmodel's
    ``metadata.snapshot_columns`` lists; the kind is the ``POLICY_TAG``."""
    from eval.gate import promotion_gate
    from eval.report import to_markdown
    from training.rl import policy_serving

    learned = candidate.name
    example = candidate.input_example()
    policy = policy_serving.load_policy(candidate.policy_dir)
    report_md = to_markdown(report)
    in_report = CHAMPION if CHAMPION in report.routers and learned != CHAMPION else None
    not_baselines = (*exclude, *((in_report,) if in_report else ()))
    pkg = ModelPackage(
        name=LLM_ROUTER,
        serving_module=Path(policy_serving.__file__),
        model_class="RouterPolicyModel",
        artifacts={"policy_dir": Path(candidate.policy_dir)},
        input_example=example,
        output_example=policy_serving.predict_rows(policy, example),
        pip_requirements=ROUTER_REQUIREMENTS,
        config=candidate.config,
        metrics={
            **router_metrics(report, learned, not_baselines),
            **{f"train.{k}": v for k, v in candidate.train_stats.items()},
        },
        data_fingerprint=candidate.fingerprint,
        reports={
            "evaluation.md": report_md,
            "evaluation.json": report.model_dump_json(indent=1),
            **(reports or {}),
        },
        description=candidate.description,
        tags={POLICY_TAG: candidate.policy},
        metadata={"policy": candidate.policy, "snapshot_columns": list(policy.columns)},
        training_data=router_training_data(candidate.config),
        run_artifacts={"checkpoints": candidate.checkpoint} if candidate.checkpoint else {},
    )

    def decide(version: RegisteredVersion) -> PromotionDecision:
        result = promotion_gate(report, learned, in_report, exclude=exclude)
        if refusal is not None:
            result = result.model_copy(update={"passed": False, "reason": f"{refusal}; {result.reason}"})
        return gate_router(registry, version.version, result, champion, alias)

    decider: Callable[[RegisteredVersion], PromotionDecision] | None = decide if gate else None
    return publish(registry, pkg, report_md, decider, alias)


def train_and_register_router(
    config: RouterTrainConfig | Mapping[str, Any] | None,
    registry: ModelRegistry | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
    alias: str = CHAMPION,
) -> tuple[Published, EvalReport]:
    """The ``loadwise train-router`` job: probe the registry, train, evaluate against every baseline
    and the comparable holder of gated ``alias`` (replayed on the same windows), register, gate for
    ``alias``. A setting alias (``--alias paper-main``) is checked before any training: a config
    outside its scope (``scope_refusal``) is a ``ValueError``. The training and its evaluation
    (``eval/``) are written under ``default_router_dir``."""
    registry = registry or ModelRegistry()
    registry.check()
    cfg = router_config(config)
    check_scope(alias, cfg)
    out = default_router_dir(cfg)
    trained = train_router_policy(cfg, out, progress=progress)
    champion = find_router_champion(registry, cfg, alias)
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
        alias=alias,
    )
    return published, report
