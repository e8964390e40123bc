"""Statistics of latency samples (milliseconds): summaries, the Mann-Whitney U test, and a
distribution-free confidence interval for the relative change between two sample sets.

The comparison follows what the benchmark comparers do: Google Benchmark's ``compare.py`` runs a
two-sided Mann-Whitney U test (rank based, so a few slow outliers do not decide it); pyperf's
``compare_to --min-speed`` ignores changes smaller than a threshold however significant they are.
The interval is the Hodges-Lehmann one that inverts the same U test (Lehmann 1975, Bauer 1972):
it is computed on log latencies, so it is an interval for the ratio candidate/baseline.
"""
from __future__ import annotations

import math

import numpy as np


def summarize(latencies_ms) -> dict[str, float]:
    """p50, p90, mean, std (sample), min, max and coefficient of variation of ``latencies_ms``."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return {
        "count": int(x.size),
        "p50": float(np.percentile(x, 50)),
        "p90": float(np.percentile(x, 90)),
        "mean": mean,
        "std": std,
        "min": float(x.min()),
        "max": float(x.max()),
        "cv": std / mean if mean > 0 else 0.0,
    }


def as_samples(latencies_ms) -> np.ndarray:
    """Latencies as a float array; raises ValueError unless all are finite and positive."""
    x = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("latency samples must be finite positive numbers")
    return x


def relative_change(base_ms, cand_ms) -> float:
    """median(candidate) / median(baseline) - 1 (positive = slower)."""
    return float(np.median(cand_ms) / np.median(base_ms) - 1.0)


def mann_whitney_p(base_ms, cand_ms) -> float:
    """Two-sided Mann-Whitney U p-value (scipy picks the exact or the tie-corrected normal method)."""
    base, cand = np.asarray(base_ms, float), np.asarray(cand_ms, float)
    if np.ptp(np.concatenate([base, cand])) == 0:
        return 1.0                       # all values equal: no evidence of any difference
    from scipy import stats as _st  # scipy is slow to import; only the gate needs it

    return float(_st.mannwhitneyu(cand, base, alternative="two-sided").pvalue)


def change_ci(base_ms, cand_ms, confidence: float = 0.99) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate and distribution-free CI of the relative change candidate/baseline - 1.

    The shift is estimated on log latencies as the median of all pairwise differences
    log(cand_j) - log(base_i); the interval takes the order statistics of those differences that the
    U test's critical value points to (normal approximation of U's null distribution). With too few
    runs for the requested confidence the interval is unbounded (-1, inf).
    """
    lb, lc = np.log(np.asarray(base_ms, float)), np.log(np.asarray(cand_ms, float))
    m, n = lb.size, lc.size
    diffs = np.subtract.outer(lc, lb).ravel()
    total = diffs.size
    from scipy import stats as _st

    z = _st.norm.ppf(0.5 + confidence / 2)
    k = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    mid = (total - 1) // 2, total // 2
    if k < 0:
        part = np.partition(diffs, mid)
        return float(math.expm1(0.5 * (part[mid[0]] + part[mid[1]]))), -1.0, math.inf
    part = np.partition(diffs, sorted({k, total - 1 - k, *mid}))
    estimate = 0.5 * (part[mid[0]] + part[mid[1]])
    return float(math.expm1(estimate)), float(math.expm1(part[k])), float(math.expm1(part[total - 1 - k]))


def robust_cv(latencies_ms) -> float:
    """Scaled median absolute deviation over the median: a CV that a few outliers do not inflate."""
    x = np.asarray(latencies_ms, float)
    med = float(np.median(x))
    from scipy import stats as _st

    return float(_st.median_abs_deviation(x, scale="normal") / med) if med > 0 else 0.0


def outlier_count(latencies_ms, k: float = 3.0) -> int:
    """Runs beyond Tukey's far fences (quartiles -/+ k * IQR), e.g. a run hit by a context switch."""
    x = np.asarray(latencies_ms, float)
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return int(np.sum((x < q1 - k * iqr) | (x > q3 + k * iqr)))
