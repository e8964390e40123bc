"""Statistics behind the gate: U test, Hodges-Lehmann interval of the change, robust noise measures."""
from __future__ import annotations

import math

import numpy as np
import pytest

from topformer_deploy import stats


def lognormal(median, sigma, n, seed):
    return np.random.default_rng(seed).lognormal(math.log(median), sigma, n)


def test_summarize_keeps_its_contract():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["count"] == 4 and s["p50"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    with pytest.raises(ValueError):
        stats.summarize([])


def test_relative_change_is_of_medians():
    assert stats.relative_change([10, 10, 10, 1000], [11, 11, 11, 11]) == pytest.approx(0.1)


def test_ci_covers_a_known_shift_and_excludes_zero():
    base = lognormal(20.0, 0.02, 40, 1)
    cand = lognormal(20.0, 0.02, 40, 2) * 1.10
    est, low, high = stats.change_ci(base, cand, confidence=0.99)
    assert low < 0.10 < high
    assert low > 0.05 and high < 0.15
    assert low <= est <= high


def test_ci_is_exact_for_a_pure_shift():
    base = np.linspace(10, 11, 25)
    est, low, high = stats.change_ci(base, base * 1.2, confidence=0.95)
    assert est == pytest.approx(0.2, abs=0.02)
    assert low < 0.2 < high


def test_ci_widens_with_noise_and_narrows_with_runs():
    quiet = stats.change_ci(lognormal(20, 0.01, 30, 3), lognormal(20, 0.01, 30, 4))
    noisy = stats.change_ci(lognormal(20, 0.10, 30, 3), lognormal(20, 0.10, 30, 4))
    many = stats.change_ci(lognormal(20, 0.10, 300, 3), lognormal(20, 0.10, 300, 4))
    width = lambda ci: ci[2] - ci[1]  # noqa: E731
    assert width(noisy) > 5 * width(quiet)
    assert width(many) < width(noisy) / 2


def test_ci_unbounded_with_too_few_runs():
    _, low, high = stats.change_ci([1.0, 1.1, 1.2], [1.0, 1.1, 1.3], confidence=0.99)
    assert low == -1.0 and math.isinf(high)


def test_mann_whitney_detects_shift_not_noise():
    base = lognormal(20, 0.03, 30, 5)
    assert stats.mann_whitney_p(base, lognormal(20, 0.03, 30, 6)) > 0.01
    assert stats.mann_whitney_p(base, lognormal(20, 0.03, 30, 6) * 1.1) < 1e-6
    assert stats.mann_whitney_p([5.0] * 10, [5.0] * 10) == 1.0


def test_mann_whitney_is_robust_to_a_few_huge_outliers():
    base = lognormal(20, 0.02, 30, 7)
    cand = lognormal(20, 0.02, 30, 8)
    cand[:3] = 500.0                  # three runs hit by something else
    assert stats.mann_whitney_p(base, cand) > 0.01


def test_robust_cv_and_outliers():
    x = lognormal(20, 0.02, 200, 9)
    assert stats.robust_cv(x) == pytest.approx(0.02, rel=0.3)
    y = x.copy()
    y[:4] = 200.0
    assert stats.robust_cv(y) == pytest.approx(stats.robust_cv(x), rel=0.2)
    assert stats.outlier_count(y) == 4 and stats.outlier_count(x) == 0


def test_as_samples_rejects_bad_values():
    for bad in ([], [1.0, float("nan")], [1.0, -2.0], [0.0, 1.0]):
        with pytest.raises(ValueError):
            stats.as_samples(bad)
