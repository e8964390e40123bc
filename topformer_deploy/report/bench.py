"""A bench result (or both sides of an interleaved compare) as a table."""
from __future__ import annotations

from rich.table import Table

from ..bench.result import COMPARE_SCHEMA
from .common import fmt


#: Class groups shown for a simulated core (the plugin's classes and kinds, millions per inference).
INSTRUCTION_ROWS = (("SIMD/FP data processing", ("dp_simd_fp",)), ("loads/stores (SIMD, scalar)", ("ldst_simd", "ldst_scalar")),
                    ("integer, branches", ("dp_imm", "dp_reg", "branch_sys")), ("FMLA fp32 / fp16", ("fmla_f32", "fmla_f16")),
                    ("SDOT / SMLAL (int8)", ("sdot_udot", "smlal_umlal")))


def instruction_rows(docs: list[dict]) -> list[tuple[str, list[str]]]:
    """The rows a simulated core's results add: instructions per inference, by class, their spread, the floor."""
    blocks = [d.get("instructions") or {} for d in docs]
    if not any(blocks):
        return []
    million = lambda b, keys: " / ".join(fmt((b.get("median") or {}).get(k, 0) / 1e6, ".3f") for k in keys)  # noqa: E731
    rows = [("instructions / inference (M)", [fmt((b.get("total") or 0) / 1e6, ".3f") if b else "-" for b in blocks])]
    rows += [(label, [million(b, keys) if b else "-" for b in blocks]) for label, keys in INSTRUCTION_ROWS]
    rows.append(("spread over runs", [fmt(b.get("spread"), ".1e") if b else "-" for b in blocks]))
    rows.append(("MAC floor (share of executed)", [
        f"{b['floor']['instructions'] / 1e6:.3f} M ({b['floor']['fraction']:.1%})" if b.get("floor") else "-"
        for b in blocks]))
    return rows


def runs_text(doc: dict) -> str:
    """``50 (10)``; for benchmark_model, which reports a summary per invocation: ``2 x median of 50 (10)``."""
    count = (doc.get("stats") or {}).get("count", 0)
    if (doc.get("runner") or {}).get("benchmark_model"):
        return f"{count} x median of {doc['runner'].get('runs')} ({doc.get('warmup')})"
    return f"{count} ({doc.get('warmup')})"


def _refined(post: dict) -> str:
    share = post.get("blocks_refined")
    return "" if share is None else f" ({share:.0%} of blocks refined)"


def result_table(doc: dict, title: str | None = None):
    """A rich Table of one result (or of both sides of a compare document): one row per figure."""
    docs = [doc] if doc.get("schema") != COMPARE_SCHEMA else [doc["a"], doc["b"]]
    first = docs[0]
    dev = first["device"]
    android = (dev.get("android") or {}).get("release")
    about = ", ".join([str(dev[k]) for k in ("model", "soc", "abi" if dev.get("abi") else "arch") if dev.get(k)]
                      + ([f"Android {android}"] if android else []))
    table = Table(title=title or f"{dev.get('target')} ({about})")
    table.add_column("")
    for label, d in zip("AB" if len(docs) == 2 else " ", docs):
        table.add_column(f"{label} {d['config_key']}".strip() + (" (partial)" if d.get("partial") else ""),
                         justify="right", overflow="fold")
    ms = lambda key: [fmt((d.get("stats") or {}).get(key)) for d in docs]  # noqa: E731
    cond = [d.get("conditions") or {} for d in docs]
    simulated = any((d["device"].get("simulation") or {}).get("simulated") for d in docs)
    rows = instruction_rows(docs) + [
        ("runtime", [f"{d['runtime'].get('name')} {d['runtime'].get('version')}" for d in docs]),
        ("engine / threads", [f"{d['config']['engine']} / {d['config']['threads']}" for d in docs]),
        ("runs (warmup)", [runs_text(d) for d in docs]),
        ("p50 ms", ms("p50")), ("p90 ms", ms("p90")), ("mean ms", ms("mean")), ("std ms", ms("std")),
        ("min ms", ms("min")), ("max ms", ms("max")),
        ("CV", [fmt((d.get("stats") or {}).get("cv"), ".1%") for d in docs]),
        ("load / first ms", [f"{fmt(d.get('load_ms'), '.0f')} / {fmt(d.get('first_ms'), '.1f')}" for d in docs]),
        ("cores", [",".join(map(str, c.get("cores") or [])) or "not pinned" for c in cond]),
        ("temp °C before → after", [f"{fmt(c.get('temp_before_c'), '.1f')} → {fmt(c.get('temp_after_c'), '.1f')}"
                                    for c in cond]),
        ("hot / throttled", [f"{'HOT' if c.get('hot') else 'no'} / {c.get('throttled') or '-'}" for c in cond]),
    ]
    for method in (first.get("post") or {}).get("methods", {}):
        entries = [((d.get("post") or {}).get("methods") or {}).get(method) or {} for d in docs]
        rows.append((f"post {method} p50 ms", [fmt((e.get("stats") or {}).get("p50")) + _refined(e) for e in entries]))
        rows.append((f"network + {method} p50 ms", [fmt((e.get("total_stats") or {}).get("p50")) for e in entries]))
        if any(e.get("instructions_median") for e in entries):
            rows.append((f"post {method} instructions (M)",
                         [fmt(e["instructions_median"] / 1e6, ".3f") if e.get("instructions_median") else "-"
                          for e in entries]))
    if simulated:  # emulated wall time: kept, labelled for what it is
        rows = [(f"{name} (emulated)" if name.endswith(" ms") or name == "CV" else name, cells)
                for name, cells in rows if not name.startswith(("temp", "hot", "cores"))]
    bold = "instructions / inference (M)" if simulated else "p50 ms"
    for name, cells in rows:
        table.add_row(name, *cells, style="bold" if name == bold or name.startswith("network +") else None)
    if simulated:
        table.caption = (docs[0]["device"].get("simulation") or {}).get("note")
    return table
