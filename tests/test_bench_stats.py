"""Benchmark statistics against hand-worked examples and scipy."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats

from relulab.bench import stats


def test_summary_is_mean_sample_std_and_t_interval():
    values = [0.91, 0.93, 0.94, 0.90]
    got = stats.summary(values)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert got["n"] == 4
    assert got["mean"] == pytest.approx(0.92)
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))


def test_summary_of_one_value_has_no_spread_and_skips_nan():
    got = stats.summary([0.5, math.nan])
    assert (
        got["n"] == 1
        and got["mean"] == 0.5
        and math.isnan(got["std"])
        and math.isnan(got["ci_low"])
    )


def test_paired_t_test_matches_scipy_and_drops_broken_pairs():
    treatment, baseline = [0.90, 0.95, 0.93, math.nan], [0.88, 0.91, 0.92, 0.97]
    difference, p = stats.paired_t_test(treatment, baseline)
    assert difference == pytest.approx(np.mean([0.02, 0.04, 0.01]))
    assert p == pytest.approx(scipy_stats.ttest_rel(treatment[:3], baseline[:3]).pvalue)


def test_paired_t_test_without_variance_tests_nothing():
    difference, p = stats.paired_t_test([0.9, 0.9, 0.9], [0.8, 0.8, 0.8])
    assert difference == pytest.approx(0.1) and math.isnan(p)


def test_holm_adjustment_worked_example():
    # p sorted: 0.01 (×4), 0.02 (×3), 0.03 (×2), 0.5 (×1) → 0.04, 0.06, 0.06 (monotone), 0.5
    adjusted = stats.holm({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02, "e": math.nan})
    assert adjusted["b"] == pytest.approx(0.04)
    assert adjusted["d"] == pytest.approx(0.06)
    assert adjusted["a"] == pytest.approx(0.06)
    assert adjusted["c"] == pytest.approx(0.5)
    assert math.isnan(adjusted["e"])


def test_prediction_difference_worked_example():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    b = np.array([[0.7, 0.3], [0.6, 0.4], [0.6, 0.4]])
    c = a.copy()
    got = stats.prediction_difference([a, b, c])
    # pairs (a,b), (a,c), (b,c): top-1 disagreements 1/3, 0, 1/3; TV 0.2, 0, 0.2 per example mean
    assert got["pairs"] == 3
    assert got["top1"] == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    assert got["total_variation"] == pytest.approx(((0.2 + 0.4 + 0.0) / 3 * 2) / 3)


def test_expected_calibration_error_worked_example():
    # Two bins: {0.95, 0.95} both right → |1 − 0.95|; {0.55, 0.55} one right → |0.5 − 0.55|.
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 1, 0, 0])
    assert stats.expected_calibration_error(probabilities, labels) == pytest.approx(
        0.5 * 0.05 + 0.5 * 0.05
    )


def ece_by_definition(confidences: list[float], correct: list[bool], bins: int) -> float:
    """ECE from its definition with exact fractions: bin b covers (b/B, (b+1)/B], bin 0 also
    holds 0; Σ_b (|b|/N)·|accuracy(b) − mean confidence(b)|."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(confidences):
        exact = Fraction(c)
        b = max(0, math.ceil(exact * bins) - 1)  # an upper edge belongs to the lower bin
        members.setdefault(b, []).append(i)
    total = Fraction(0)
    for indices in members.values():
        accuracy = Fraction(sum(correct[i] for i in indices), len(indices))
        confidence = sum(Fraction(confidences[i]) for i in indices) / len(indices)
        total += Fraction(len(indices), len(confidences)) * abs(accuracy - confidence)
    return float(total)


def test_ece_bins_points_on_edges_into_the_lower_bin_with_several_points_per_bin():
    """Four classes, 4 bins: several points per bin, five of them exactly on an edge (0.5,
    0.75, 1.0). Moving an edge point to the upper bin changes the answer, because a bin's
    error is |Σ(correct − confidence)|, not a sum of per-point errors."""
    confidences = [0.3, 0.45, 0.5, 0.5, 0.6, 0.7, 0.75, 0.75, 0.8, 0.9, 1.0, 0.95]
    correct = [False, False, True, True, False, True, True, True, False, False, True, True]
    probabilities = np.array([[c, *[(1 - c) / 3] * 3] for c in confidences])  # argmax: class 0
    labels = np.where(correct, 0, 1)
    expected = ece_by_definition(confidences, correct, bins=4)
    upper = ece_by_definition([c - 1e-9 if c in (0.5, 0.75) else c for c in confidences],
                              correct, bins=4)  # fmt: skip
    lower_edge = ece_by_definition([c + 1e-9 if c in (0.5, 0.75) else c for c in confidences],
                                   correct, bins=4)  # fmt: skip
    assert expected == pytest.approx(upper) and abs(expected - lower_edge) > 0.01  # can fail
    got = stats.expected_calibration_error(probabilities, labels, bins=4)
    assert got == pytest.approx(expected, abs=1e-12)


def test_paired_t_test_calls_equal_differences_untestable_whatever_the_rounding():
    # Ahead by exactly 3 of 300 examples on every seed: k/300 differences that round unevenly.
    for treated, baseline in (([166, 170, 160], [163, 167, 157]), ([100, 105], [97, 102])):
        _, p = stats.paired_t_test([t / 300 for t in treated], [b / 300 for b in baseline])
        assert math.isnan(p)
