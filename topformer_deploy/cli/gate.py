"""``topformer-deploy gate``: baseline vs candidate latencies (or interleaved A/B results) -> verdict per
configuration, exit code."""
from __future__ import annotations

import json
import os
import sys

import click

from .options import SLOWDOWN, check_outputs, echo_json, write_outputs


@click.command()
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="Baseline file (bench --save-baseline) or a single bench result JSON.")
@click.option("--candidate", "candidate_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Bench result JSON (or baseline-format file) to judge; repeat for several configurations.")
@click.option("--compare", "compare_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Instead of --baseline/--candidate: a `bench --compare A B --json` result (B judged against "
                   "A, run interleaved on one device); repeat for several configurations of that device.")
@click.option("--tolerance", type=SLOWDOWN, default="0.1%", show_default=True,
              help="Instruction counts (a simulated core): the relative change that counts as a regression.")
@click.option("--max-slowdown", type=SLOWDOWN, default="5%", show_default=True,
              help="Median slowdown that counts as a regression (5% or 0.05).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="Significance level of the Mann-Whitney U test (CI level is 1-alpha).")
@click.option("--min-runs", type=click.IntRange(min=2), default=None,
              help="Fewer runs on either side -> inconclusive (default 10).")
@click.option("--github-benchmark", "github_out", type=click.Path(dir_okay=False),
              help="Also write the candidate medians in github-action-benchmark customSmallerIsBetter format.")
@click.option("--summary-md", "summary_out", type=click.Path(dir_okay=False),
              help="Also write a Markdown summary (appended to $GITHUB_STEP_SUMMARY when that is set).")
@click.option("--chart", "chart_out", type=click.Path(dir_okay=False),
              help="Also draw baseline vs candidate box plots per configuration (PNG or SVG).")
@click.option("--cross-config", is_flag=True,
              help="Compare one baseline configuration with one candidate configuration even if they differ "
                   "(e.g. Tiny vs Small); device, runtime and threads must still match.")
@click.option("--json", "as_json", is_flag=True, help="Print the gate report as JSON instead of a table.")
def gate(baseline_path, candidate_paths, compare_paths, tolerance, max_slowdown, alpha, min_runs, github_out,
         summary_out, chart_out, cross_config, as_json):
    """Judge candidate latencies against a baseline, configuration by configuration, or each B of
    interleaved A/B results (--compare) against its A.

    A configuration is a REGRESSION only when its median slowdown exceeds --max-slowdown AND a
    two-sided Mann-Whitney U test gives p < --alpha; SAME when the (1-alpha) confidence interval of
    the change rules out such a slowdown; INCONCLUSIVE when there are too few runs, the data are too
    noisy to decide, or the device was throttled or hot. Baselines from another device, runtime
    version, thread count or engine are refused.

    Exit codes: 0 pass, 1 regression, 2 inconclusive or unusable input. The verdict is printed first; an
    output file that cannot be written is an error line that leaves the verdict's exit code as it is.

    \b
    Examples:
      topformer-deploy gate --baseline benchmarks/baselines/rpi4.json --candidate tiny.json
      topformer-deploy gate --compare tiny_base_vs_head.json --compare small_base_vs_head.json
    """
    from ..errors import TopformerDeployError
    from ..files import write_atomic
    from ..gate.compare import github_benchmark_entries
    from ..gate.verdict import MIN_RUNS
    from ..report.common import console
    from ..report.gate import gate_chart, gate_markdown, gate_table

    check_outputs(("--github-benchmark", github_out), ("--summary-md", summary_out), ("--chart", chart_out))
    if bool(compare_paths) == bool(baseline_path or candidate_paths):
        raise TopformerDeployError("give either --baseline B --candidate C... or --compare AB.json...")
    if compare_paths:
        from ..gate.baseline import load_compare
        from ..gate.compare import gate_compared

        docs = [load_compare(p) for p in compare_paths]
        candidates = [doc["b"] for doc in docs]
        report = gate_compared(docs, max_slowdown=max_slowdown, alpha=alpha, tolerance=tolerance,
                               min_runs=min_runs or MIN_RUNS)
    else:
        if not (baseline_path and candidate_paths):
            raise TopformerDeployError("--baseline and --candidate go together")
        candidates, report = _against_baseline(baseline_path, candidate_paths, max_slowdown, alpha, tolerance,
                                               min_runs or MIN_RUNS, cross_config)

    # the verdict first; the files after it, and a file that cannot be written never changes the exit code
    if as_json:
        echo_json(report.to_dict())
    else:
        console().print(gate_table(report))
    markdown = gate_markdown(report)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    writes = [("--github-benchmark", github_out, lambda: write_atomic(
                  github_out, json.dumps(github_benchmark_entries(candidates), indent=2, ensure_ascii=False) + "\n")),
              ("--chart", chart_out, lambda: gate_chart(report, chart_out)),
              ("--summary-md", summary_out, lambda: write_atomic(summary_out, markdown)),
              ("$GITHUB_STEP_SUMMARY", step_summary, lambda: _append(step_summary, markdown))]
    write_outputs(*[w for w in writes if w[1]])
    sys.exit(report.exit_code)


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _against_baseline(baseline_path, candidate_paths, max_slowdown, alpha, tolerance, min_runs, cross_config):
    """(candidate documents, report) of candidates judged against a baseline file or result."""
    from ..errors import TopformerDeployError
    from ..gate.baseline import BASELINE_SCHEMA, SCHEMA_VERSION, entries_of, load_result_or_baseline
    from ..gate.compare import gate_results

    baseline = load_result_or_baseline(baseline_path)
    candidates = [load_result_or_baseline(p) for p in candidate_paths]
    merged: dict[str, dict] = {}
    for path, doc in zip(candidate_paths, candidates):
        for key, result in entries_of(doc).items():
            if key in merged:
                raise TopformerDeployError(f"{path}: configuration {key} is given twice as a candidate")
            merged[key] = result
    candidate = {"schema": BASELINE_SCHEMA, "schema_version": SCHEMA_VERSION, "entries": merged}
    return candidates, gate_results(baseline, candidate, max_slowdown=max_slowdown, alpha=alpha, tolerance=tolerance,
                                    min_runs=min_runs, cross_config=cross_config)
