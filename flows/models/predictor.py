"""The ``length-predictor`` job: train on the warehouse's prompt texts, evaluate, register, gate.

Who calls this: ``loadwise train-predictor`` (directly, or with ``--flow`` through the
``retrain-length-predictor`` flow), the nightly ``retrain-length-predictor`` step (both through the
``train-register-length-predictor`` task, ``flows.tasks``), once per run. The job probes the registry
first (a bad store fails in seconds, before any training), trains and evaluates
(``training.length``), registers a new version (alias ``challenger``) and runs the gate
(``flows.models.gate``): held-out MAE, same serving model, and, when a champion exists and the MAE
is better, not worse routing with the challenger's predictions than with the champion's
(``routing_evidence``: a small paired replay, recorded on the version before the gate reads it).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from flows.models.gate import (
    LENGTH_PREDICTOR,
    METRIC_GATES,
    PREDICTOR_ROUTING_TAG,
    promote_through_gate,
)
from flows.models.publish import Published, publish
from flows.registry import (
    CHAMPION,
    ModelPackage,
    ModelRegistry,
    PromotionDecision,
    RegisteredVersion,
    TrainingData,
    metric_verdict,
)

if TYPE_CHECKING:
    from training.length.config import PredictorConfig
    from training.length.train import TrainedLengthPredictor

Progress = Callable[[str], None]


class RoutingCheck(BaseModel):
    """The predictor gate's routing replay: one router that reads the predictions, on a named
    workload's held-out windows, replayed once with the challenger's and once with the champion's
    predictions on the same requests and seeds (deterministic, so the difference is the predictions').

    Defaults: ``workload_impact_greedy`` with least-work-left instance queues (``lwl``: each
    instance admits the fewest *predicted* decode tokens first) on ``main`` (the CASTILLO +
    AlpacaEval prompts the warehouse split holds out: the predictor never trained on them, and its
    text model answers them), 300 requests x 3 seeds. Why that router: placement alone barely reads
    lengths (the issue's oracle figures: FCFS greedy 29.17 -> 27.84 s with true lengths), ordering
    does (LWL greedy 25.99 -> 22.27 s), so this is where a worse predictor shows. Cost: the two
    predictors' answers for the sampled prompts (in process, once per distinct prompt) plus
    2 x 3 replays of 300 requests: seconds (docs/length_predictor.md, "The gate")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str = "main"
    router: str = "workload_impact_greedy"
    queue_policy: str = "lwl"
    requests: int = Field(default=300, ge=10)
    seeds: tuple[int, ...] = (0, 1, 2)

    @property
    def setting(self) -> str:
        return (
            f"{self.router} ({self.queue_policy} queues) on {self.workload}, {self.requests} requests x "
            f"{len(self.seeds)} seeds"
        )


DEFAULT_ROUTING_CHECK = RoutingCheck()
"""The routing replay of ``loadwise train-predictor`` and the nightly predictor step."""


def routing_evidence(challenger: Path, champion: Path, check: RoutingCheck) -> dict[str, Any]:
    """Replay ``check`` with the predictor folder ``challenger`` and with ``champion`` (same workload,
    requests and seeds); the figures ``flows.models.gate.routing_verdict`` judges: mean over seeds of
    the per-seed mean and p99 E2E (s) for each, the setting and the replays' wall seconds.

    Who calls this: ``register_predictor`` (train-predictor, the nightly predictor step) before the
    gate, once per challenger whose MAE beats the champion's. Reads only (predictions in process)."""
    from eval.spec import EvalSpec, NamedWorkload, evaluate_spec
    from flows.models.gate import _seed_means
    from training.length.stored import PredictorChoice
    from training.simulator import QueuePolicy

    started = time.perf_counter()
    figures: dict[str, Any] = {"setting": check.setting}
    for who, folder in (("challenger", challenger), ("champion", champion)):
        spec = EvalSpec(
            workload=NamedWorkload(name=check.workload),
            requests=check.requests,
            queue_policy=QueuePolicy(check.queue_policy),
            routers=(check.router,),
            seeds=check.seeds,
            predictor=PredictorChoice(kind="path", path=str(folder)),
        )
        mean, p99 = _seed_means(evaluate_spec(spec).routers[check.router])
        figures[f"{who}_mean_e2e_s"], figures[f"{who}_p99_e2e_s"] = mean, p99
    figures["replay_s"] = round(time.perf_counter() - started, 3)
    return figures


def predictor_gate(
    registry: ModelRegistry, folder: Path, check: RoutingCheck | None, progress: Progress | None = None
) -> Callable[[RegisteredVersion], PromotionDecision]:
    """``publish``'s ``decide`` for a length predictor whose files are ``folder``: when a champion
    serves and the challenger's MAE beats it, replay ``check`` (``routing_evidence``) and record the
    figures on the version with the champion they compare with (``PREDICTOR_ROUTING_TAG``); then the
    one gate path (``promote_through_gate``: accuracy and routing, compare-and-set). ``check=None``
    records nothing, so a challenger of an existing champion is refused for lack of evidence."""
    from flows.models.predictions import fetch_predictor

    gate = METRIC_GATES[LENGTH_PREDICTOR]

    def decide(version: RegisteredVersion) -> PromotionDecision:
        champ = registry.find(LENGTH_PREDICTOR, CHAMPION)
        if champ is not None and check is not None and champ.version != version.version:
            better, _ = metric_verdict(version, champ, gate.metric, gate.higher_is_better, scope=gate.scope)
            if better:
                if progress:
                    progress(f"routing replay: {check.setting}, challenger vs champion v{champ.version}")
                figures = routing_evidence(folder, fetch_predictor(registry, champ.version), check)
                evidence = {"champion": champ.version, **figures}
                registry.set_tags(
                    LENGTH_PREDICTOR, version.version, {PREDICTOR_ROUTING_TAG: json.dumps(evidence)}
                )
        return promote_through_gate(registry, LENGTH_PREDICTOR, version.version)

    return decide


def has_predictor_data(warehouse: str | Path, serving_model: str | None = None) -> bool:
    """Whether the warehouse holds prompt texts with the serving model's output lengths."""
    from training.length.config import PredictorConfig
    from training.length.data import load_rows

    cfg = PredictorConfig(serving_model=serving_model) if serving_model else PredictorConfig()
    try:
        return not load_rows(Path(warehouse), cfg).empty
    except ValueError:
        return False


def predictor_config(config: PredictorConfig | Mapping[str, Any] | None) -> PredictorConfig:
    """``config`` as a validated ``PredictorConfig`` (a mapping: its fields; ``None``: the defaults)."""
    from training.length.config import PredictorConfig

    return PredictorConfig.model_validate(config or {})


def train_predictor(
    config: PredictorConfig | Mapping[str, Any] | None,
    warehouse: Path | None = None,
    progress: Progress | None = None,
) -> TrainedLengthPredictor:
    """Train and evaluate the length predictor on the warehouse (``training.length``)."""
    from training.length.train import train_length_predictor
    from warehouse.settings import default_warehouse_path

    return train_length_predictor(
        warehouse or default_warehouse_path(), predictor_config(config), progress=progress
    )


def predictor_training_data(warehouse: Path, config: PredictorConfig) -> TrainingData:
    """The rows a predictor of ``config`` trains on, as the version's input dataset: the serving
    model's warehouse rows whose prompt the warehouse's split puts in ``train`` (``request_id``,
    ``task``, ``prompt_tokens``, ``output_tokens``; the validation and test prompts are not logged).

    Who calls this: ``train_and_register_predictor``, once per registration (one read-only query)."""
    from training.length.data import load_rows, split_prompts

    rows = load_rows(warehouse, config)
    train = rows[split_prompts(rows["prompt_text"]) == "train"]
    frame = train[["request_id", "task", "prompt_tokens", "output_tokens"]].reset_index(drop=True)
    return TrainingData(
        frame, name=f"{LENGTH_PREDICTOR}-train:{config.serving_model_short}", source=str(warehouse)
    )


def register_predictor(
    trained: TrainedLengthPredictor,
    registry: ModelRegistry,
    routing: RoutingCheck | None = DEFAULT_ROUTING_CHECK,
    progress: Progress | None = None,
    training_data: TrainingData | None = None,
) -> Published:
    """Register a trained length predictor as a new ``length-predictor`` version; run the gate
    (``predictor_gate``: accuracy, then the ``routing`` replay against the champion).
    ``training_data``: the run's input dataset (``predictor_training_data``; ``None``: none logged)."""
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
            model_config={"torch_threads": serving.DEFAULT_TORCH_THREADS},
            training_data=training_data,
        )
        return publish(registry, pkg, report_md, predictor_gate(registry, folder, routing, progress))


def train_and_register_predictor(
    config: PredictorConfig | Mapping[str, Any] | None,
    warehouse: Path | None = None,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
    routing: RoutingCheck | None = DEFAULT_ROUTING_CHECK,
) -> Published:
    """The ``loadwise train-predictor`` job: probe the registry, train, evaluate, register, gate
    (``routing``: the gate's routing replay, ``RoutingCheck``)."""
    from warehouse.settings import default_warehouse_path

    registry = registry or ModelRegistry()
    registry.check()
    trained = train_predictor(config, warehouse, progress)
    if progress:
        progress(f"registering {LENGTH_PREDICTOR} in {registry.tracking_uri}")
    data = predictor_training_data(Path(warehouse or default_warehouse_path()).resolve(), trained.config)
    return register_predictor(trained, registry, routing, progress, data)
