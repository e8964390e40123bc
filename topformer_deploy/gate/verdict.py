"""One verdict from two sample sets: the statistics that decide regression / improvement / same.

Latencies (:func:`compare_samples`): ``regression`` needs BOTH a median slowdown above the threshold AND a
significant two-sided Mann-Whitney U test; ``improvement`` likewise the other way. ``same`` needs the
confidence interval of the change to rule out a slowdown beyond the threshold. Everything else - too few
runs, an interval too wide to decide - is ``inconclusive``: rerun with more runs.

Instruction counts of a simulated core (:func:`compare_counts`) are deterministic: the change of the medians
against a relative tolerance decides, as long as each side repeats within that tolerance.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from .. import stats

MIN_RUNS = 10        # below this a 99% interval of the change cannot be narrow enough to decide
#: Deterministic mode (instruction counts of a simulated core): a relative change within this is "same".
DEFAULT_TOLERANCE = 0.001
VERDICTS = ("regression", "improvement", "same", "inconclusive")


@dataclass
class Verdict:
    """The outcome of comparing two sample sets: latencies (ms) or instruction counts (a simulated core)."""

    verdict: str
    reason: str
    base_median: float | None = None
    cand_median: float | None = None
    change: float | None = None          # median(cand) / median(base) - 1
    ci_low: float | None = None          # Hodges-Lehmann interval of the relative change
    ci_high: float | None = None
    confidence: float | None = None
    p_value: float | None = None
    n_base: int = 0
    n_cand: int = 0
    unit: str = "ms"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["ci_high"] is not None and math.isinf(d["ci_high"]):
            d["ci_high"] = None          # JSON has no infinity: unbounded
        return d


def parse_slowdown(text) -> float:
    """``5%`` or ``0.05`` -> 0.05; ValueError for anything else or outside [0, 10)."""
    s = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%?)", s)
    if not m:
        raise ValueError(f"{text!r} is not a fraction: use 5% or 0.05")
    value = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0 <= value < 10:
        raise ValueError(f"{text!r} is out of range")
    return value


def compare_samples(base_ms, cand_ms, max_slowdown: float = 0.05, alpha: float = 0.01,
                    min_runs: int = MIN_RUNS) -> Verdict:
    """Verdict on candidate vs baseline latencies (see the module docstring for the rules)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    base, cand = stats.as_samples(base_ms), stats.as_samples(cand_ms)
    v = Verdict("inconclusive", "", float(np.median(base)), float(np.median(cand)),
                stats.relative_change(base, cand), n_base=base.size, n_cand=cand.size,
                confidence=1 - alpha)
    _, v.ci_low, v.ci_high = stats.change_ci(base, cand, confidence=1 - alpha)
    v.p_value = stats.mann_whitney_p(base, cand)
    if min(base.size, cand.size) < min_runs:
        v.reason = (f"too few runs ({base.size} baseline, {cand.size} candidate; need >= {min_runs}): "
                    "rerun with more --runs")
        return v
    significant = v.p_value < alpha
    pct = f"{v.change:+.1%}"
    ci = ci_text(v)
    if significant and v.change > max_slowdown:
        v.verdict, v.reason = "regression", f"median {pct} > +{max_slowdown:.0%} and p={v.p_value:.2g} < {alpha}"
    elif significant and v.change < -max_slowdown:
        v.verdict, v.reason = "improvement", f"median {pct} < -{max_slowdown:.0%} and p={v.p_value:.2g} < {alpha}"
    elif v.ci_high <= max_slowdown:
        v.verdict = "same"
        v.reason = f"change {pct}, {ci} rules out a slowdown beyond {max_slowdown:.0%}"
    else:
        v.reason = (f"too noisy to decide: change {pct} (p={v.p_value:.2g}), {ci} reaches past "
                    f"+{max_slowdown:.0%}; rerun with more --runs or a quieter device")
    return v


def ci_text(v: Verdict) -> str:
    high = "inf" if math.isinf(v.ci_high) else f"{v.ci_high:+.1%}"
    return f"{v.confidence:.0%} CI [{v.ci_low:+.1%}, {high}]"


def compare_counts(base_counts, cand_counts, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """Deterministic verdict on instructions per inference: change of the medians against ``tolerance``."""
    base, cand = stats.as_samples(base_counts), stats.as_samples(cand_counts)
    b, c = float(np.median(base)), float(np.median(cand))
    v = Verdict("inconclusive", "", b, c, c / b - 1, n_base=base.size, n_cand=cand.size, unit="instructions")
    spread = max(float(np.ptp(base)) / b, float(np.ptp(cand)) / c)
    pct = f"{v.change:+.3%}"
    if spread > tolerance:
        v.reason = (f"the counts do not repeat within {tolerance:.2%} (spread {spread:.2%}): threads or a "
                    "time-dependent path; compare with --threads 1")
    elif v.change > tolerance:
        v.verdict, v.reason = "regression", f"instructions {pct} > +{tolerance:.2%}"
    elif v.change < -tolerance:
        v.verdict, v.reason = "improvement", f"instructions {pct} < -{tolerance:.2%}"
    else:
        v.verdict, v.reason = "same", f"instructions {pct}, within ±{tolerance:.2%}"
    return v
