"""A bench result (or both sides of an interleaved compare) as a table."""
from __future__ import annotations

from rich.table import Table

from ..bench.result import COMPARE_SCHEMA
from .common import fmt


def result_table(doc: dict, title: str | None = None):
    """A rich Table of one result (or of both sides of a compare document): one row per figure."""
    docs = [doc] if doc.get("schema") != COMPARE_SCHEMA else [doc["a"], doc["b"]]
    first = docs[0]
    dev = first["device"]
    about = ", ".join(str(dev[k]) for k in ("model", "soc", "arch") if dev.get(k))
    table = Table(title=title or f"{dev.get('target')} ({about})")
    table.add_column("")
    for label, d in zip("AB" if len(docs) == 2 else " ", docs):
        table.add_column(f"{label} {d['config_key']}".strip() + (" (partial)" if d.get("partial") else ""),
                         justify="right", overflow="fold")
    ms = lambda key: [fmt((d.get("stats") or {}).get(key)) for d in docs]  # noqa: E731
    cond = [d.get("conditions") or {} for d in docs]
    rows = [
        ("runtime", [f"{d['runtime'].get('name')} {d['runtime'].get('version')}" for d in docs]),
        ("engine / threads", [f"{d['config']['engine']} / {d['config']['threads']}" for d in docs]),
        ("runs (warmup)", [f"{(d.get('stats') or {}).get('count', 0)} ({d.get('warmup')})" for d in docs]),
        ("p50 ms", ms("p50")), ("p90 ms", ms("p90")), ("mean ms", ms("mean")), ("std ms", ms("std")),
        ("min ms", ms("min")), ("max ms", ms("max")),
        ("CV", [fmt((d.get("stats") or {}).get("cv"), ".1%") for d in docs]),
        ("load / first ms", [f"{fmt(d.get('load_ms'), '.0f')} / {fmt(d.get('first_ms'), '.1f')}" for d in docs]),
        ("cores", [",".join(map(str, c.get("cores") or [])) or "not pinned" for c in cond]),
        ("temp °C before → after", [f"{fmt(c.get('temp_before_c'), '.1f')} → {fmt(c.get('temp_after_c'), '.1f')}"
                                    for c in cond]),
        ("hot / throttled", [f"{'HOT' if c.get('hot') else 'no'} / {c.get('throttled') or '-'}" for c in cond]),
    ]
    for name, cells in rows:
        table.add_row(name, *cells, style="bold" if name == "p50 ms" else None)
    return table
