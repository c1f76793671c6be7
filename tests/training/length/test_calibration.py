"""Calibration of the length predictor: ECE (15 equal-width bins over (prompt, sample) pairs), a
temperature fitted on the validation prompts, kept only when it lowers their ECE, saved with the
model and used by every served probability (``training.length.metrics`` / ``serving.temper``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.length.metrics import expected_calibration_error, fit_temperature
from training.length.serving import temper


def test_ece_by_hand():
    # prompt 0: confidence 0.9, argmax 0, samples [0, 0, 1] -> bin (0.8667, 0.9333]: acc 2/3
    # prompt 1: confidence 0.6, argmax 1, samples [1]       -> bin (0.5333, 0.6]:    acc 1
    proba = np.array([[0.9, 0.1], [0.4, 0.6]])
    labels = [np.array([0, 0, 1]), np.array([1])]
    want = (3 / 4) * abs(2 / 3 - 0.9) + (1 / 4) * abs(1.0 - 0.6)
    assert expected_calibration_error(proba, labels) == pytest.approx(want)
    assert np.isnan(expected_calibration_error(np.zeros((0, 2)), []))


def test_temperature_keeps_the_argmax_and_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(4) * 0.7, size=2000)
    labels = [rng.choice(4, size=5, p=p) for p in true]
    overconfident = temper(true, 0.5)  # sharpened: what an overfitted head gives
    assert (overconfident.argmax(1) == true.argmax(1)).all()
    assert temper(true, 1.0) is true
    t = fit_temperature(overconfident, labels)
    assert 1.6 < t < 2.5  # about 2 undoes the sharpening
    assert expected_calibration_error(temper(overconfident, t), labels) < expected_calibration_error(
        overconfident, labels
    )
    assert fit_temperature(np.zeros((0, 4)), []) == 1.0


def test_trained_predictor_saves_and_serves_its_temperatures(tiny_trained, tmp_path: Path):
    from training.length.train import TrainedLengthPredictor

    cal = tiny_trained.report.calibration
    for key in ("ece", "ece_uncalibrated", "ece_tabular", "ece_tabular_uncalibrated", "temperature"):
        assert key in cal
    # chosen on validation only: a temperature is kept only where it lowered the validation ECE
    for suffix in ("", "_tabular"):
        if f"val_ece{suffix}_uncalibrated" in cal:
            assert cal[f"val_ece{suffix}"] <= cal[f"val_ece{suffix}_uncalibrated"]
            if cal[f"temperature{suffix}"] != 1.0:
                assert cal[f"val_ece{suffix}"] < cal[f"val_ece{suffix}_uncalibrated"]
    assert "calibration.ece" in tiny_trained.report.metrics()
    tiny_trained.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["temperature"] == tiny_trained.core.temperature
    assert meta["temperature_tabular"] == tiny_trained.core.temperature_tabular
    loaded = TrainedLengthPredictor.load(tmp_path / "p")
    assert loaded.core.temperature == tiny_trained.core.temperature
    core = loaded.core
    tokens, tasks = np.array([12.0, 40.0]), ["Apps", "ShareGPT"]
    raw = core.tabular_proba(tokens, tasks, calibrated=False)
    assert np.allclose(core.tabular_proba(tokens, tasks), temper(raw, core.temperature_tabular))
