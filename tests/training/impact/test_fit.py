"""The impact estimator's fit: recovers known coefficients, holds out whole replays, fails clearly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from training.impact.fit import (
    TERMS,
    VARIANT_TERMS,
    EstimatorConfig,
    EstimatorFitError,
    FittedEstimator,
    ReplayLog,
    fit_coefficients,
    fit_from_logs,
    fit_impact_estimator,
    predict_frame,
    record_logs,
    split_replays,
)
from training.impact.penalty import mixing_penalty_s
from training.impact.recording import FEATURES, TARGET, IterationLog
from training.simulator.config import ClusterConfig, InstanceConfig
from training.simulator.interface import InstanceView, RequestView
from training.simulator.latency import LinearLatencyModel
from training.simulator.profiles import PAPER_CONTEXT_PROFILE, PAPER_PROFILE
from training.workloads.synthetic import conversation_trace

FIXTURE = Path(__file__).parent / "data" / "estimator_synthetic_v1.json"

TRUE = {
    "base_s": 0.011,
    "grad1_s_per_prefill_token": 6.0e-5,
    "grad2_s_per_decode_context_token": 3.0e-7,
    "per_decode_seq_s": 5.0e-5,
    "attention2_s_per_token2": 5.0e-10,
}


def synthetic_frame(n: int, coef: dict[str, float], seed: int = 0, noise: float = 0.0) -> pd.DataFrame:
    """Random batch compositions (decode-only and mixed) timed by ``coef`` (x lognormal noise)."""
    rng = np.random.default_rng(seed)
    prefill = np.where(rng.random(n) < 0.3, rng.integers(1, 4096, n), 0)
    cached = rng.integers(0, 2048, n)
    seqs = rng.integers(0, 200, n)
    seqs[prefill == 0] = np.maximum(seqs[prefill == 0], 1)
    frame = pd.DataFrame(
        {
            "prefill_tokens": prefill,
            "prefill_attention_tokens2": prefill * (cached * (prefill > 0) + prefill).astype(np.float64),
            "decode_seqs": seqs,
            "decode_context_tokens": seqs * rng.integers(100, 4000, n),
        }
    )
    y = predict_frame(coef, frame)
    if noise:
        y = y * rng.lognormal(0.0, noise, n)
    frame[TARGET] = y
    return frame


def test_noise_free_points_give_back_the_exact_coefficients():
    got = fit_coefficients(synthetic_frame(500, TRUE), VARIANT_TERMS["rich"])
    for term, value in TRUE.items():
        assert got[term] == pytest.approx(value, rel=1e-8), term


def test_the_paper_variant_recovers_a_two_term_model_and_zeros_the_rest():
    paper = {**dict.fromkeys(TERMS, 0.0), "base_s": 0.02, "grad1_s_per_prefill_token": 3.2e-4}
    paper["per_decode_seq_s"] = 3.3e-5
    got = fit_coefficients(synthetic_frame(300, paper, seed=3), VARIANT_TERMS["paper"])
    assert got == pytest.approx(paper, rel=1e-8)
    assert got["grad2_s_per_decode_context_token"] == 0.0
    assert got["attention2_s_per_token2"] == 0.0


def test_noisy_points_give_coefficients_within_tolerance():
    """3 % lognormal noise on 20k points: coefficients within 5 % (attention2, a few % of a prefill
    iteration here, within 20 %) and predictions within 1 % of the noise-free times."""
    got = fit_coefficients(synthetic_frame(20000, TRUE, seed=1, noise=0.03), VARIANT_TERMS["rich"])
    for term, value in TRUE.items():
        rel = 0.2 if term == "attention2_s_per_token2" else 0.05
        assert got[term] == pytest.approx(value, rel=rel), term
    fresh = synthetic_frame(2000, TRUE, seed=2)
    ape = np.abs(predict_frame(got, fresh) / fresh[TARGET].to_numpy() - 1.0)
    assert ape.mean() < 0.01


def test_too_few_points_fail_with_a_clear_error():
    with pytest.raises(EstimatorFitError, match="too few points"):
        fit_coefficients(synthetic_frame(20, TRUE), VARIANT_TERMS["rich"], min_points=50)
    with pytest.raises(EstimatorFitError, match="too few points"):
        fit_coefficients(synthetic_frame(9, TRUE), VARIANT_TERMS["rich"], min_points=1)


def test_degenerate_points_fail_with_a_clear_error():
    frame = synthetic_frame(500, TRUE)
    no_prefill = frame[frame["prefill_tokens"] == 0]
    with pytest.raises(EstimatorFitError, match=r"prefill_tokens is 0 in all .* grad1"):
        fit_coefficients(no_prefill, VARIANT_TERMS["paper"])
    collinear = frame.assign(decode_context_tokens=frame["decode_seqs"] * 1000)
    with pytest.raises(EstimatorFitError, match="collinear"):
        fit_coefficients(collinear, VARIANT_TERMS["rich"])
    with pytest.raises(EstimatorFitError, match="> 0 s"):
        fit_coefficients(frame.assign(**{TARGET: 0.0}), VARIANT_TERMS["rich"])


def test_held_out_replays_are_disjoint_from_the_training_ones_and_depend_on_the_seed():
    ids = [f"r{i}" for i in range(8)]
    splits = set()
    for seed in range(6):
        train, held = split_replays(ids, 3, seed)
        assert len(held) == 3
        assert not set(train) & set(held)
        assert set(train) | set(held) == set(ids)
        assert split_replays(ids, 3, seed) == (train, held)
        splits.add(tuple(held))
    assert len(splits) > 1
    with pytest.raises(EstimatorFitError):
        split_replays(ids, 8, 0)


# --- end to end on simulator replays with a known linear "truth" -------------------------------


def _logs(truth: LinearLatencyModel, n_replays: int = 4) -> list[ReplayLog]:
    replays = [
        (f"syn-{k}", f"synthetic replay {k}", conversation_trace(120, rate_per_s=6.0 + 4 * k, seed=k))
        for k in range(n_replays)
    ]
    config = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=4000))
    return record_logs(truth, replays, config)


def _fit_synthetic(seed: int = 0) -> FittedEstimator:
    truth = LinearLatencyModel(**TRUE, name="truth")
    cfg = EstimatorConfig(profile="a100-llama2-7b", seed=seed, num_replays=4, holdout_replays=1)
    return fit_from_logs(cfg, _logs(truth))


def test_replays_through_the_recorder_give_back_the_truth():
    est = _fit_synthetic()
    assert est.chosen == "rich"
    for term, value in TRUE.items():
        assert est.variants["rich"].coefficients[term] == pytest.approx(value, rel=1e-6), term
    rich = est.variants["rich"]
    assert rich.holdout_r2 == pytest.approx(1.0)
    assert rich.holdout_mape_pct == pytest.approx(0.0, abs=1e-6)
    assert isinstance(est.latency_model, LinearLatencyModel)
    assert est.latency_model.grad2 == pytest.approx(TRUE["grad2_s_per_decode_context_token"], rel=1e-6)


def test_the_report_records_a_disjoint_split_by_replay():
    est = _fit_synthetic()
    held = [r for r in est.report.replays if r.heldout]
    train = [r for r in est.report.replays if not r.heldout]
    assert len(held) == 1
    assert len(train) == 3
    assert est.report.n_holdout_points == sum(r.num_iterations for r in held)
    assert est.report.n_train_points == sum(r.num_iterations for r in train)


def test_recorded_iterations_are_exactly_what_the_truth_model_says():
    truth = LinearLatencyModel(**TRUE, name="truth")
    frame = _logs(truth, 1)[0].frame
    assert list(frame.columns) == [*FEATURES, TARGET]
    assert (frame["prefill_tokens"] == 0).any()
    assert (frame["prefill_tokens"] > 0).any()
    expected = [truth.iteration_time(*row) for row in frame[list(FEATURES)].itertuples(index=False)]
    np.testing.assert_allclose(frame[TARGET].to_numpy(), expected, rtol=1e-12)


def test_the_iteration_log_has_one_row_per_engine_iteration():
    from training.length.baselines import OraclePredictor
    from training.routing.registry import RouterContext, get_router
    from training.simulator.engine import simulate

    log = IterationLog()
    config = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=4000))
    router = get_router("round_robin", RouterContext(num_instances=2))
    result = simulate(
        conversation_trace(80, seed=5), router, config, LinearLatencyModel(**TRUE, name="truth"),
        OraclePredictor(), fast_forward=False, iteration_observer=log,
    )  # fmt: skip
    assert len(log.rows) == result.num_iterations


def test_an_iteration_observer_needs_step_by_step_replay():
    from training.length.baselines import OraclePredictor
    from training.routing.registry import RouterContext, get_router
    from training.simulator.engine import simulate

    config = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=4000))
    with pytest.raises(ValueError, match="fast_forward=False"):
        simulate(
            conversation_trace(10, seed=5), get_router("round_robin", RouterContext(num_instances=2)), config,
            LinearLatencyModel(), OraclePredictor(), iteration_observer=IterationLog(),
        )  # fmt: skip


def test_the_fit_is_deterministic_and_the_report_regenerates_from_its_json():
    a, b = _fit_synthetic(), _fit_synthetic()
    assert a.to_json() == b.to_json()
    again = FittedEstimator.from_json(a.to_json())
    assert again.report.to_markdown() == a.report.to_markdown()
    assert again.report.metrics() == a.report.metrics()
    assert again.coefficients == a.coefficients
    assert again.data_fingerprint == a.data_fingerprint
    assert again.latency_model.iteration_time(100, 1e4, 3, 900) == a.latency_model.iteration_time(
        100, 1e4, 3, 900
    )


def test_the_stored_fixture_regenerates_its_report():
    """A v1 estimator JSON written earlier still loads, and its report and metrics regenerate."""
    est = FittedEstimator.from_json(FIXTURE.read_text())
    stored = json.loads(FIXTURE.read_text())
    assert est.coefficients == stored["coefficients"]
    md = est.report.to_markdown()
    assert "Chosen variant: **rich**" in md
    assert "held out" in md
    assert est.report.metrics()["chosen.holdout_r2"] == pytest.approx(1.0)
    assert FittedEstimator.from_json(est.to_json()).report.to_markdown() == md


def test_metrics_are_flat_finite_floats():
    metrics = _fit_synthetic().report.metrics()
    assert metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert {"paper.holdout_r2", "rich.holdout_mape_pct", "chosen.holdout_mape_pct", "chosen.base_s"} <= set(
        metrics
    )


def test_the_paper_variant_is_chosen_when_the_truth_is_the_paper_model():
    paper = LinearLatencyModel(base_s=0.02, grad2_s_per_decode_context_token=0.0, per_decode_seq_s=3.3e-5)
    cfg = EstimatorConfig(profile="a100-llama2-7b", num_replays=4, holdout_replays=1)
    est = fit_from_logs(cfg, _logs(paper))
    assert est.chosen == "paper"
    assert est.latency_model.grad1 == pytest.approx(3.2e-4, rel=1e-6)
    assert est.latency_model.per_decode_seq_s == pytest.approx(3.3e-5, rel=1e-6)


# --- presets, config, use by the penalty ---------------------------------------------------------


def test_v100_profiles_are_the_papers_figures_not_fitted():
    est = fit_impact_estimator(EstimatorConfig(profile=PAPER_PROFILE))
    lm = est.latency_model
    assert (lm.base_s, lm.grad1, lm.per_decode_seq_s, lm.grad2) == (0.02, 3.2e-4, 3.3e-5, 0.0)
    assert not est.report.fitted
    assert est.chosen == "paper"
    assert all(math.isfinite(v) for v in est.report.metrics().values())
    ctx = fit_impact_estimator(EstimatorConfig(profile=PAPER_CONTEXT_PROFILE)).latency_model
    assert (ctx.grad2, ctx.per_decode_seq_s) == (3.3e-5, 0.0)
    assert FittedEstimator.from_json(est.to_json()).report.to_markdown() == est.report.to_markdown()


def test_config_is_strict():
    with pytest.raises(ValidationError):
        EstimatorConfig(profile="a100-llama2-7b", typo=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown profile"):
        EstimatorConfig(profile="tpu")
    with pytest.raises(ValidationError, match="holdout_replays"):
        EstimatorConfig(num_replays=3, holdout_replays=3)
    with pytest.raises(ValidationError):
        EstimatorConfig().model_copy(update={"seed": 1}).__setattr__("seed", 2)


def test_the_fitted_estimator_drives_the_mixing_penalty():
    est = _fit_synthetic()
    req = RequestView("r", 0.0, 0.0, prompt_tokens=800, task="t", predicted_output_tokens=200.0)
    view = InstanceView(
        index=0,
        num_running=4,
        num_waiting=0,
        kv_used_blocks=200,
        kv_total_blocks=4000,
        outstanding_prompt_tokens=0,
        outstanding_decode_tokens=400.0,
        num_prefill_requests=0,
        num_decode_requests=4,
    )
    kw = {"block_size": 16, "max_batch_size": 256}
    got = mixing_penalty_s(req, view, est.latency_model, **kw)
    want = mixing_penalty_s(req, view, LinearLatencyModel(**TRUE, name="truth"), **kw)
    assert got > 0
    assert got == pytest.approx(want, rel=1e-5)


def test_input_example_has_the_served_columns():
    ex = _fit_synthetic().input_example()
    assert list(ex.columns) == list(FEATURES)
    assert len(ex) >= 1


def test_fit_module_imports_no_torch_or_mlflow():
    code = (
        "import sys, training.impact.fit, training.impact.penalty\n"
        "bad = [m for m in ('torch', 'mlflow', 'duckdb', 'prefect') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_report_regime_names_match_the_fit_regimes():
    from training.impact.fit import REGIMES
    from training.impact.report import REGIME_NAMES

    assert tuple(REGIMES) == REGIME_NAMES
