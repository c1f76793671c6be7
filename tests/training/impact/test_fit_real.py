"""The estimator on the real Vidur profiles and Azure trace (skipped when the data folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.impact.fit import (
    EstimatorConfig,
    fit_impact_estimator,
    fit_linear_part,
    profile_files,
    profiles_with_data,
)
from training.simulator.profiles import PROFILE_NAMES, hardware_profile


def test_linear_layers_fit_the_raw_mlp_csv(shared_data: Path):
    hw = hardware_profile("a100-llama2-7b")
    lp = fit_linear_part(profile_files(hw, shared_data)[0], hw.n_layers, seed=0, holdout_fraction=0.3)
    assert lp.n_holdout > 0
    assert lp.n_train > lp.n_holdout
    assert lp.holdout_r2 > 0.98
    assert lp.holdout_mape_pct_ge_256_tokens < 10.0
    assert 3e-5 < lp.slope_s_per_token < 1.2e-4  # ~60 us per token for Llama-2-7B on an A100


def test_a_small_fit_on_real_replays_scores_well_on_held_out_replays(shared_data: Path):
    cfg = EstimatorConfig(
        profile="a100-llama2-7b",
        num_replays=3,
        holdout_replays=1,
        requests_per_replay=300,
        data_dir=shared_data,
    )
    est = fit_impact_estimator(cfg)
    chosen = est.variants[est.chosen]
    assert est.report.fitted
    assert est.report.linear_part is not None
    assert chosen.holdout_mape_pct is not None
    assert chosen.holdout_mape_pct < 5.0
    assert chosen.holdout_r2 is not None
    assert chosen.holdout_r2 > 0.9
    assert len(est.data_fingerprint) == 64


@pytest.mark.slow
@pytest.mark.parametrize("profile", [p for p in PROFILE_NAMES if hardware_profile(p).compute_dir])
def test_default_fit_per_profile(shared_data: Path, profile: str):
    """The documented fits (docs/impact_estimator.md): rich chosen, held-out MAPE under 2 %."""
    if profile not in profiles_with_data(shared_data):
        pytest.skip(f"no profile files for {profile}")
    est = fit_impact_estimator(EstimatorConfig(profile=profile, data_dir=shared_data))
    assert est.chosen == "rich"
    assert est.variants["rich"].holdout_mape_pct < 2.0  # type: ignore[operator]
    assert est.variants["rich"].holdout_r2 > 0.95  # type: ignore[operator]
