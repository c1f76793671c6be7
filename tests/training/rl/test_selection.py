"""Tail-aware checkpoint selection (``selection_p99_tolerance_pct``): the rule as a pure function, and
a tiny training run whose validations log a p99 and whose kept checkpoint obeys the rule."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tests.training.rl.samples import TINY
from training.rl.config import RouterTrainConfig
from training.rl.train import keeps_checkpoint, train_router


def test_worse_p99_is_refused_even_with_a_better_mean():
    assert not keeps_checkpoint(25.0, 110.0, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=5)
    assert not keeps_checkpoint(25.0, 100.1, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=0)


def test_p99_within_tolerance_and_better_mean_is_kept():
    assert keeps_checkpoint(25.0, 104.9, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=5)
    assert keeps_checkpoint(25.0, 100.0, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=0)


def test_a_mean_that_is_not_better_is_never_kept():
    for tol in (None, 0.0, 50.0):
        assert not keeps_checkpoint(
            30.0, 50.0, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=tol
        )


def test_none_selects_on_the_mean_only():
    assert keeps_checkpoint(25.0, 500.0, best_mean_e2e_s=30.0, reference_p99_e2e_s=100.0, tolerance_pct=None)


def test_the_first_validation_is_always_kept():
    assert keeps_checkpoint(
        35.0, 90.0, best_mean_e2e_s=float("inf"), reference_p99_e2e_s=90.0, tolerance_pct=0
    )


def test_negative_tolerance_is_rejected():
    with pytest.raises(ValidationError):
        RouterTrainConfig(selection_p99_tolerance_pct=-1.0)


@pytest.mark.parametrize("tol", [None, 0.0])
def test_tiny_run_logs_p99_and_keeps_by_the_rule(tiny_sampler, tmp_path, tol):
    cfg = RouterTrainConfig(
        algo="dqn", variant="baseline", selection_p99_tolerance_pct=tol, **{**TINY, "eval_every_episodes": 2}
    )
    t = train_router(cfg, tiny_sampler, tmp_path, progress=False)
    vals = t.train_stats["validation"]
    assert len(vals) >= 3
    for v in vals:
        assert 0 < v["p99_e2e_s"] < float("inf")
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["p99_e2e_s"] for r in log if r["kind"] == "validation"] == [v["p99_e2e_s"] for v in vals]
    assert vals[0]["kept"]  # step 0 is the reference
    kept = [v for v in vals if v["kept"]]
    assert t.train_stats["best_validation_e2e_s"] == kept[-1]["mean_e2e_s"]
    assert t.train_stats["best_validation_p99_e2e_s"] == kept[-1]["p99_e2e_s"]
    ref = vals[0]["p99_e2e_s"]
    best = float("inf")
    for v in vals:  # replay the rule over the logged validations
        assert v["kept"] == keeps_checkpoint(v["mean_e2e_s"], v["p99_e2e_s"], best, ref, tol)
        if v["kept"]:
            best = v["mean_e2e_s"]
    if tol is not None:
        assert all(v["p99_e2e_s"] <= ref for v in kept)
