"""The length predictor's gate: better held-out accuracy AND not worse routing with its predictions
(``flows.models.gate.routing_verdict`` on the evidence ``flows.models.predictor.predictor_gate`` records
from a real, small paired replay of ``main``), through the one gate path (``promote_through_gate``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.models.gate import LENGTH_PREDICTOR, PREDICTOR_ROUTING_TAG, gate_verdict, routing_verdict
from flows.registry import CHAMPION, ModelRegistry

# the warehouse's task labels of main's rows (what a predictor reads: ``WarehouseInputs``), with well
# separated output lengths (tokens) per main class, so a predictor learns the task's length
MAIN_TASK_LENGTHS = {
    "Apps": 900,  # main's code_apps
    "ShareGPT": 1400,  # chat_sharegpt
    "Mbpp": 350,  # code_mbpp
    **dict.fromkeys(
        ["DollyDataset/classification", "DollyDataset/closed_qa", "DollyDataset/information_extraction",
         "DollyDataset/summarization"], 60),  # dolly_short
    **dict.fromkeys(["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"], 250),  # alpaca_llama2
}  # fmt: skip


def main_task_rows(n_prompts: int = 60, samples: int = 4) -> pd.DataFrame:
    """CASTILLO-shaped rows with ``main``'s task names, lengths set by the task."""
    rng = np.random.default_rng(0)
    rows = []
    tasks = list(MAIN_TASK_LENGTHS)
    for p in range(n_prompts):
        task = tasks[p % len(tasks)]
        for s in range(samples):
            rows.append(
                {
                    "request_id": f"castillo:{p}:{s}",
                    "prompt_text": f"Request number {p} about {task.replace('_', ' ').replace('/', ' ')}.",
                    "prompt_tokens": 20 + p,
                    "output_tokens": int(MAIN_TASK_LENGTHS[task] * rng.uniform(0.8, 1.2)),
                    "task": task,
                    "sample_index": s,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained():
    from tests.training.length.samples import tiny_config
    from training.length.train import train_from_rows

    return train_from_rows(main_task_rows(), tiny_config())


def variant(trained, *, seed: int, mae: float, reverse: bool = False):
    """``trained`` with a lower recorded MAE (a "more accurate" challenger) and another seed (so the
    registry does not see an identical model); ``reverse``: its bucket lengths reversed, so it
    predicts the short tasks long and the long ones short."""
    from training.length.train import TrainedLengthPredictor

    core = copy.deepcopy(trained.core)
    if reverse:
        core.metadata["bucket_tokens"] = {t: v[::-1] for t, v in core.metadata["bucket_tokens"].items()}
    overall = trained.report.overall.model_copy(update={"mae_tokens": mae})
    report = trained.report.model_copy(update={"overall": overall})
    config = trained.config.model_copy(update={"seed": seed})
    return TrainedLengthPredictor(core, config, report, trained.data_fingerprint, trained.input_example())


def test_routing_verdict_tolerances_and_stale_evidence():
    ev = {
        "champion": "1",
        "challenger_mean_e2e_s": 10.05,
        "champion_mean_e2e_s": 10.0,
        "challenger_p99_e2e_s": 30.0,
        "champion_p99_e2e_s": 30.0,
    }
    assert routing_verdict(json.dumps(ev), "1")[0]  # +0.5 % mean: within the 1 % tolerance
    worse_mean = {**ev, "challenger_mean_e2e_s": 10.2}
    passed, why = routing_verdict(worse_mean, "1")
    assert not passed
    assert "mean E2E more than 1 % higher" in why
    worse_p99 = {**ev, "challenger_p99_e2e_s": 30.1}
    passed, why = routing_verdict(worse_p99, "1")
    assert not passed
    assert "p99 E2E higher" in why
    assert not routing_verdict(ev, "2")[0]  # measured against v1, v2 serves now
    assert "no routing evidence" in routing_verdict(None, "1")[1]
    assert not routing_verdict({**ev, "champion_mean_e2e_s": float("nan")}, "1")[0]
    assert not routing_verdict("{not json", "1")[0]


def test_a_more_accurate_predictor_that_routes_worse_is_refused(home: Path, shared_data: Path, trained):
    """Real replays (main, workload_impact_greedy with least-work-left queues, 200 requests x 2
    seeds): a challenger with a lower MAE whose expected lengths are reversed routes worse and is
    refused; one that routes the same passes; the evidence is on each version."""
    from flows.models.predictor import RoutingCheck, register_predictor

    registry = ModelRegistry()
    check = RoutingCheck(requests=200, seeds=(0, 1))
    first = register_predictor(trained, registry, check)
    assert first.decision.promoted  # the first champion: nothing to replay against
    assert PREDICTOR_ROUTING_TAG not in first.version.tags
    mae = trained.report.overall.mae_tokens

    worse = register_predictor(variant(trained, seed=1, mae=mae / 2, reverse=True), registry, check)
    assert not worse.decision.promoted, worse.decision.reason
    assert "routes worse" in worse.decision.reason
    assert "mae_tokens" in worse.decision.reason
    assert registry.get(LENGTH_PREDICTOR, CHAMPION).version == first.version.version
    ev = json.loads(registry.get(LENGTH_PREDICTOR, worse.version.version).tags[PREDICTOR_ROUTING_TAG])
    assert ev["champion"] == first.version.version
    worse_mean = ev["challenger_mean_e2e_s"] > ev["champion_mean_e2e_s"] * 1.01
    assert worse_mean or ev["challenger_p99_e2e_s"] > ev["champion_p99_e2e_s"], ev
    # by hand the same gate refuses it (the recorded evidence)
    assert not gate_verdict(registry, LENGTH_PREDICTOR, worse.version.version).passed

    same = register_predictor(variant(trained, seed=2, mae=mae / 2), registry, check)
    assert same.decision.promoted, same.decision.reason
    assert "routes no worse" in same.decision.reason
    ev = json.loads(registry.get(LENGTH_PREDICTOR, same.version.version).tags[PREDICTOR_ROUTING_TAG])
    assert ev["challenger_mean_e2e_s"] == pytest.approx(ev["champion_mean_e2e_s"])
    assert registry.get(LENGTH_PREDICTOR, CHAMPION).version == same.version.version


def test_without_routing_evidence_a_challenger_is_refused(home: Path, trained):
    """``routing=None`` records no replay: better MAE alone no longer moves the champion."""
    from flows.models.predictor import register_predictor

    registry = ModelRegistry()
    assert register_predictor(trained, registry, None).decision.promoted
    mae = trained.report.overall.mae_tokens
    other = register_predictor(variant(trained, seed=3, mae=mae / 2), registry, None)
    assert not other.decision.promoted
    assert "no routing evidence" in other.decision.reason
