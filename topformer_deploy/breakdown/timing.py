"""Timing a breakdown's artifacts on one device, interleaved round by round so drift hits every stage alike."""
from __future__ import annotations

import copy
from collections.abc import Callable

from ..bench.harness import run_bench
from ..bench.result import config_key, merge_post
from ..stats import summarize
from ..model.stages import ALL_STAGES
from .options import NUMPY_POST, BreakdownOptions, Progress


def time_artifacts(artifacts: dict[str, dict], options: BreakdownOptions, progress: Progress,
                   on_partial: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """Time every artifact with the same engine and settings on one device; -> {stage: bench result}.

    The runs are split into ``options.rounds`` rounds; each round times every artifact (in alternating
    order), so a drift of the machine (heat, other load) hits all stages alike rather than one. With the
    python engine and ``options.post``, each round also runs the head artifact (its output: the logits of
    a real photo) with the runner's ``--post``: its result, under NUMPY_POST, times the numpy methods there.
    """
    options = options.resolve_engine(progress)
    order = ["full", *ALL_STAGES] + ([NUMPY_POST] if options.post and options.engine == "python" else [])
    rounds = max(1, min(options.rounds, options.runs))
    per_round = [options.runs // rounds + (1 if r < options.runs % rounds else 0) for r in range(rounds)]
    docs: dict[str, list[dict]] = {stage: [] for stage in order}
    with options.transport(progress) as transport:
        for r, runs in enumerate(per_round):
            for stage in (order if r % 2 == 0 else order[::-1]):
                entry = artifacts["head" if stage == NUMPY_POST else stage]
                bench = options.bench_options(
                    runs, input_file=str(entry["input_file"]) if options.engine == "python" else None,
                    post=tuple(options.post) if stage == NUMPY_POST else ())
                progress(f"round {r + 1}/{rounds}: timing {stage} on {transport.name} "
                         f"({options.warmup} warmup + {runs} runs)")
                docs[stage].append(run_bench(entry["path"], transport, bench))
            if on_partial:
                on_partial({stage: _merge_rounds(d, options, stage) for stage, d in docs.items() if d})
    return {stage: _merge_rounds(d, options, stage) for stage, d in docs.items()}


def _merge_rounds(docs: list[dict], options: BreakdownOptions, stage: str) -> dict:
    """One bench result from the rounds of one artifact: all latencies, stats over all of them."""
    doc = copy.deepcopy(docs[0])
    latencies = [x for d in docs for x in d["latencies_ms"]]
    doc.update({"latencies_ms": latencies, "runs": len(latencies), "stats": summarize(latencies),
                "repeats": [{"runs": d["runs"], "p50": d["stats"]["p50"], "load_ms": d.get("load_ms")} for d in docs]})
    if doc.get("instructions"):  # a simulated core: every round's counted runs
        totals = [t for d in docs for t in d["instructions"]["per_run_total"]]
        doc["instructions"].update(per_run_total=totals, runs=len(totals),
                                   spread=(max(totals) - min(totals)) / min(totals) if min(totals) > 0 else None)
    doc["conditions"]["temp_after_c"] = docs[-1]["conditions"].get("temp_after_c")
    doc["conditions"]["hot"] = any(d["conditions"].get("hot") for d in docs)
    doc["config"]["input_size"] = list(options.input_size)  # a stage's manifest input is an inner tensor
    doc["config"]["stage"] = stage
    doc["config_key"] = config_key(doc["config"])
    if docs[0].get("post"):
        doc["post"] = merge_post([d["post"] for d in docs])
    return doc
