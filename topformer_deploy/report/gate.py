"""A gate report as a table, a Markdown job summary and a box-plot chart."""
from __future__ import annotations

import math
import os
from pathlib import Path

from rich.table import Table

from ..gate.compare import GateReport, GateRow
from .common import pyplot, save_figure

HEADERS = ("configuration", "baseline p50", "candidate p50", "change", "CI", "p", "verdict")


def _threshold(report: GateReport) -> str:
    if report.deterministic:
        return f"instruction counts, tolerance ±{report.tolerance:.2%}"
    return f"max slowdown {report.max_slowdown:.0%}, alpha {report.alpha}"
_COLORS = {"regression": "red", "improvement": "green", "same": "", "inconclusive": "yellow"}


def _cells(row: GateRow) -> list[str]:
    v = row.verdict
    if v.unit == "instructions":
        ms = lambda x, n: "-" if x is None else f"{x / 1e6:.3f} M ({n})"  # noqa: E731
    else:
        ms = lambda x, n: "-" if x is None else f"{x:.2f} ms ({n})"  # noqa: E731
    change = "-" if v.change is None else f"{v.change:+.3%}" if v.unit == "instructions" else f"{v.change:+.1%}"
    if v.ci_low is None:
        ci = "-"
    else:
        ci = f"[{v.ci_low:+.1%}, {'inf' if math.isinf(v.ci_high) else f'{v.ci_high:+.1%}'}]"
    p = "-" if v.p_value is None else f"{v.p_value:.2g}"
    return [row.config_key, ms(v.base_median, v.n_base), ms(v.cand_median, v.n_cand), change, ci, p, v.verdict]


def gate_table(report: GateReport) -> Table:
    """Old vs new medians, relative change, its confidence interval and the verdict; the reasons below."""
    table = Table(title=f"{'instruction' if report.deterministic else 'latency'} gate: {_threshold(report)} "
                        f"-> {report.status.upper()}",
                  caption="\n".join(f"{r.config_key}: {r.verdict.reason}" for r in report.rows),
                  caption_justify="left")
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("configuration", "verdict") else "right",
                         overflow="fold")
    for row in report.rows:
        table.add_row(*_cells(row), style=_COLORS[row.verdict.verdict] or None)
    return table


def gate_markdown(report: GateReport) -> str:
    """A Markdown summary (for ``$GITHUB_STEP_SUMMARY``)."""
    icon = {"pass": ":white_check_mark:", "regression": ":x:", "inconclusive": ":warning:"}[report.status]
    threshold = (f"Threshold: instructions per inference changed by more than {report.tolerance:.2%} (exact "
                 "counts on a simulated core)." if report.deterministic else
                 f"Threshold: median slowdown > {report.max_slowdown:.0%} with Mann-Whitney U p < {report.alpha} "
                 f"({1 - report.alpha:.0%} Hodges-Lehmann CI of the change).")
    lines = [f"### {'Instruction' if report.deterministic else 'Latency'} gate: {icon} {report.status}", "",
             threshold,
             f"Device: `{report.device.get('id', '?')}` {report.device.get('model') or ''}; runtime "
             f"{report.runtime.get('name', '?')} {report.runtime.get('version', '')}", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in report.rows:
        cells = _cells(row)
        cells[0] = f"`{cells[0]}`"
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- `{r.config_key}`: {r.verdict.reason}" for r in report.rows]
    return "\n".join(lines) + "\n"


def gate_chart(report: GateReport, path: str | os.PathLike) -> Path:
    """Box plots of baseline vs candidate latencies per configuration, written to ``path`` (PNG/SVG/PDF)."""
    plt = pyplot()
    rows = [r for r in report.rows if r.cand_samples]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.9 * max(1, len(rows))))
    data, labels, colors = [], [], []
    for r in reversed(rows):
        for name, ms, color in (("candidate", r.cand_samples, "tab:orange"),
                                ("baseline", r.base_samples, "tab:blue")):
            if ms:
                data.append(ms)
                labels.append(f"{r.config_key} {name}" + (f" [{r.verdict.verdict}]" if name == "candidate" else ""))
                colors.append(color)
    boxes = ax.boxplot(data, orientation="horizontal", patch_artist=True, showfliers=True)
    for patch, color in zip(boxes["boxes"], colors):
        patch.set_facecolor(color)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_xlabel("instructions per inference" if report.deterministic else "latency per run (ms)")
    ax.set_title(f"{'instruction' if report.deterministic else 'latency'} gate ({report.status}): {report.device.get('model') or report.device.get('id', '')}",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
