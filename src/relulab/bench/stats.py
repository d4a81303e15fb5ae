"""Statistics of a benchmark: summaries with t-based 95% CIs, paired t-tests against a
baseline with Holm's correction, calibration error and the prediction difference across seeds."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from relulab.optional import require


def _scipy_stats():
    return require(
        "scipy.stats", extra="bench", purpose="the benchmark's statistics", package="scipy"
    )


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sample std and the t-based 95% confidence interval of the mean."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(data)
    mean = float(data.mean()) if n else math.nan
    std = float(data.std(ddof=1)) if n > 1 else math.nan
    half = float(_scipy_stats().t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_t_test(treatment: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """Mean paired difference (treatment − baseline) and the two-sided p-value.

    Pairs with a non-finite member are dropped. With fewer than two pairs, or the same
    difference on every pair, the p-value is NaN: there is nothing a t-test can say. "The
    same" allows for rounding (accuracies are k/N, and k/N − j/N is not always exact), so
    the verdict does not depend on which test set sizes happen to round evenly.
    """
    pairs = [(t, b) for t, b in zip(treatment, baseline) if math.isfinite(t) and math.isfinite(b)]
    if not pairs:
        return math.nan, math.nan
    differences = np.asarray([t - b for t, b in pairs])
    spread = float(differences.max() - differences.min())
    if len(pairs) < 2 or spread <= 1e-12 * max(1.0, float(np.abs(differences).max())):
        return float(differences.mean()), math.nan
    result = _scipy_stats().ttest_rel([t for t, _ in pairs], [b for _, b in pairs])
    return float(differences.mean()), float(result.pvalue)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values; NaN entries stay NaN and do not count."""
    tested = sorted((p, name) for name, p in p_values.items() if math.isfinite(p))
    m = len(tested)
    adjusted = dict.fromkeys(p_values, math.nan)
    running = 0.0
    for rank, (p, name) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


# Equal-width confidence bins of the ECE (Guo et al. 2017 use 15).
ECE_BINS = 15


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over equal-width confidence bins: Σ_b (|b|/N)·|accuracy(b) − confidence(b)|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def prediction_difference(probabilities: Sequence[np.ndarray]) -> dict[str, float]:
    """How much independently trained replicas disagree on the same test set.

    For every pair of replicas: the top-1 disagreement rate (fraction of examples whose
    argmax differs) and the expected total variation ½·Σ_c |p₁(c) − p₂(c)|, averaged over
    examples; both are then averaged over pairs (Shamir et al. 2020, arXiv:2010.09931).
    """
    pairs = list(itertools.combinations(probabilities, 2))
    if not pairs:
        return {"pairs": 0, "top1": math.nan, "total_variation": math.nan}
    top1 = [float((a.argmax(1) != b.argmax(1)).mean()) for a, b in pairs]
    tv = [float(0.5 * np.abs(a.astype(np.float64) - b).sum(1).mean()) for a, b in pairs]
    return {
        "pairs": len(pairs),
        "top1": float(np.mean(top1)),
        "total_variation": float(np.mean(tv)),
    }
