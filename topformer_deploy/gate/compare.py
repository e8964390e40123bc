"""The latency gate: a verdict per configuration from baseline vs candidate bench results.

Each configuration (``config_key``) of the candidate is judged against the baseline entry of the same key
by :func:`.verdict.compare_samples`; a result measured on another device, runtime, thread count or engine
is refused, and one measured hot, throttled or interrupted makes its verdict inconclusive. Results of a
simulated core carry instruction counts: those are judged deterministically (:func:`.verdict.compare_counts`),
and only against a result of the same core, runtime version, qemu version, input size and precision.
:func:`gate_compared` judges interleaved A/B documents (``bench --compare``) the same way, each B against its A.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import stats
from ..bench.result import unusable_conditions
from ..errors import TopformerDeployError
from .baseline import entries_of
from .verdict import DEFAULT_TOLERANCE, MIN_RUNS, Verdict, compare_counts, compare_samples

EXIT_CODES = {"pass": 0, "regression": 1, "inconclusive": 2}


class IncompatibleBaselineError(TopformerDeployError):
    """The baseline was measured under other conditions (device, runtime, threads, engine)."""


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


def check_counts_comparable(base: dict, cand: dict) -> None:
    """Instruction counts compare only on the same core, runtime and qemu versions, input size and precision."""
    key = cand.get("config_key", "?")
    bsim, csim = (base.get("device") or {}).get("simulation") or {}, (cand.get("device") or {}).get("simulation") or {}
    facts = [("core", bsim.get("core"), csim.get("core")), ("qemu", bsim.get("qemu"), csim.get("qemu")),
             ("runtime", (base.get("runtime") or {}).get("version"), (cand.get("runtime") or {}).get("version")),
             ("input size", base["config"].get("input_size"), cand["config"].get("input_size")),
             ("precision", base["config"].get("precision"), cand["config"].get("precision"))]
    for what, b, c in facts:
        if b != c:
            raise IncompatibleBaselineError(f"instruction counts for {key} are not comparable: {what} {b} in the "
                                            f"baseline, {c} in the candidate")


def _counts(doc: dict) -> list | None:
    return (doc.get("instructions") or {}).get("per_run_total")


def _threadless(key: str) -> str:
    return re.sub(r"/t\d+/", "/t*/", key)


@dataclass
class GateRow:
    """One configuration's verdict and the samples it was drawn from (in the verdict's unit)."""

    config_key: str
    verdict: Verdict
    base_stats: dict | None = None
    cand_stats: dict | None = None
    base_samples: list | None = None
    cand_samples: list | None = None


@dataclass
class GateReport:
    """Verdicts per configuration; ``exit_code`` 0 pass, 1 regression, 2 inconclusive."""

    rows: list[GateRow]
    max_slowdown: float
    alpha: float
    device: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def deterministic(self) -> bool:
        """True when the rows judge instruction counts (a simulated core), not latencies."""
        return bool(self.rows) and all(r.verdict.unit == "instructions" for r in self.rows)

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
                "tolerance": self.tolerance, "device": self.device, "runtime": self.runtime,
                "configurations": [{"config_key": r.config_key, **r.verdict.to_dict(),
                                    "baseline": r.base_stats, "candidate": r.cand_stats} for r in self.rows]}


def gate_results(baseline_doc: dict, candidate_doc: dict, max_slowdown: float = 0.05, alpha: float = 0.01,
                 min_runs: int = MIN_RUNS, cross_config: bool = False,
                 tolerance: float = DEFAULT_TOLERANCE) -> GateReport:
    """Compare every candidate configuration with the baseline entry of the same ``config_key``.

    Either document may be one bench result or a baseline file. ``cross_config`` compares a single
    baseline configuration with a single candidate one whatever their keys (two variants, two builds).
    Raises IncompatibleBaselineError (exit 2) for a baseline from another device, runtime name/version,
    thread count or engine. Instruction counts (a simulated core) are judged against ``tolerance``.
    """
    base_entries, cand_entries = entries_of(baseline_doc), entries_of(candidate_doc)
    if not cand_entries:
        raise TopformerDeployError("the candidate has no bench results")
    if cross_config:
        if len(base_entries) != 1 or len(cand_entries) != 1:
            raise TopformerDeployError("comparing across configurations needs exactly one baseline and one "
                                       f"candidate configuration (got {len(base_entries)} and {len(cand_entries)})")
        (bkey, base), (ckey, cand) = *base_entries.items(), *cand_entries.items()
        pairs = [(_pair_key(bkey, ckey), base, cand)]
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
        rows.append(_judge(key, base, cand, max_slowdown, alpha, min_runs, tolerance, same_runtime=not cross_config))
    first = next(iter(cand_entries.values()))
    return GateReport(rows, max_slowdown, alpha, first.get("device") or {}, first.get("runtime") or {}, tolerance)


def gate_compared(compare_docs, max_slowdown: float = 0.05, alpha: float = 0.01, min_runs: int = MIN_RUNS,
                  tolerance: float = DEFAULT_TOLERANCE) -> GateReport:
    """Judge interleaved A/B documents (``bench --compare BASE HEAD``): each B against its own A, one row each.

    As in ``bench --compare``, A and B may be two configurations (a row ``A-key -> B-key``) or two runtimes;
    all documents must come from one device (a report names one device).
    """
    rows, devices = [], set()
    for doc in compare_docs:
        base, cand = doc["a"], doc["b"]
        devices |= {(base.get("device") or {}).get("id"), (cand.get("device") or {}).get("id")}
        rows.append(_judge(_pair_key(base["config_key"], cand["config_key"]), base, cand, max_slowdown, alpha,
                           min_runs, tolerance, same_runtime=False))
    if not rows:
        raise TopformerDeployError("no compare results to gate")
    if len(devices) > 1:
        named = ", ".join(sorted(map(str, devices)))
        raise IncompatibleBaselineError(f"compare results from several devices ({named}): gate each device's "
                                        "results separately")
    first = compare_docs[0]["b"]
    return GateReport(rows, max_slowdown, alpha, first.get("device") or {}, first.get("runtime") or {}, tolerance)


def _pair_key(base_key: str, cand_key: str) -> str:
    """A row's name: the configuration, or ``A -> B`` when two configurations are compared."""
    return cand_key if base_key == cand_key else f"{base_key} -> {cand_key}"


