"""The latency regression gate: a verdict per configuration from baseline vs candidate samples.

``regression`` needs BOTH a median slowdown above the threshold AND a significant two-sided
Mann-Whitney U test; ``improvement`` likewise the other way. ``same`` needs the confidence interval
of the change to rule out a slowdown beyond the threshold. Everything else - too few runs, an
interval too wide to decide, a throttled or hot device - is ``inconclusive``: rerun with more runs.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import TopformerDeployError
from . import stats
from .baseline import entries_of

MIN_RUNS = 10        # below this a 99% interval of the change cannot be narrow enough to decide
VERDICTS = ("regression", "improvement", "same", "inconclusive")
EXIT_CODES = {"pass": 0, "regression": 1, "inconclusive": 2}


class IncompatibleBaselineError(TopformerDeployError):
    """The baseline was measured under other conditions (device, runtime, threads, engine)."""


@dataclass
class Verdict:
    """The outcome of comparing two latency sample sets (ms)."""

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
    ci = _ci_text(v)
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


def _ci_text(v: Verdict) -> str:
    high = "inf" if math.isinf(v.ci_high) else f"{v.ci_high:+.1%}"
    return f"{v.confidence:.0%} CI [{v.ci_low:+.1%}, {high}]"


def unusable_conditions(doc: dict) -> str | None:
    """Why a result's latencies are unusable (interrupted run, throttled now, hot device), else None."""
    if doc.get("partial"):
        return "the run was interrupted (partial result)"
    cond = doc.get("conditions") or {}
    throttled = cond.get("throttled")
    if throttled not in (None, ""):
        try:
            bits = int(str(throttled), 16)
        except ValueError:
            bits = 0
        if bits & 0xF:                   # under-voltage / freq capped / throttled / soft temp limit NOW
            return f"device throttled during the run (vcgencmd get_throttled={throttled})"
    if cond.get("hot"):
        temp = cond.get("temp_after_c") or cond.get("temp_before_c")
        return f"device hot during the run ({temp} C)" if temp is not None else "device hot during the run"
    return None


def check_compatible(base: dict, cand: dict, same_runtime: bool = True) -> None:
    """Raise IncompatibleBaselineError if the two results were measured under other conditions.

    ``same_runtime=False`` (a deliberate comparison of two builds, e.g. TFLite vs ONNX) skips the runtime check.
    """
    key = cand.get("config_key", "?")
    bdev, cdev = base.get("device") or {}, cand.get("device") or {}
    if bdev.get("id") != cdev.get("id"):
        raise IncompatibleBaselineError(
            f"baseline for {key} is from device {bdev.get('id')!r}, candidate from {cdev.get('id')!r}: "
            "latencies from different devices cannot be compared; record a baseline on this device")
    brt, crt = base.get("runtime") or {}, cand.get("runtime") or {}
    for what in ("name", "version") if same_runtime else ():
        if brt.get(what) != crt.get(what):
            raise IncompatibleBaselineError(
                f"baseline for {key} used runtime {brt.get('name')} {brt.get('version')}, candidate "
                f"{crt.get('name')} {crt.get('version')}: refresh the baseline with this runtime")
    bcfg, ccfg = base.get("config") or {}, cand.get("config") or {}
    for what, label in (("threads", "thread count"), ("engine", "engine")):
        if bcfg.get(what) != ccfg.get(what):
            raise IncompatibleBaselineError(
                f"baseline for {key} ran with {label} {bcfg.get(what)}, candidate with {ccfg.get(what)}")


def _threadless(key: str) -> str:
    return re.sub(r"/t\d+/", "/t*/", key)


@dataclass
class GateRow:
    config_key: str
    verdict: Verdict
    base_stats: dict | None = None
    cand_stats: dict | None = None
    base_ms: list | None = None
    cand_ms: list | None = None


