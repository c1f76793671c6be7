"""Every Prefect task of the project, one name each, shared by the standalone flows and the nightly.

Who calls this: the flows: ``ingest-traces`` (``flows.ingest``), ``retrain-length-predictor``,
``refit-impact-estimator``, ``train-router`` (``flows.models.standalone``),
``evaluate-routers-distributed`` (``flows.distributed``) and ``nightly-retrain`` (``flows.nightly``),
which applies its step caches with ``with_options`` (``flows.nightly.keys.StepCache.cached``). Thin by design
(STYLE.md): each task is one library call (``warehouse``, ``features``, ``eval``, ``flows.models``),
imported in its body so that importing this module imports Prefect only. Retries only where I/O can
fail (``retry_on_io``), never on bad data. No task caches unless its flow asks
(``cache_policy=NO_CACHE``); a name is never reused by another task or flow
(``tests/flows/test_prefect_names.py``).

Tasks (used by) -> the library call:

- ``locate-traces``, ``write-synthetic-traces``, ``summarize-warehouse`` (nightly) ->
  ``warehouse.real_traces``, ``warehouse.synthetic``, ``warehouse.analytics``;
- ``ingest-files``, ``publish-ingest-artifact`` (ingest-traces, nightly) -> ``warehouse.ingest``;
- ``check-drift`` (nightly) -> ``warehouse.ops.request_windows``, ``features.drift.detect_drift``;
- ``fit-register-impact-estimator`` (refit-impact-estimator, nightly),
  ``train-register-length-predictor`` (retrain-length-predictor, nightly) and
  ``publish-model-report`` (the three model flows, nightly) -> ``flows.models.estimator`` /
  ``predictor`` (train or fit, register, gate);
- ``predict-lengths`` (nightly) -> ``flows.models.predictions.predict_lengths_job`` (a registered
  length predictor's predictions of the replays' requests, into ``marts.length_predictions``);
- ``train-router-policy``, ``find-router-champion``, ``fetch-router-policy``, ``register-router`` (a
  router candidate: an RL policy or a tuned rule; train-router, nightly), ``evaluate-router-policy``
  (train-router) -> ``flows.models.router``;
- ``promote-router`` (nightly) -> ``flows.models.gate.gate_router``; ``store-evaluation`` (nightly)
  -> ``eval.sinks.DuckDBSink``;
- ``replay`` (every fanned-out evaluation, ``flows.distributed.prefect_executor``) ->
  ``eval.harness.replay_job``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from warehouse.errors import WarehouseBusyError

if TYPE_CHECKING:
    from eval.gate import GateResult
    from eval.report import EvalReport
    from features.drift import DriftThresholds
    from flows.models.publish import Published
    from flows.models.router import RouterCandidate, RouterChampion
    from flows.nightly.results import DriftResult
    from flows.registry import PromotionDecision
    from training.impact.fit import EstimatorConfig
    from training.length.config import PredictorConfig
    from training.length.stored import PredictorChoice
    from training.rl.config import RouterTrainConfig
    from training.rl.train import TrainedRouter


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on I/O."""
    return isinstance(getattr(state, "data", None), OSError | WarehouseBusyError)


# -- traces -> warehouse -------------------------------------------------------------------------
@task(name="locate-traces")
def locate_traces(data_dir: str) -> list[str]:
    """The real trace files present under ``data_dir`` (empty: none, use synthetic)."""
    from warehouse.real_traces import real_trace_paths

    return [str(p) for p in real_trace_paths(Path(data_dir))]


@task(name="write-synthetic-traces", retries=1, retry_condition_fn=retry_on_io)
def write_synthetic(out_dir: str, rows: int, seed: int) -> list[str]:
    """Write the seeded synthetic Azure-schema traces; returns their paths."""
    from warehouse.synthetic import SyntheticConfig, write_azure_like

    return [str(p) for p in write_azure_like(Path(out_dir), SyntheticConfig(rows=rows, seed=seed))]


