"""What an export wrote: one row per artifact (size, graph, verification figures) and the warnings to read."""
from __future__ import annotations

from rich.table import Table

from .common import fmt


def export_table(results) -> Table:
    """One row per exported artifact (:class:`topformer_deploy.export.ExportResult`)."""
    table = Table(title=f"Exported to {results[0].path.parent}")
    for col in ("artifact", "size", "ops", "transpose", "reshape", "pad", "max abs err", "rel L2 err", "argmax agree"):
        table.add_column(col, justify="left" if col == "artifact" else "right", overflow="fold")
    for r in results:
        m, v = r.manifest, r.manifest["verification"] or {}
        table.add_row(r.path.name, f"{m['size_bytes'] / 1e6:.2f} MB", str(sum(m["op_histogram"].values())),
                      str(m["transpose_count"]), str(m["reshape_count"]), str(m["pad_count"]),
                      fmt(v.get("max_abs_error"), ".2e"), fmt(v.get("rel_l2_error"), ".2e"),
                      fmt(v.get("argmax_agreement"), ".4%"))
    return table


def export_warnings(results) -> list[str]:
    """Lines the user should read: figures recorded but not enforced, artifacts not verified."""
    lines = []
    for r in results:
        v = r.manifest["verification"] or {}
        if v and not v.get("passed", True) and not v.get("enforced", True):
            lines.append(f"warning: {r.path.name}: {r.manifest['precision']} agreement "
                         f"{v.get('argmax_agreement', 0):.2%} is below its threshold, not enforced with random "
                         "weights (near-tied logits); export with --checkpoint to check accuracy")
    if any(r.manifest["verification"] is None for r in results):
        lines.append("warning: --no-verify: the artifacts were not checked against PyTorch")
    return lines
