"""The promotion gate on small hand-built reports: paired t intervals, p99 guard, best baseline, errors."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from eval.gate import GateConfig, promotion_gate
from tests.eval.reports import BASE, hand_report, hand_router, minus


def test_clearly_better_challenger_passes_with_hand_computed_ci():
    # diffs (baseline - challenger) = 2, 3, 4 s: mean 3, sd 1, half-width t_{0.975,2} / sqrt(3) = 2.484 s
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [2.0, 3.0, 4.0])))
    result = promotion_gate(report, "rl")
    assert result.passed
    assert result.best_baseline == "round_robin"
    assert result.champion is None
    (check,) = result.checks
    half = 4.302652729911275 / math.sqrt(3)
    assert check.kind == "best_baseline"
    assert check.diff_mean_s == pytest.approx(3.0)
    assert check.ci_low_s == pytest.approx(3.0 - half)
    assert check.ci_high_s == pytest.approx(3.0 + half)
    assert check.comparator_mean_s == pytest.approx(11.0)
    assert check.challenger_mean_s == pytest.approx(8.0)
    assert check.improvement_pct == pytest.approx(100 * 3.0 / 11.0)
    assert check.mean_ok
    assert check.p99_ok
    assert check.passed
    assert result.reason.startswith("promote rl")


def test_confidence_level_widens_the_interval():
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [2.0, 3.0, 4.0])))
    # t_{0.995,2} = 9.925: half-width 5.73 s > 3 s, so the interval now includes zero
    result = promotion_gate(report, "rl", config=GateConfig(confidence=0.99))
    assert result.checks[0].ci_low_s == pytest.approx(3.0 - 9.924843 / math.sqrt(3), rel=1e-5)
    assert not result.passed


def test_worse_challenger_is_refused_and_reason_names_the_comparator():
    report = hand_report(
        hand_router("round_robin", BASE),
        hand_router("least_loaded", minus(BASE, [2.0, 2.0, 2.0])),
        hand_router("rl", minus(BASE, [1.0, 1.1, 0.9])),
    )
    result = promotion_gate(report, "rl")
    assert not result.passed
    assert result.best_baseline == "least_loaded"
    assert "least_loaded" in result.reason
    assert result.checks[0].diff_mean_s == pytest.approx(-1.0)
    assert not result.checks[0].mean_ok


def test_better_mean_but_noisy_ci_including_zero_is_refused():
    # diffs 1, 2, 3 s: mean 2 s, but the 95 % half-width is 4.303 / sqrt(3) = 2.484 s
    modest = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [1.0, 2.0, 3.0])))
    low = promotion_gate(modest, "rl").checks[0].ci_low_s
    assert low == pytest.approx(2.0 - 4.302652729911275 / math.sqrt(3))
    assert low < 0
    # mean diff +1 s but the per-seed differences swing from -3 to +5 s
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [5.0, -3.0, 1.0])))
    result = promotion_gate(report, "rl")
    check = result.checks[0]
    assert check.diff_mean_s == pytest.approx(1.0)
    assert check.ci_low_s < 0 < check.ci_high_s
    assert not check.mean_ok
    assert check.p99_ok
    assert not result.passed
    assert "CI" in result.reason
    assert "round_robin" in result.reason


def test_better_mean_but_worse_p99_is_refused():
    report = hand_report(
        hand_router("round_robin", BASE, p99=[30.0, 30.0, 30.0]),
        hand_router("rl", minus(BASE, [2.0, 3.0, 4.0]), p99=[31.0, 31.0, 31.0]),
    )
    result = promotion_gate(report, "rl")
    check = result.checks[0]
    assert check.mean_ok
    assert not check.p99_ok
    assert not result.passed
    assert "p99" in result.reason
    assert "31.000 s" in result.reason


def test_tolerance_lets_a_slightly_worse_p99_pass():
    report = hand_report(
        hand_router("round_robin", BASE, p99=[30.0, 30.0, 30.0]),
        hand_router("rl", minus(BASE, [2.0, 3.0, 4.0]), p99=[31.0, 31.0, 31.0]),
    )
    assert promotion_gate(report, "rl", config=GateConfig(p99_tolerance_pct=5.0)).passed
    assert not promotion_gate(report, "rl", config=GateConfig(p99_tolerance_pct=3.0)).passed


def test_champion_check_comes_first_and_both_must_pass():
    report = hand_report(
        hand_router("round_robin", BASE),
        hand_router("rl_v1", minus(BASE, [2.0, 2.0, 2.0])),
        hand_router("rl_v2", minus(BASE, [2.5, 2.6, 2.4])),
    )
    result = promotion_gate(report, "rl_v2", champion="rl_v1")
    assert [(c.kind, c.comparator) for c in result.checks] == [
        ("champion", "rl_v1"),
        ("best_baseline", "round_robin"),
    ]
    assert result.best_baseline == "round_robin"  # the champion is never the best baseline
    assert result.passed
    # the other way round the champion is better: refused, naming the champion
    reverse = promotion_gate(report, "rl_v1", champion="rl_v2")
    assert not reverse.passed
    assert "champion rl_v2" in reverse.reason
    assert "round_robin" not in reverse.reason  # the baseline check passed


def test_oracle_and_excluded_routers_are_not_baselines():
    report = hand_report(
        hand_router("round_robin", BASE),
        hand_router("oracle_sjf", minus(BASE, [5.0, 5.0, 5.0]), oracle=True),
        hand_router("other_candidate", minus(BASE, [4.0, 4.0, 4.0])),
        hand_router("rl", minus(BASE, [2.0, 3.0, 4.0])),
    )
    assert promotion_gate(report, "rl").best_baseline == "other_candidate"
    result = promotion_gate(report, "rl", exclude=["other_candidate"])
    assert result.best_baseline == "round_robin"
    assert result.passed


def test_too_few_seeds_is_refused():
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [2.0, 3.0, 4.0])))
    result = promotion_gate(report, "rl", config=GateConfig(min_seeds=4))
    assert not result.passed
    assert "at least 4 replays" in result.reason
    assert not result.checks[0].passed

    one_seed = hand_report(hand_router("round_robin", [10.0]), hand_router("rl", [5.0]))
    single = promotion_gate(one_seed, "rl")
    assert not single.passed
    assert "at least 2 replays" in single.reason


def test_identical_per_seed_differences_give_a_point_interval():
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [1.0, 1.0, 1.0])))
    check = promotion_gate(report, "rl").checks[0]
    assert check.ci_low_s == pytest.approx(1.0)
    assert check.ci_high_s == pytest.approx(1.0)
    assert check.passed
    same = hand_report(hand_router("round_robin", BASE), hand_router("rl", BASE))
    assert not promotion_gate(same, "rl").passed  # zero difference is not an improvement


def test_nan_per_seed_values_fail_the_check_without_crashing():
    report = hand_report(
        hand_router("round_robin", BASE),
        hand_router("rl", [9.0, float("nan"), 8.0], p99=[20.0, float("nan"), 20.0]),
    )
    result = promotion_gate(report, "rl")
    assert not result.passed
    assert "no finite mean E2E on seed(s) 1" in result.reason
    assert "nan" in result.to_markdown()


def test_baseline_that_served_nothing_ranks_last():
    # a finite-only mean of 1 s would make "broken" look best; NaN must rank it last instead
    report = hand_report(
        hand_router("broken", [float("nan"), 1.0, 1.0]),
        hand_router("round_robin", BASE),
        hand_router("rl", minus(BASE, [2.0, 3.0, 4.0])),
    )
    result = promotion_gate(report, "rl")
    assert result.best_baseline == "round_robin"
    assert result.passed


def test_unknown_names_raise_naming_the_routers_in_the_report():
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", BASE))
    with pytest.raises(ValueError, match=r"unknown challenger router 'nope'.*rl, round_robin"):
        promotion_gate(report, "nope")
    with pytest.raises(ValueError, match=r"unknown champion router 'old'.*rl, round_robin"):
        promotion_gate(report, "rl", champion="old")
    with pytest.raises(ValueError, match="same router"):
        promotion_gate(report, "rl", champion="rl")
    with pytest.raises(ValueError, match="no baseline"):
        promotion_gate(report, "rl", exclude=["round_robin"])


def test_config_is_validated_and_frozen():
    with pytest.raises(ValidationError):
        GateConfig(confidence=0.9999)
    with pytest.raises(ValidationError):
        GateConfig(min_seeds=1)
    with pytest.raises(ValidationError):
        GateConfig(p99_tolerance_pct=-1.0)
    with pytest.raises(ValidationError):
        GateConfig(alpha=0.05)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="frozen"):
        GateConfig().confidence = 0.9


def test_to_markdown_shows_checks_and_decision():
    report = hand_report(
        hand_router("round_robin", BASE),
        hand_router("rl_v1", minus(BASE, [0.5, 0.5, 0.5])),
        hand_router("rl_v2", minus(BASE, [3.0, 3.1, 2.9])),
    )
    md = promotion_gate(report, "rl_v2", champion="rl_v1").to_markdown()
    assert "| rl_v1 | champion |" in md
    assert "| round_robin | best_baseline |" in md
    assert md.rstrip().splitlines()[-1].startswith("**PROMOTE**: promote rl_v2")
    refused = promotion_gate(report, "rl_v1", champion="rl_v2").to_markdown()
    assert "**REFUSE**: not promoted" in refused
    assert "FAIL" in refused


def test_result_round_trips_through_json():
    report = hand_report(hand_router("round_robin", BASE), hand_router("rl", [9.0, float("nan"), 8.0]))
    result = promotion_gate(report, "rl")
    again = type(result).model_validate_json(result.model_dump_json())
    assert again.reason == result.reason
    assert math.isnan(again.checks[0].diff_mean_s)


def test_repeated_seeds_are_refused():
    """``eval_seeds = [0, 0]``: one window twice gives a zero-width interval; 0.01 s better passed."""
    report = hand_report(hand_router("round_robin", [10.0, 10.0]), hand_router("rl", [9.99, 9.99]))
    report = report.model_copy(update={"seeds": (0, 0)})
    result = promotion_gate(report, "rl")
    assert not result.passed
    assert "seed(s) 0 repeat" in result.reason
    distinct = promotion_gate(report.model_copy(update={"seeds": (0, 1)}), "rl")
    assert distinct.passed  # the same figures on two different windows do pass


def test_a_tie_with_the_champion_never_promotes():
    report = hand_report(
        hand_router("round_robin", BASE), hand_router("rl", minus(BASE, [1.0, 1.0, 1.0])),
        hand_router("champ", minus(BASE, [1.0, 1.0, 1.0])),
    )  # fmt: skip
    result = promotion_gate(report, "rl", "champ")
    assert not result.passed
    assert "vs champion champ: mean E2E not clearly better: diff +0.000 s" in result.reason
