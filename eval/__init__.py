"""Evaluation: one harness (``evaluate``) that replays any registered router on held-out requests
over seeds and returns one typed report (``EvalReport``); workloads by name; result sinks."""

from eval.harness import ResultSink, evaluate, run_evaluation
from eval.report import EvalReport
from eval.workloads import Workload, WorkloadOptions, get_workload, workload_names

__all__ = [
    "EvalReport",
    "ResultSink",
    "Workload",
    "WorkloadOptions",
    "evaluate",
    "get_workload",
    "run_evaluation",
    "workload_names",
]
