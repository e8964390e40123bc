"""The operator view of a breakdown: profiler rows of the whole model attributed to stages.

Three sources, by engine and format: onnxruntime's profiler (ONNX node names carry the module path), the
runner's one-op TFLite profile (every operator timed as its own model; its stage read from the tensor
names litert-torch writes), and ``benchmark_model --enable_op_profiling`` (XNNPACK's delegate rows, matched
to the graph's convolutions in order).
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from ..bench.harness import run_bench
from ..model.stages import ALL_STAGES, stage_of_node
from .options import BreakdownOptions, Progress


def operator_view(artifacts: dict[str, dict], options: BreakdownOptions, progress: Progress) -> dict:
    """Operator times of the whole model attributed to stages, where the engine can profile."""
    if not options.profile:
        return {"available": False, "reason": "not asked for (--no-profile)"}
    options = options.resolve_engine(progress)
    if options.engine == "python":
        return _python_operator_view(artifacts["full"], options, progress)
    if options.fmt == "tflite" and options.engine == "benchmark_model":
        return _benchmark_model_operator_view(artifacts["full"], options, progress)
    return {"available": False, "reason": f"no operator profiler for {options.fmt} with the {options.engine} engine"}


def _python_operator_view(entry: dict, options: BreakdownOptions, progress: Progress) -> dict:
    """The runner's operator profile: onnxruntime's profiler (ONNX) or one-op models (TFLite)."""
    from ..bench.benchmark_model import parse_onnxruntime_profile, summarize_onnxruntime_profile

    onnx = options.fmt == "onnx"
    source = ("onnxruntime profiler (kernel time, whole model)" if onnx else
              "every operator run as its own one-op model (a zero PAD with the conv it feeds), same runtime")
    warmup, runs = 2, max(1, min(options.runs, 10))
    with tempfile.TemporaryDirectory(prefix="tfd-profile-") as local, options.transport(progress) as transport:
        bench = options.bench_options(runs, warmup=warmup, engine="python", input_file=str(entry["input_file"]),
                                      profile_dir=local)
        progress(f"profiling the whole model's operators on {transport.name}")
        doc = run_bench(entry["path"], transport, bench, progress=progress)
        profile = (doc.get("runner") or {}).get("profile") or {}
        if not profile.get("local_file"):
            return {"available": False, "source": source,
                    "reason": doc["runner"].get("pull_error") or "the runner wrote no profile"}
        text = Path(profile["local_file"]).read_text()
    if onnx:
        events = parse_onnxruntime_profile(text)
        view = attribute_ops(events, "node", "dur_ms")
        calls = warmup + runs
        _per_run(view, calls)
        ops = [{"name": node["op_type"], "node": node["node"], "ms": node["total_ms"] / calls,
                "stage": stage_of_node(node["node"] or "")} for node in summarize_onnxruntime_profile(events)]
        view.update({"available": True, "source": source, "profiled_runs": calls,
                     "ms_per_run": view["total_ms"] / calls, "ops": ops})
        return view
    stages = tflite_op_stages(entry["path"])
    rows = [{**row, "stage": stages[row["index"]][1]} for row in json.loads(text)["rows"] if "ms" in row]
    view = attribute_ops(rows, "name", "ms", inherit=False)
    _per_run(view, 1)  # one-op medians are already per run
    counted = all("instructions" in r for r in rows)
    if counted:  # a simulated core: each operator's instructions, per stage
        for row in rows:
            row["instruction_total"] = row["instructions"]["total"]
        by_stage = attribute_ops(rows, "name", "instruction_total", inherit=False)
        view["instructions"] = {"total": by_stage["total_ms"], "unattributed": by_stage["unattributed"]["ms"],
                                "stages": {stage: e["ms"] for stage, e in by_stage["stages"].items()}}
    key = "instruction_total" if counted else "ms"
    view.update({"available": True, "source": source, "ms_per_run": view["total_ms"],
                 "ops": sorted(rows, key=lambda r: -r[key])})
    return view


#: benchmark_model prints each operator's mean over one invocation's runs, which one preempted run can dominate:
#: the operator view takes, per operator, the median over this many invocations
PROFILE_INVOCATIONS = 3


def _benchmark_model_operator_view(entry: dict, options: BreakdownOptions, progress: Progress) -> dict:
    source = (f"benchmark_model --enable_op_profiling (whole model; per operator the median of "
              f"{PROFILE_INVOCATIONS} invocations' means)")
    profiles = []
    with options.transport(progress) as transport:
        bench = options.bench_options(max(1, min(options.runs, 10)), warmup=2, op_profiling=True)
        for k in range(PROFILE_INVOCATIONS):
            progress(f"profiling the whole model with benchmark_model ({k + 1}/{PROFILE_INVOCATIONS})")
            doc = run_bench(entry["path"], transport, bench, progress=progress)
            profiles.append(((doc.get("runner") or {}).get("benchmark_model") or {}).get("ops") or [])
    rows = median_rows(profiles, "avg_ms")
    if not rows:
        return {"available": False, "source": source, "reason": "benchmark_model printed no op profile"}
    view = attribute_ops(xnnpack_row_stages(rows, tflite_op_stages(entry["path"])), "name", "avg_ms",
                         inherit=False)
    _per_run(view, 1)  # benchmark_model's rows are already per-run averages
    view.update({"available": True, "source": source, "ms_per_run": view["total_ms"]})
    return view


def median_rows(profiles: list[list[dict]], key: str) -> list[dict]:
    """One profile from several of the same model: each row's ``key`` the median over the profiles (rows matched
    by position, all profiles listing the same operators); [] when a profile is empty or they disagree."""
    if not profiles or not all(profiles) or len({tuple(r.get("name") for r in p) for p in profiles}) != 1:
        return []
    return [{**rows[0], key: statistics.median(float(r.get(key) or 0.0) for r in rows)} for rows in zip(*profiles)]


def _per_run(view: dict, calls: int) -> None:
    for part in [*view["stages"].values(), view["unattributed"]]:
        part["ms_per_run"] = part["ms"] / calls


def attribute_ops(rows: list[dict], name_key: str, ms_key: str, inherit: bool = True) -> dict:
    """Sum operator times per stage: ``{"stages": {stage: {ms, ops, share}}, "unattributed": {...}, "total_ms"}``.

    ``rows`` are profiler rows in execution order (ORT kernel events, benchmark_model op rows); a row's stage
    is its ``"stage"`` key when it has one, else read from its name by :func:`stage_of_node`. A row whose
    name carries no module path (ORT's inserted ``ReorderInput``/``ReorderOutput`` layout nodes) takes,
    with ``inherit``, the stage of its neighbour: the next attributed row for a name with ``Input`` in
    it, else the previous one; such rows are counted as ``inherited``.
    """
    named = [row["stage"] if "stage" in row else stage_of_node(str(row.get(name_key) or "")) for row in rows]
    stages = list(named)
    if inherit:
        for i, stage in enumerate(named):
            if stage is None:
                after = next((s for s in named[i + 1:] if s), None)
                before = next((s for s in reversed(named[:i]) if s), None)
                wants_next = "Input" in str(rows[i].get(name_key) or "")
                stages[i] = (after or before) if wants_next else (before or after)
    totals: dict[str, dict] = {}
    unattributed = {"ms": 0.0, "ops": 0, "names": []}
    for row, own, stage in zip(rows, named, stages):
        ms = float(row.get(ms_key) or 0.0)
        if stage is None:
            unattributed["ms"] += ms
            unattributed["ops"] += 1
            if len(unattributed["names"]) < 10:
                unattributed["names"].append(row.get(name_key))
            continue
        entry = totals.setdefault(stage, {"ms": 0.0, "ops": 0, "inherited": 0})
        entry["ms"] += ms
        entry["ops"] += 1
        entry["inherited"] += own is None
    total = sum(e["ms"] for e in totals.values()) + unattributed["ms"]
    for entry in [*totals.values(), unattributed]:
        entry["share"] = entry["ms"] / total if total else 0.0
    return {"stages": {s: totals[s] for s in ALL_STAGES if s in totals}, "unattributed": unattributed,
            "total_ms": total}


#: TFLite ops that XNNPACK runs as one "Convolution (...)" operator each, in the graph's order
_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def tflite_op_stages(path) -> list[tuple[str, str | None]]:
    """(op name, stage) of every operator of a ``.tflite`` file, in execution order, from its tensor names.

    An op whose output is a graph output (``serving_default_output_0``, no module path) takes the stage of
    the op before it.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops, previous = [], None
    for op in interp._get_ops_details():
        stage = stage_of_node(";".join(names.get(i, "") for i in op["outputs"])) or previous
        ops.append((op["op_name"], stage))
        previous = stage
    return ops


def xnnpack_row_stages(rows: list[dict], op_stages: list[tuple[str, str | None]]) -> list[dict]:
    """Give benchmark_model op-profile rows a ``"stage"``, also for XNNPACK's delegate-internal rows.

    XNNPACK names its operators by kind and index (``Delegate/Convolution (NHWC, F32) IGEMM:12``), not by
    tensor. It creates them in the TFLite graph's order, one per convolution, so the k-th XNNPACK
    convolution is the k-th CONV_2D / DEPTHWISE_CONV_2D of the graph; every other delegated operator is
    given the stage of the convolution before it (an approximation at stage boundaries: e.g. SASE's
    average pools count towards the TPM). Rows that name a tensor (undelegated ops) use their name; the
    runtime's own rows (``AllocateTensors``, ``LiteRT::Run[...]``) get no stage.
    """
    conv_stages = [stage for op, stage in op_stages if op in _CONV_OPS]
    current, k, out = None, 0, []
    for row in rows:
        name, kind = str(row.get("name") or ""), str(row.get("node_type") or "")
        stage = stage_of_node(name)
        if stage is None and name.startswith("Delegate/"):
            if kind.startswith("Convolution") and k < len(conv_stages):
                current, k = conv_stages[k], k + 1
            stage = current or (conv_stages[0] if conv_stages else None)
        out.append({**row, "stage": stage})
    return out