@dataclass
class GateReport:
    """Verdicts per configuration; ``exit_code`` 0 pass, 1 regression, 2 inconclusive."""

    rows: list[GateRow]
    max_slowdown: float
    alpha: float
    device: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        verdicts = {r.verdict.verdict for r in self.rows}
        if "regression" in verdicts:
            return "regression"
        if "inconclusive" in verdicts or not self.rows:
            return "inconclusive"
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict:
        return {"schema": "topformer-deploy/gate-report", "schema_version": 1, "status": self.status,
                "exit_code": self.exit_code, "max_slowdown": self.max_slowdown, "alpha": self.alpha,
                "device": self.device, "runtime": self.runtime,
                "configurations": [{"config_key": r.config_key, **r.verdict.to_dict(),
                                    "baseline": r.base_stats, "candidate": r.cand_stats} for r in self.rows]}

    def _cells(self, row: GateRow) -> list[str]:
        v = row.verdict
        ms = lambda x, n: "-" if x is None else f"{x:.2f} ms ({n})"  # noqa: E731
        change = "-" if v.change is None else f"{v.change:+.1%}"
        if v.ci_low is None:
            ci = "-"
        else:
            ci = f"[{v.ci_low:+.1%}, {'inf' if math.isinf(v.ci_high) else f'{v.ci_high:+.1%}'}]"
        p = "-" if v.p_value is None else f"{v.p_value:.2g}"
        return [row.config_key, ms(v.base_median, v.n_base), ms(v.cand_median, v.n_cand), change, ci, p,
                v.verdict]

    _HEADERS = ("configuration", "baseline p50", "candidate p50", "change", "CI", "p", "verdict")

    def table(self):
        """A rich Table: old vs new medians, relative change, its confidence interval, verdict (reasons below)."""
        from rich.table import Table

        colors = {"regression": "red", "improvement": "green", "same": "", "inconclusive": "yellow"}
        table = Table(title=f"latency gate: max slowdown {self.max_slowdown:.0%}, alpha {self.alpha} "
                            f"-> {self.status.upper()}",
                      caption="\n".join(f"{r.config_key}: {r.verdict.reason}" for r in self.rows),
                      caption_justify="left")
        for col in self._HEADERS:
            table.add_column(col, justify="left" if col in ("configuration", "verdict") else "right")
        for row in self.rows:
            table.add_row(*self._cells(row), style=colors[row.verdict.verdict] or None)
        return table

    def chart(self, path) -> None:
        """Box plots of baseline vs candidate latencies per configuration, written to ``path`` (PNG/SVG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..files import write_atomic

        rows = [r for r in self.rows if r.cand_ms]
        fig, ax = plt.subplots(figsize=(8, 1.0 + 0.9 * max(1, len(rows))))
        data, labels, colors = [], [], []
        for r in reversed(rows):
            for name, ms, color in (("candidate", r.cand_ms, "tab:orange"), ("baseline", r.base_ms, "tab:blue")):
                if ms:
                    data.append(ms)
                    labels.append(f"{r.config_key} {name}" + (f" [{r.verdict.verdict}]" if name == "candidate" else ""))
                    colors.append(color)
        boxes = ax.boxplot(data, orientation="horizontal", patch_artist=True, showfliers=True)
        for patch, color in zip(boxes["boxes"], colors):
            patch.set_facecolor(color)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xlabel("latency per run (ms)")
        ax.set_title(f"latency gate ({self.status}): {self.device.get('model') or self.device.get('id', '')}",
                     fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else "png")
        plt.close(fig)
        write_atomic(path, buf.getvalue())

    def markdown(self) -> str:
        """A Markdown summary (for $GITHUB_STEP_SUMMARY)."""
        icon = {"pass": ":white_check_mark:", "regression": ":x:", "inconclusive": ":warning:"}[self.status]
        lines = [f"### Latency gate: {icon} {self.status}", "",
                 f"Threshold: median slowdown > {self.max_slowdown:.0%} with Mann-Whitney U p < {self.alpha} "
                 f"({1 - self.alpha:.0%} Hodges-Lehmann CI of the change).",
                 f"Device: `{self.device.get('id', '?')}` {self.device.get('model') or ''}; runtime "
                 f"{self.runtime.get('name', '?')} {self.runtime.get('version', '')}", "",
                 "| " + " | ".join(self._HEADERS) + " |", "|" + "---|" * len(self._HEADERS)]
        for row in self.rows:
            cells = self._cells(row)
            cells[0] = f"`{cells[0]}`"
            cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- `{r.config_key}`: {r.verdict.reason}" for r in self.rows]
        return "\n".join(lines) + "\n"


def gate_results(baseline_doc: dict, candidate_doc: dict, max_slowdown: float = 0.05, alpha: float = 0.01,
                 min_runs: int = MIN_RUNS, cross_config: bool = False) -> GateReport:
    """Compare every candidate configuration with the baseline entry of the same ``config_key``.

    Either document may be one bench result or a baseline file. ``cross_config`` compares a single
    baseline configuration with a single candidate one whatever their keys (two variants, two builds).
    Raises IncompatibleBaselineError (exit 2) for a baseline from another device, runtime name/version,
    thread count or engine.
    """
    base_entries, cand_entries = entries_of(baseline_doc), entries_of(candidate_doc)
    if not cand_entries:
        raise TopformerDeployError("the candidate has no bench results")
    if cross_config:
        if len(base_entries) != 1 or len(cand_entries) != 1:
            raise TopformerDeployError("comparing across configurations needs exactly one baseline and one "
                                       f"candidate configuration (got {len(base_entries)} and {len(cand_entries)})")
        (bkey, base), (ckey, cand) = *base_entries.items(), *cand_entries.items()
        pairs = [(ckey if bkey == ckey else f"{bkey} -> {ckey}", base, cand)]
    else:
        pairs = [(key, base_entries.get(key), cand) for key, cand in cand_entries.items()]
    rows = []
    for key, base, cand in pairs:
        if base is None:
            others = [k for k in base_entries if _threadless(k) == _threadless(key)]
            if others:
                check_compatible(base_entries[others[0]], cand)   # raises on the thread count
            rows.append(GateRow(key, Verdict("inconclusive", f"no baseline entry for {key}: save one with "
                                                             "bench --save-baseline"),
                                None, stats.summarize(cand["latencies_ms"]), None, cand["latencies_ms"]))
            continue
        check_compatible(base, cand, same_runtime=not cross_config)
        verdict = compare_samples(base["latencies_ms"], cand["latencies_ms"], max_slowdown, alpha, min_runs)
        for who, doc in (("candidate", cand), ("baseline", base)):
            problem = unusable_conditions(doc)
            if problem and verdict.verdict != "inconclusive":
                verdict.verdict = "inconclusive"
                verdict.reason = f"{who}: {problem}; the comparison would have said {verdict.reason}"
            elif problem:
                verdict.reason = f"{who}: {problem}; {verdict.reason}"
        rows.append(GateRow(key, verdict, stats.summarize(base["latencies_ms"]),
                            stats.summarize(cand["latencies_ms"]), base["latencies_ms"], cand["latencies_ms"]))
    first = next(iter(cand_entries.values()))
    return GateReport(rows, max_slowdown, alpha, first.get("device") or {}, first.get("runtime") or {})


def github_benchmark_entries(result_docs) -> list[dict]:
    """github-action-benchmark ``customSmallerIsBetter`` entries: median latency per configuration."""
    entries = []
    for doc in result_docs:
        for key, result in entries_of(doc).items():
            s = stats.summarize(result["latencies_ms"])
            device = result.get("device") or {}
            runtime = result.get("runtime") or {}
            entries.append({
                "name": f"{key} p50",
                "unit": "ms",
                "value": round(s["p50"], 4),
                "range": f"± {s['std']:.4f}",
                "extra": (f"device: {device.get('model') or device.get('id')}; runtime: {runtime.get('name')} "
                          f"{runtime.get('version')}; runs: {s['count']}; p90: {s['p90']:.4f} ms; "
                          f"cv: {s['cv']:.3f}"),
            })
    return entries
