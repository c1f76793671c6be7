"""Report statistics: t quantiles, confidence intervals, paired improvements, markdown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.report import Stat, ci95_halfwidth, improvement_pct, t_quantile_975


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 29, 30, 31, 50, 200):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3)


def test_ci95_halfwidth_three_seeds():
    # sd of (1, 2, 3) = 1; t_{0.975,2} = 4.303
    assert ci95_halfwidth([1.0, 2.0, 3.0]) == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert ci95_halfwidth([5.0]) == 0.0
    assert ci95_halfwidth([2.0, 2.0, 2.0]) == 0.0


def test_stat_of_ignores_non_finite_values_for_mean_and_ci():
    s = Stat.of([1.0, float("nan"), 3.0])
    assert s.mean == 2.0
    assert s.ci95 == pytest.approx(12.706 * np.std([1.0, 3.0], ddof=1) / math.sqrt(2), rel=1e-4)
    assert len(s.per_seed) == 3


def test_improvement_sign_positive_when_router_is_faster():
    s = improvement_pct([10.0, 20.0], [9.0, 15.0])
    assert s.per_seed == (10.0, 25.0)
    assert s.mean == 17.5
    assert improvement_pct([10.0], [12.0]).mean == pytest.approx(-20.0)


def test_stat_is_frozen():
    s = Stat.of([1.0])
    with pytest.raises(Exception, match="frozen"):
        s.mean = 2.0
