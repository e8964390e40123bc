"""The bench result document: build it, check it, load it, show it as a table.

One versioned JSON document per measured configuration (see the contracts): every per-run latency,
the summary statistics, the device and the conditions it ran under, and the artifact's manifest.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ..errors import TopformerDeployError

SCHEMA = "topformer-deploy/bench-result"
COMPARE_SCHEMA = "topformer-deploy/bench-compare"
SCHEMA_VERSION = 1
REQUIRED = ("schema", "schema_version", "created", "tool_version", "config", "config_key", "device", "runtime",
            "conditions", "warmup", "runs", "latencies_ms", "stats", "model", "runner")
CONFIG_FIELDS = ("variant", "format", "precision", "threads", "input_size", "output", "stage", "engine")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_key(config: dict) -> str:
    """``tiny/tflite/fp32/t1/512x512/logits`` (plus ``/<stage>`` for a stage artifact): what the gate matches."""
    h, w = config["input_size"]
    c = config
    key = f"{c['variant']}/{c['format']}/{c['precision']}/t{c['threads']}/{h}x{w}/{c['output']}"
    return key if config.get("stage", "full") == "full" else f"{key}/{config['stage']}"


def input_size_of(manifest: dict | None, runner_inputs: list[dict] | None) -> list[int] | None:
    """(H, W) of the model input, from the manifest (layout-aware) or else from the runner's input shape."""
    if manifest and manifest.get("input", {}).get("shape"):
        shape, layout = manifest["input"]["shape"], manifest["input"].get("layout", "NHWC")
        return [shape[2], shape[3]] if layout == "NCHW" else [shape[1], shape[2]]
    if runner_inputs:
        shape = runner_inputs[0].get("shape") or []
        if len(shape) == 4:
            return [shape[2], shape[3]] if shape[1] in (1, 3) and shape[3] not in (1, 3) else [shape[1], shape[2]]
    return None


def make_config(manifest: dict | None, model_format: str, threads: int, engine: str,
                runner_inputs: list[dict] | None = None) -> dict:
    """The configuration a result is filed under (from the manifest when there is one)."""
    m = manifest or {}
    return {"variant": m.get("variant", "unknown"), "format": m.get("format", model_format),
            "precision": m.get("precision", "unknown"), "threads": int(threads),
            "input_size": input_size_of(manifest, runner_inputs) or [0, 0],
            "output": (m.get("output") or {}).get("semantics", "unknown"), "stage": m.get("stage", "full"),
            "engine": engine}


def build_result(*, config: dict, device: dict, runtime: dict, conditions: dict, warmup: int, runs: int,
                 latencies_ms: list[float], load_ms: float | None, first_ms: float | None, model: dict,
                 runner: dict, repeats: list[dict] | None = None, partial: bool = False) -> dict:
    """Assemble (and check) one bench result document."""
    from .. import __version__
    from .stats import summarize

    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(), "tool_version": __version__,
           "config": config, "config_key": config_key(config), "device": device, "runtime": runtime,
           "conditions": conditions, "warmup": warmup, "runs": runs, "latencies_ms": list(latencies_ms),
           "load_ms": load_ms, "first_ms": first_ms,
           "stats": summarize(latencies_ms) if latencies_ms else None,
           "model": model, "runner": runner, "repeats": repeats or [], "partial": partial}
    if not partial:
        validate_result(doc)
    return doc


def validate_result(doc: dict) -> dict:
    """Raise TopformerDeployError naming the first problem; return ``doc`` when it is a usable result."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        schema = doc.get("schema") if isinstance(doc, dict) else None
        raise TopformerDeployError(f"not a bench result (schema {schema!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise TopformerDeployError(f"bench result schema_version {doc.get('schema_version')!r} is not supported")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise TopformerDeployError(f"bench result lacks {', '.join(missing)}")
    missing = [k for k in CONFIG_FIELDS if k not in doc["config"]]
    if missing:
        raise TopformerDeployError(f"bench result config lacks {', '.join(missing)}")
    lat = doc["latencies_ms"]
    if not lat or not all(isinstance(x, (int, float)) and x >= 0 for x in lat):
        raise TopformerDeployError("bench result has no valid latencies")
    if doc["config_key"] != config_key(doc["config"]):
        raise TopformerDeployError("bench result config_key does not match its config")
    return doc


def load_result(path: str | os.PathLike) -> dict:
    """Read and check a bench result file (a compare document is also accepted)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TopformerDeployError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise TopformerDeployError(f"{path}: not a JSON document ({exc})") from None
    if isinstance(doc, dict) and doc.get("schema") == COMPARE_SCHEMA:
        validate_result(doc["a"]), validate_result(doc["b"])
        return doc
    return validate_result(doc)


def _fmt(value, spec=".2f", none="-"):
    return none if value is None else format(value, spec)


def result_table(doc: dict, title: str | None = None):
    """A rich Table of one result (or of both sides of a compare document): one row per figure."""
    from rich.table import Table

    docs = [doc] if doc.get("schema") != COMPARE_SCHEMA else [doc["a"], doc["b"]]
    first = docs[0]
    dev = first["device"]
    about = ", ".join(str(dev[k]) for k in ("model", "soc", "arch") if dev.get(k))
    table = Table(title=title or f"{dev.get('target')} ({about})")
    table.add_column("")
    for label, d in zip("AB" if len(docs) == 2 else " ", docs):
        table.add_column(f"{label} {d['config_key']}".strip() + (" (partial)" if d.get("partial") else ""),
                         justify="right")
    ms = lambda key: [_fmt((d.get("stats") or {}).get(key)) for d in docs]  # noqa: E731
    cond = [d.get("conditions") or {} for d in docs]
    rows = [
        ("runtime", [f"{d['runtime'].get('name')} {d['runtime'].get('version')}" for d in docs]),
        ("engine / threads", [f"{d['config']['engine']} / {d['config']['threads']}" for d in docs]),
        ("runs (warmup)", [f"{(d.get('stats') or {}).get('count', 0)} ({d.get('warmup')})" for d in docs]),
        ("p50 ms", ms("p50")), ("p90 ms", ms("p90")), ("mean ms", ms("mean")), ("std ms", ms("std")),
        ("min ms", ms("min")), ("max ms", ms("max")),
        ("CV", [_fmt((d.get("stats") or {}).get("cv"), ".1%") for d in docs]),
        ("load / first ms", [f"{_fmt(d.get('load_ms'), '.0f')} / {_fmt(d.get('first_ms'), '.1f')}" for d in docs]),
        ("cores", [",".join(map(str, c.get("cores") or [])) or "not pinned" for c in cond]),
        ("temp °C before → after", [f"{_fmt(c.get('temp_before_c'), '.1f')} → {_fmt(c.get('temp_after_c'), '.1f')}"
                                    for c in cond]),
        ("hot / throttled", [f"{'HOT' if c.get('hot') else 'no'} / {c.get('throttled') or '-'}" for c in cond]),
    ]
    for name, cells in rows:
        table.add_row(name, *cells, style="bold" if name == "p50 ms" else None)
    return table
