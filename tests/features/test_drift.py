"""Drift detection: same distribution -> no drift; shifted lengths, new tasks, rate changes -> drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.drift import DriftThresholds, detect_drift, psi


def window(seed: int, n: int = 2000, out_median: float = 200.0, rate: float = 5.0, tasks=("code", "chat")):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "task": rng.choice(list(tasks), size=n),
            "prompt_tokens": rng.lognormal(np.log(500), 0.6, n).astype(int) + 1,
            "output_tokens": rng.lognormal(np.log(out_median), 0.7, n).astype(int) + 1,
            "arrival_s": np.cumsum(rng.exponential(1.0 / rate, n)),
        }
    )


def test_psi_is_zero_for_identical_and_large_for_shifted_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert psi(x, x + 2.0) > 1.0
    with pytest.raises(ValueError, match="non-empty"):
        psi(x, np.array([]))


def test_same_distribution_is_not_drift():
    report = detect_drift(window(0), window(1))
    assert not report.drifted, report.reasons
    assert report.rate_ratio == pytest.approx(1.0, rel=0.1)
    assert {t.task for t in report.tasks} == {"(all)", "code", "chat"}


def test_longer_outputs_are_drift_and_the_markdown_says_which():
    report = detect_drift(window(0), window(1, out_median=600.0))
    assert report.drifted
    assert any("output PSI" in r for r in report.reasons)
    assert "| code |" in report.to_markdown()


def test_a_new_task_and_a_rate_change_are_drift():
    report = detect_drift(window(0), window(1, tasks=("code", "chat", "summarize")))
    assert any("summarize" in r and "only in the new window" in r for r in report.reasons)
    faster = detect_drift(window(0), window(1, rate=12.0), DriftThresholds(rate_ratio=1.5))
    assert any("arrival rate" in r for r in faster.reasons)


def test_missing_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="lacks columns"):
        detect_drift(window(0).drop(columns=["arrival_s"]), window(1))
