"""The bench result document: build it, check it, load it, and say whether its latencies are usable.

One versioned JSON document per measured configuration (drawn in ``docs/architecture.md``): every per-run
latency, the summary statistics, the device and the conditions it ran under, and the artifact's manifest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..artifact import input_size_of, now_iso
from ..errors import TopformerDeployError

SCHEMA = "topformer-deploy/bench-result"
COMPARE_SCHEMA = "topformer-deploy/bench-compare"
SCHEMA_VERSION = 1
REQUIRED = ("schema", "schema_version", "created", "tool_version", "config", "config_key", "device", "runtime",
            "conditions", "warmup", "runs", "latencies_ms", "stats", "model", "runner")
CONFIG_FIELDS = ("variant", "format", "precision", "threads", "input_size", "output", "stage", "engine")


def config_key(config: dict) -> str:
    """``tiny/tflite/fp32/t1/512x512/logits`` (plus ``/<stage>`` for a stage artifact): what the gate matches."""
    h, w = config["input_size"]
    c = config
    key = f"{c['variant']}/{c['format']}/{c['precision']}/t{c['threads']}/{h}x{w}/{c['output']}"
    return key if config.get("stage", "full") == "full" else f"{key}/{config['stage']}"


def network_input_size(manifest: dict | None, runner_inputs: list[dict] | None) -> list[int] | None:
    """(H, W) of the network input, from the manifest or else guessed from the runner's input shape."""
    if manifest:
        return list(input_size_of(manifest))
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
            "input_size": network_input_size(manifest, runner_inputs) or [0, 0],
            "output": (m.get("output") or {}).get("semantics", "unknown"), "stage": m.get("stage", "full"),
            "engine": engine}


def summarize_instructions(runner_docs: list[dict], manifest: dict | None, device: dict) -> dict | None:
    """The result's ``instructions`` (a simulated core): every timed run's counters, pooled over the runner
    invocations, the median of each counter, the spread of the totals and, from the manifest's MACs, the
    work floor. None when the device counted nothing."""
    from .sim.floor import instruction_floor

    runs = [run for doc in runner_docs for run in (doc.get("instructions") or {}).get("per_run", [])]
    if not runs:
        return None
    first = runner_docs[0]["instructions"]
    totals = [run["total"] for run in runs]
    median = {k: float(np.median([run[k] for run in runs])) for k in runs[0]}
    block = {"runs": len(runs), "per_run_total": totals, "median": median, "total": median["total"],
             "spread": (max(totals) - min(totals)) / min(totals) if min(totals) > 0 else None,
             "classes": first.get("classes"), "kinds": first.get("kinds"),
             "marker_overhead": first.get("marker_overhead"), "floor": None}
    macs = ((manifest or {}).get("macs") or {}).get(manifest.get("stage", "full") if manifest else "full")
    features = (device.get("simulation") or {}).get("features")
    if macs and features and manifest.get("precision") in ("fp32", "fp16", "int8"):
        block["floor"] = instruction_floor(macs, manifest["precision"], features, median["total"])
    return block


def build_result(*, config: dict, device: dict, runtime: dict, conditions: dict, warmup: int, runs: int,
                 latencies_ms: list[float], load_ms: float | None, first_ms: float | None, model: dict,
                 runner: dict, repeats: list[dict] | None = None, partial: bool = False,
                 instructions: dict | None = None, post: dict | None = None) -> dict:
    """Assemble (and check) one bench result document (``instructions`` from a simulated core; ``post``:
    see :func:`post_summary`)."""
    from .. import __version__
    from ..stats import summarize

    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(), "tool_version": __version__,
           "config": config, "config_key": config_key(config), "device": device, "runtime": runtime,
           "conditions": conditions, "warmup": warmup, "runs": runs, "latencies_ms": list(latencies_ms),
           "load_ms": load_ms, "first_ms": first_ms,
           "stats": summarize(latencies_ms) if latencies_ms else None,
           "model": model, "runner": runner, "repeats": repeats or [], "partial": partial}
    if instructions:
        doc["instructions"] = instructions
    if post:
        doc["post"] = post
    if not partial:
        validate_result(doc)
    return doc


def post_summary(runner_docs: list[dict]) -> dict | None:
    """The result's ``post`` block from the runner documents of ``--post`` runs (None without): per method,
    every post latency and every network + post latency (paired run by run), with their statistics.

    ``{"size": [H, W], "layout", "arithmetic", "methods": {method: {"exact", "blocks_refined",
    "latencies_ms", "total_ms", "stats", "total_stats"}}}``; on a simulated core each method also has
    ``instructions`` (per timed call) and ``instructions_median``.
    """
    docs = [d for d in runner_docs if d.get("post")]
    if not docs:
        return None
    first = docs[0]["post"]
    methods = {}
    for method, entry in first["methods"].items():
        post = [x for d in docs for x in d["post"]["methods"][method]["latencies_ms"]]
        total = [a + b for d in docs for a, b in zip(d["latencies_ms"], d["post"]["methods"][method]["latencies_ms"])]
        methods[method] = {"exact": entry["exact"], "blocks_refined": entry.get("blocks_refined"),
                           "latencies_ms": post, "total_ms": total}
        counted = [x for d in docs for x in d["post"]["methods"][method].get("instructions") or []]
        if counted:  # a simulated core: the instructions of each timed call
            methods[method]["instructions"] = counted
    return merge_post([{**{k: v for k, v in first.items() if k != "methods"}, "methods": methods}])


def merge_post(blocks: list[dict]) -> dict:
    """Post blocks of several results of one configuration pooled into one (statistics recomputed)."""
    from ..stats import summarize

    merged = {**{k: v for k, v in blocks[0].items() if k != "methods"}, "methods": {}}
    for method, entry in blocks[0]["methods"].items():
        post = [x for b in blocks for x in b["methods"][method]["latencies_ms"]]
        total = [x for b in blocks for x in b["methods"][method]["total_ms"]]
        merged["methods"][method] = {"exact": entry["exact"], "blocks_refined": entry.get("blocks_refined"),
                                     "latencies_ms": post, "total_ms": total, "stats": summarize(post),
                                     "total_stats": summarize(total)}
        counted = [x for b in blocks for x in b["methods"][method].get("instructions") or []]
        if counted:
            merged["methods"][method].update(instructions=counted, instructions_median=float(np.median(counted)))
    return merged


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


def unusable_conditions(doc: dict) -> str | None:
    """Why a result's latencies are unusable (interrupted run, throttled now, hot device), else None."""
    if doc.get("partial"):
        return "the run was interrupted (partial result)"
    cond = doc.get("conditions") or {}
    throttled = cond.get("throttled")
    if throttled not in (None, ""):
        try:
            bits = int(str(throttled), 16)
        except ValueError:
            bits = 0
        if bits & 0xF:                   # under-voltage / freq capped / throttled / soft temp limit NOW
            return f"device throttled during the run (vcgencmd get_throttled={throttled})"
    if cond.get("hot"):
        temp = cond.get("temp_after_c") or cond.get("temp_before_c")
        return f"device hot during the run ({temp} C)" if temp is not None else "device hot during the run"
    return None