@task(name="ingest-files", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def ingest_files(
    paths: list[str], warehouse: str | None, fmt: str = "auto", source: str | None = None
) -> dict[str, Any]:
    """One atomic load of ``paths`` (``warehouse.ingest.ingest``); returns the ``IngestReport`` as a
    dict (the --json contract). A file skipped as unreadable is listed there and the others load;
    the task fails only when every file was skipped (``NoFileLoadedError``, not retried)."""
    from warehouse.ingest import ingest

    return ingest(paths, warehouse=warehouse, fmt=fmt, source=source).to_dict()


@task(name="publish-ingest-artifact")
def publish_ingest(
    report: dict[str, Any], counts_key: str = "ingest-counts", skipped_key: str = "ingest-skipped"
) -> list[dict[str, Any]]:
    """Table artifacts: counts per source (key ``counts_key``) and, when any file was skipped, the
    skipped files with their reasons (``skipped_key``, also printed); returns the counts rows."""
    from flows.ingest import counts_by_source, skipped_files

    rows = counts_by_source(report)
    create_table_artifact(rows, key=counts_key, description="Rows read / ingested / quarantined per source")
    skipped = skipped_files(report)
    for entry in skipped:
        print(f"skipped {entry['path']}: {entry['reason']}")
    if skipped:
        create_table_artifact(
            skipped, key=skipped_key, description="Files skipped as unreadable (not loaded), and why"
        )
    return rows


@task(name="summarize-warehouse", retries=1, retry_condition_fn=retry_on_io)
def summarize(warehouse: str) -> list[dict[str, Any]]:
    """The analytics summary tables (counts, token percentiles, workload classes) as dicts."""
    from warehouse.analytics import summary_tables
    from warehouse.store import connect_readonly

    con = connect_readonly(warehouse)
    try:
        return [
            {"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]}
            for t in summary_tables(con)
        ]
    finally:
        con.close()


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    warehouse: str, where: str, watermark: int | None, thresholds: DriftThresholds
) -> DriftResult:
    """The new window (files after ``watermark``) vs the reference window (files up to it); the
    report is the ``nightly-drift`` artifact when the check ran."""
    from flows.nightly.results import DriftResult
    from warehouse.ops import request_windows

    reference, new = request_windows(warehouse, where, watermark)
    result = DriftResult.between(reference, new, thresholds)
    if result.drifted is not None:
        create_markdown_artifact(
            result.markdown, key="nightly-drift", description="new window vs training window"
        )
    return result


# -- length predictor, impact estimator ----------------------------------------------------------
@task(name="fit-register-impact-estimator", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io)
def fit_register_estimator(config: EstimatorConfig, tracking_uri: str | None) -> Published:
    """Fit, evaluate, register ``impact-estimator`` and run its gate (``fit_and_register_estimator``)."""
    from flows.models.estimator import fit_and_register_estimator
    from flows.registry import ModelRegistry

    return fit_and_register_estimator(config, ModelRegistry(tracking_uri), progress=print)


@task(
    name="train-register-length-predictor", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io
)
def train_register_predictor(
    config: PredictorConfig, warehouse: str | None, tracking_uri: str | None
) -> Published:
    """Train, evaluate, register ``length-predictor`` and run its gate (``train_and_register_predictor``)."""
    from flows.models.predictor import train_and_register_predictor
    from flows.registry import ModelRegistry

    path = Path(warehouse) if warehouse else None
    return train_and_register_predictor(config, path, ModelRegistry(tracking_uri), progress=print)


@task(name="predict-lengths", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_on_io)
def predict_lengths(choice: PredictorChoice, where: str) -> dict[str, Any]:
    """Store ``choice``'s predictions of the warehouse rows matching ``where`` in
    ``marts.length_predictions`` of ``choice.warehouse`` (``predict_lengths_job``; rows already stored
    for the version are skipped); returns what was stored. The ``predict-lengths`` table artifact."""
    from flows.models.predictions import predict_lengths_job

    result = predict_lengths_job(choice, where=where, progress=print)
    rows = [{"part": part, **(stats or {})} for part, stats in result["parts"].items()]
    create_table_artifact(
        rows, key="predict-lengths", description=f"{result['predictor']}: predictions stored in the warehouse"
    )
    return result


@task(name="publish-model-report", cache_policy=NO_CACHE)
def publish_model_report(kind: str, published: Published) -> dict[str, Any]:
    """The model's markdown report (with the gate's decision) as the ``<kind>-report`` artifact;
    returns the ``--json`` dict."""
    v = published.version
    header = f"# {kind} v{v.version}\n\n{published.decision.reason}\n\n"
    create_markdown_artifact(header + published.report_markdown, key=f"{kind}-report")
    return published.to_dict()


# -- RL router -----------------------------------------------------------------------------------
@task(name="train-router-policy", cache_policy=NO_CACHE)
def train_router_policy(config: RouterTrainConfig, out_dir: str) -> TrainedRouter:
    """Train the RL router on the setting's training pool (``train_router_policy``; no progress bar)."""
    from flows.models.router import train_router_policy as train

    return train(config, Path(out_dir), progress=False)


@task(
    name="find-router-champion",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def find_router_champion(
    config: RouterTrainConfig, tracking_uri: str | None, alias: str = "champion"
) -> RouterChampion | None:
    """The version holding gated ``alias`` of ``llm-router`` and whether it serves ``config``'s setting
    (I/O: retried)."""
    from flows.models.router import find_router_champion as find
    from flows.registry import ModelRegistry

    return find(ModelRegistry(tracking_uri), config, alias)


@task(
    name="fetch-router-policy",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def fetch_router_policy(version: str, dst: str, tracking_uri: str | None) -> str:
    """Download ``llm-router`` ``version``'s policy folder under ``dst`` (I/O: retried)."""
    from flows.models.router import fetch_router_policy as fetch
    from flows.registry import ModelRegistry

    return str(fetch(ModelRegistry(tracking_uri), version, Path(dst)))


@task(name="evaluate-router-policy", cache_policy=NO_CACHE)
def evaluate_router(
    trained: TrainedRouter,
    seeds: list[int],
    champion: RouterChampion | None,
    champion_dir: str | None,
    out_dir: str,
) -> EvalReport:
    """The policy, the comparable champion and every baseline on the held-out replays
    (``flows.models.router.evaluate_router``)."""
    from flows.models.router import evaluate_router as evaluate

    return evaluate(
        trained,
        seeds,
        champion=champion,
        champion_dir=Path(champion_dir) if champion_dir else None,
        out_dir=Path(out_dir),
    )


@task(name="store-evaluation", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def store_evaluation(report: EvalReport, warehouse: str) -> None:
    """``marts.eval_results`` (copy-on-write; I/O: retried)."""
    from eval.sinks import DuckDBSink

    DuckDBSink(Path(warehouse)).write(report)


@task(
    name="register-router",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def register_router(
    candidate: RouterCandidate,
    report: EvalReport,
    tracking_uri: str | None,
    *,
    exclude: tuple[str, ...] = (),
    gate: bool = True,
    champion: str | None = None,
    refusal: str | None = None,
    reports: dict[str, str] | None = None,
    alias: str = "champion",
) -> Published:
    """Register a router candidate (an RL policy or a tuned rule) as a new ``llm-router`` version (alias
    ``challenger``); with ``gate`` the statistical gate decides the move of gated ``alias``
    (``flows.models.router.register_candidate``)."""
    from flows.models.router import register_candidate
    from flows.registry import ModelRegistry

    return register_candidate(
        candidate,
        report,
        ModelRegistry(tracking_uri),
        exclude=exclude,
        gate=gate,
        champion=champion,
        refusal=refusal,
        reports=reports,
        alias=alias,
    )


@task(
    name="promote-router",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_io,
)
def promote_router(
    version: str,
    gate: GateResult,
    tracking_uri: str | None,
    expected: str | None,
    tags: dict[str, str] | None = None,
) -> PromotionDecision:
    """Tag ``version`` (``tags``: why the nightly flow chose it), log the gate's comparison next to it;
    when the gate passed, move ``champion`` to it only if the champion is still ``expected``, the
    version the evaluation replayed (``None``: there was none): a compare-and-set under the registry's
    champion lock (``flows.models.gate.gate_router``). The only step of the nightly flow that changes
    what serves."""
    from flows.models.gate import gate_router
    from flows.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri)
    if tags:
        registry.set_tags("llm-router", version, tags)
    return gate_router(registry, version, gate, expected)


# -- replays -------------------------------------------------------------------------------------
@task(name="replay", cache_policy=NO_CACHE)
def replay(fn: Callable[[Any], Any], job: Any) -> Any:
    """One unit of parallel work: ``fn(job)`` (``eval.harness.replay_job``: one router on one seed)."""
    return fn(job)
