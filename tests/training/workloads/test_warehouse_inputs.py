"""``--predictor PATH`` reads what a stored prediction is made from (issue 15): each request's
warehouse row's task label, not the workload's label for its class (``main`` labels CASTILLO's
``Apps`` rows ``code_apps``), so a path predictor and the same model registered answer alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.simulator.interface import LengthPrediction
from training.simulator.request import Request
from training.workloads.predictors import WarehouseInputs


class _Spy:
    name = "spy"
    is_oracle = False

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def predict_lengths(self, requests: Sequence[Request]) -> LengthPrediction:
        self.tasks += [r.task for r in requests]
        return LengthPrediction(np.full(len(requests), 7.0))

    def predict_output_tokens(self, requests: Sequence[Request]) -> np.ndarray:
        return self.predict_lengths(requests).expected_tokens


def _req(i: int, task: str, row_id: str | None) -> Request:
    return Request(f"r{i}", arrival_s=float(i), prompt_tokens=10, output_tokens=5, task=task, row_id=row_id)


def test_the_model_reads_the_warehouse_rows_task_labels():
    spy = _Spy()
    wrapped = WarehouseInputs(spy, {"w1": "Apps", "w2": "ShareGPT"})
    requests = [
        _req(0, "code_apps", "w1"),
        _req(1, "chat", "w2"),
        _req(2, "synthetic", None),
        _req(3, "x", "w9"),
    ]
    out = wrapped.predict_lengths(requests)
    assert spy.tasks == ["Apps", "ShareGPT", "synthetic", "x"]  # no row, or a row not listed: its own
    assert out.expected_tokens.tolist() == [7.0] * 4
    assert wrapped.predict_output_tokens(requests[:1]).tolist() == [7.0]
    assert (wrapped.name, wrapped.is_oracle) == ("spy", False)
    assert [r.task for r in requests] == ["code_apps", "chat", "synthetic", "x"]  # the replay's untouched
