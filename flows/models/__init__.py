"""The learned models' jobs: train or fit, evaluate, register in MLflow, gate; and their Prefect flows.

Who calls this: the CLI (``loadwise train-predictor`` / ``fit-estimator`` / ``train-router``, with
``--flow`` through the flows in ``standalone``; ``loadwise promote``), the tasks of ``flows.tasks``
and through them the nightly flow, once per run. Each job probes the registry
(``ModelRegistry.check``: a bad store fails in seconds, before any training), makes one library call
that trains and evaluates (``training.*``, ``eval``), one ``ModelRegistry.publish`` (new version,
alias ``challenger``; an identical model is not registered again), then the gate.

Modules, each importing only those before it:

- ``gate``: the one place that decides whether a version may become ``champion`` (``gate_verdict``)
  and the moves it allows (``promote_through_gate``, ``gate_router``, ``promote_by_hand``);
- ``publish``: registering a package and letting a gate decide (``publish``, ``Published``);
- ``predictor``, ``estimator``, ``router``: each model's job (the router's also finds and replays the
  champion of the same setting);
- ``standalone``: the Prefect flows ``retrain-length-predictor``, ``refit-impact-estimator``,
  ``train-router`` (tasks only; the same tasks the nightly flow runs).
"""

from flows.models.estimator import fit_and_register_estimator
from flows.models.gate import IMPACT_ESTIMATOR, LENGTH_PREDICTOR, LLM_ROUTER, gate_verdict, promote_by_hand
from flows.models.predictor import has_predictor_data, train_and_register_predictor
from flows.models.publish import Published
from flows.models.router import ROUTER_SETTING_KEYS, train_and_register_router
from flows.models.standalone import refit_impact_estimator, retrain_length_predictor, train_router_flow

__all__ = [
    "IMPACT_ESTIMATOR",
    "LENGTH_PREDICTOR",
    "LLM_ROUTER",
    "ROUTER_SETTING_KEYS",
    "Published",
    "fit_and_register_estimator",
    "gate_verdict",
    "has_predictor_data",
    "promote_by_hand",
    "refit_impact_estimator",
    "retrain_length_predictor",
    "train_and_register_predictor",
    "train_and_register_router",
    "train_router_flow",
]
