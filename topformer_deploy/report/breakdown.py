"""Show a breakdown document: a rich table, the operator view, and the paper's picture as a PNG chart.

The chart puts, per stage, the share of parameters, of MACs and of latency side by side - what the
TopFormer paper claims (SASE: most parameters, little latency), measured on a device.
"""
from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table

from ..model.stages import STAGE_LABELS
from .common import fmt, pct, pyplot, save_figure


def breakdown_table(doc: dict) -> Table:
    """Per stage: params, MACs, p50 and their shares; the network sum, the whole model, the reconciliation.
    On a simulated core, instructions per inference take the latencies' place."""
    if doc.get("instructions"):
        return instruction_breakdown_table(doc)
    c = doc["config"]
    h, w = c["input_size"]
    table = Table(title=f"{c['variant']} {c['format']} {c['precision']} {h}x{w}, {c['threads']} thread(s), "
                        f"{c['engine']} on {c['device']}",
                  caption=f"sum of stages / whole model = {doc['reconciliation']:.3f} (median over rounds; "
                          f"pooled {doc.get('reconciliation_pooled', doc['reconciliation']):.3f}), "
                          f"{'within' if doc['reconciled'] else 'OUTSIDE'} {doc['reconcile_band'][0]}-"
                          f"{doc['reconcile_band'][1]}; post is beside the network, not in the sum; "
                          f"* of the whole model, per round, median over rounds")
    for name in ("stage", "params", "params %", "MMACs", "MACs %", "p50 ms", "p90 ms", "latency % *"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for row in doc["stages"]:
        if row["stage"] == "post":
            table.add_section()
        table.add_row(STAGE_LABELS.get(row["stage"], row["stage"]), f"{row['params']:,}", pct(row["param_share"]),
                      f"{row['macs'] / 1e6:.1f}", pct(row["mac_share"]), f"{row['p50_ms']:.2f}",
                      f"{row['p90_ms']:.2f}", pct(row["latency_share"]))
    whole = doc["whole"]
    table.add_section()
    table.add_row("sum of stages", "", "", "", "", f"{doc['network_sum_ms']:.2f}", "", pct(doc["reconciliation"]))
    table.add_row("whole model", f"{whole['params']:,}", "100.0%", f"{whole['macs'] / 1e6:.1f}", "100.0%",
                  f"{whole['p50_ms']:.2f}", f"{whole['p90_ms']:.2f}", "100.0%")
    return table


def instruction_breakdown_table(doc: dict) -> Table:
    """A simulated core's breakdown: per stage MACs, instructions per inference, share, MAC floor fraction."""
    c, counts = doc["config"], doc["instructions"]
    h, w = c["input_size"]
    table = Table(title=f"{c['variant']} {c['format']} {c['precision']} {h}x{w} on {c['device']}: instructions "
                        "per inference",
                  caption=f"sum of stages / whole model = {counts['reconciliation']:.4f}, "
                          f"{'within' if counts['reconciled'] else 'OUTSIDE'} {counts['band'][0]}-{counts['band'][1]}; "
                          "post is beside the network, not in the sum; floor = MACs / MACs per SIMD instruction")
    for name in ("stage", "params %", "MMACs", "MACs %", "M instructions", "instr. %", "MAC floor %"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for row in doc["stages"]:
        if row["stage"] == "post":
            table.add_section()
        table.add_row(STAGE_LABELS.get(row["stage"], row["stage"]), pct(row["param_share"]), f"{row['macs'] / 1e6:.1f}",
                      pct(row["mac_share"]), f"{(row.get('instructions') or 0) / 1e6:.3f}",
                      pct(row.get("instruction_share")), pct(row.get("floor_fraction")))
    table.add_section()
    table.add_row("sum of stages", "", "", "", f"{counts['network_sum'] / 1e6:.3f}", pct(counts["reconciliation"]), "")
    table.add_row("whole model", "100.0%", f"{doc['whole']['macs'] / 1e6:.1f}", "100.0%",
                  f"{counts['whole'] / 1e6:.3f}", "100.0%", pct(counts.get("floor_fraction")))
    return table


def post_table(doc: dict) -> Table | None:
    """Network + post-processing per method (the in-graph post artifact, the numpy methods on the device)."""
    rows = doc.get("post_methods")
    if not rows:
        return None
    caption = "network + post = whole model p50 + post p50; exact = the class map of PyTorch's bilinear + argmax"
    if doc["config"].get("weights") == "random":
        caption += ("; random weights give near-tied logits, so the sparse method refines most blocks here: "
                    "time it with --checkpoint")
    counted = any(row.get("instructions") for row in rows)  # a simulated core: the counts are the figure
    if counted:
        caption += "; ms are emulated wall time, M instructions are counted (network + post: whole model + post)"
    table = Table(title="post-processing: what an app pays after the network", caption=caption)
    names = ("method", "exact", "post p50 ms", "post p90 ms", "network + post ms", "blocks refined")
    for name in names + (("post M instructions", "network + post M instructions") if counted else ()):
        table.add_column(name, justify="left" if name == "method" else "right")
    millions = lambda v: fmt(None if v is None else v / 1e6, ".3f")  # noqa: E731
    for row in rows:
        cells = ["yes" if row["exact"] else "no", f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}",
                 f"{row['network_plus_post_ms']:.2f}", pct(row["blocks_refined"])]
        if counted:
            cells += [millions(row.get("instructions")), millions(row.get("network_plus_post_instructions"))]
        table.add_row(row["method"], *cells)
    return table


def operator_table(doc: dict) -> Table | None:
    """The profiler's operator time per stage (whole model), or None when the engine gave none."""
    view = doc.get("operator_view") or {}
    if not view.get("available"):
        return None
    counts = view.get("instructions")
    table = Table(title=f"operator view: {view.get('source', 'profiler')}")
    columns = ("stage", "ops", "M instructions", "share") if counts else ("stage", "ops", "ms / run", "share")
    for name in columns:
        table.add_column(name, justify="left" if name == "stage" else "right")

    def cells(entry, instructions):
        if counts:
            return [f"{instructions / 1e6:.3f}", pct(instructions / counts["total"] if counts["total"] else None)]
        return [f"{entry.get('ms_per_run', entry['ms']):.3f}", pct(entry["share"])]

    for stage, entry in view["stages"].items():
        table.add_row(STAGE_LABELS.get(stage, stage), str(entry["ops"]),
                      *cells(entry, (counts or {}).get("stages", {}).get(stage, 0)))
    rest = view["unattributed"]
    if rest["ops"]:
        table.add_row("unattributed", str(rest["ops"]), *cells(rest, (counts or {}).get("unattributed", 0)))
    return table


def slowest_operators_table(doc: dict, limit: int = 10) -> Table | None:
    """The ``limit`` slowest operators of the operator view (ms per run, share of the profiled total)."""
    view = doc.get("operator_view") or {}
    ops = view.get("ops") if view.get("available") else None
    if not ops:
        return None
    counted = "instructions" in view
    key, unit = ("instruction_total", "M instructions") if counted else ("ms", "ms / run")
    total = sum(op[key] for op in ops) or 1.0
    table = Table(title=f"{'heaviest' if counted else 'slowest'} operators ({len(ops)} profiled)")
    for name in ("stage", "operator", "output / node", unit, "share"):
        table.add_column(name, justify="right" if name in (unit, "share") else "left")
    for op in ops[:limit]:
        where = "x".join(map(str, op["output_shape"][1:])) if op.get("output_shape") else (op.get("node") or "")
        value = f"{op[key] / 1e6:.3f}" if counted else f"{op[key]:.3f}"
        table.add_row(STAGE_LABELS.get(op.get("stage"), op.get("stage") or "-"), op["name"], where, value,
                      pct(op[key] / total))
    return table


def operator_note(doc: dict) -> str | None:
    """One line saying why there is no operator view, if there is none."""
    view = doc.get("operator_view") or {}
    return None if view.get("available") else f"operator view: not available - {view.get('reason', 'not measured')}"


def write_chart(doc: dict, path: str | os.PathLike) -> Path:
    """A grouped bar chart (PNG/SVG/PDF): parameter, MAC and latency share per stage; written atomically."""
    import numpy as np

    plt = pyplot()
    rows = doc["stages"]
    labels = [STAGE_LABELS.get(r["stage"], r["stage"]) for r in rows]
    series = [("parameters", "param_share", "#4c72b0"), ("MACs", "mac_share", "#dd8452"),
              ("latency p50", "latency_share", "#55a868")]
    x = np.arange(len(rows))
    network = [100 * r[key] for r in rows if r["in_network"] for _, key, _ in series]
    top = max(100.0, *network) * 1.15  # post can be many times the network: its bar is cut, its label is not
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for k, (name, key, color) in enumerate(series):
        values = [100 * r[key] for r in rows]
        bars = ax.bar(x + (k - 1) * 0.27, [min(v, top) for v in values], 0.27, label=name, color=color)
        ax.bar_label(bars, labels=[f"{v:.0f}" + (" (cut)" if v > top else "") for v in values], fontsize=7,
                     padding=1)
    ax.set_ylim(0, top * 1.08)
    c = doc["config"]
    h, w = c["input_size"]
    ax.set_xticks(x, labels)
    ax.set_ylabel("share of the whole network (%)")
    ax.set_title(f"TopFormer-{c['variant'].capitalize()} {c['format']} {c['precision']} {h}x{w}, "
                 f"{c['threads']} thread(s): whole model p50 {doc['whole']['p50_ms']:.1f} ms\n"
                 f"sum of stages / whole = {doc['reconciliation']:.2f}; post is beside the network", fontsize=9)
    ax.axvline(len(rows) - 1.5, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def markdown_table(doc: dict) -> str:
    """The breakdown as a Markdown table (for docs and issue notes)."""
    lines = ["| stage | params | params % | MMACs | MACs % | p50 ms | latency % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["stages"]:
        lines.append(f"| {STAGE_LABELS.get(r['stage'], r['stage'])} | {r['params']:,} | {pct(r['param_share'])} "
                     f"| {r['macs'] / 1e6:.1f} | {pct(r['mac_share'])} | {r['p50_ms']:.2f} "
                     f"| {pct(r['latency_share'])} |")
    whole = doc["whole"]
    lines.append(f"| sum of stages (network) | | | | | {doc['network_sum_ms']:.2f} | {pct(doc['reconciliation'])} |")
    lines.append(f"| whole model | {whole['params']:,} | 100% | {whole['macs'] / 1e6:.1f} | 100% | "
                 f"{whole['p50_ms']:.2f} | 100% |")
    return "\n".join(lines)
