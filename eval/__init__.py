"""Evaluation: one harness (``evaluate``) that replays any registered router on held-out requests
over seeds and returns one typed report (``EvalReport``); the evaluation builder (``eval.spec``: one
typed ``EvalSpec`` -> workload, cluster, latency model -> the harness), result sinks; the promotion
gate. The workloads it replays are built in ``training.workloads``."""

from eval.harness import ResultSink, evaluate, run_evaluation
from eval.report import EvalReport
from eval.spec import EvalSpec, evaluate_spec

__all__ = [
    "EvalReport",
    "EvalSpec",
    "ResultSink",
    "evaluate",
    "evaluate_spec",
    "run_evaluation",
]
