"""Evaluation: one harness (``evaluate``) that replays any registered router on held-out requests
over seeds and returns one typed report (``EvalReport``); result sinks; the promotion gate. The
workloads it replays are built in ``training.workloads``."""

from eval.harness import ResultSink, evaluate, run_evaluation
from eval.report import EvalReport

__all__ = [
    "EvalReport",
    "ResultSink",
    "evaluate",
    "run_evaluation",
]
