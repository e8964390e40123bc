"""The latency regression gate: statistics per configuration, baselines, verdicts and exit codes."""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "gate_results": ".compare", "gate_compared": ".compare", "GateReport": ".compare", "EXIT_CODES": ".compare",
    "IncompatibleBaselineError": ".compare", "github_benchmark_entries": ".compare",
    "compare_samples": ".verdict", "parse_slowdown": ".verdict", "Verdict": ".verdict", "MIN_RUNS": ".verdict",
    "load_result_or_baseline": ".baseline", "load_compare": ".baseline", "save_baseline": ".baseline", "entries_of": ".baseline",
    "BaselineError": ".baseline",
})