def _judge(key: str, base: dict, cand: dict, max_slowdown: float, alpha: float, min_runs: int, tolerance: float,
           same_runtime: bool) -> GateRow:
    """One configuration's row: counts judged deterministically when both sides have them, else latencies;
    unusable conditions (hot, throttled, interrupted) on either side make it inconclusive."""
    check_compatible(base, cand, same_runtime=same_runtime)
    if _counts(base) and _counts(cand):
        check_counts_comparable(base, cand)
        verdict = compare_counts(_counts(base), _counts(cand), tolerance)
        samples = (_counts(base), _counts(cand))
    else:
        verdict = compare_samples(base["latencies_ms"], cand["latencies_ms"], max_slowdown, alpha, min_runs)
        samples = (base["latencies_ms"], cand["latencies_ms"])
    for who, doc in (("candidate", cand), ("baseline", base)):
        problem = unusable_conditions(doc)
        if problem and verdict.verdict != "inconclusive":
            verdict.verdict = "inconclusive"
            verdict.reason = f"{who}: {problem}; the comparison would have said {verdict.reason}"
        elif problem:
            verdict.reason = f"{who}: {problem}; {verdict.reason}"
    return GateRow(key, verdict, stats.summarize(samples[0]), stats.summarize(samples[1]), *samples)


def github_benchmark_entries(result_docs) -> list[dict]:
    """github-action-benchmark ``customSmallerIsBetter`` entries: median latency per configuration, or median
    instructions per inference for a simulated core (its wall time is qemu's, not the core's)."""
    entries = []
    for doc in result_docs:
        for key, result in entries_of(doc).items():
            device = result.get("device") or {}
            runtime = result.get("runtime") or {}
            about = (f"device: {device.get('model') or device.get('id')}; runtime: {runtime.get('name')} "
                     f"{runtime.get('version')}")
            if _counts(result):
                s = stats.summarize(_counts(result))
                entries.append({"name": f"{key} instructions", "unit": "instructions", "value": round(s["p50"]),
                                "range": f"± {s['std']:.0f}", "extra": f"{about}; runs: {s['count']}"})
                continue
            s = stats.summarize(result["latencies_ms"])
            entries.append({
                "name": f"{key} p50",
                "unit": "ms",
                "value": round(s["p50"], 4),
                "range": f"± {s['std']:.4f}",
                "extra": f"{about}; runs: {s['count']}; p90: {s['p90']:.4f} ms; cv: {s['cv']:.3f}",
            })
    return entries
