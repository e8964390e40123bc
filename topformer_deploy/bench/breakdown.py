"""Per-stage latency breakdown: TPM vs SASE vs SIM vs head (vs post-processing), measured on the device.

For one artifact configuration (format, precision, input size), every stage of :mod:`.stages` is
exported as its own artifact with the same converter and precision, the whole network too; each is fed
the real intermediate tensors of the model on a real photo (pushed to the runner as ``--input``) and timed
with the same engine and settings through the bench harness. The result puts, per stage, parameters, MACs
and latency p50 side by side, and checks ``sum of the network's stages / whole model`` (the post stage -
upsample to full resolution + argmax - is reported beside the network, not in that sum).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import TopformerDeployError
from ..export.offline import quiet_native_output
from ..model import TopFormer
from .stages import (ALL_STAGES, NETWORK_STAGES, attribute_ops, build_stages, stage_input_names, stage_inputs,
                     stage_output_names)

SCHEMA = "topformer-deploy/breakdown"
SCHEMA_VERSION = 1
FORMATS = ("tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
#: reconciliation (sum of stages / whole model) inside this band is "consistent"
RECONCILE_BAND = (0.85, 1.15)
Progress = Callable[[str], None]


@dataclass
class BreakdownOptions:
    """What to export and how to time it (the same settings for every stage and the whole model)."""

    fmt: str = "tflite"
    precision: str = "fp32"
    input_size: tuple[int, int] = (512, 512)
    device: str = "local"
    engine: str = "python"
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    cores: str = "big"
    benchmark_binary: str | None = None
    adb_path: str | None = None
    ssh_config: str | None = None
    python: str | None = None                     # None: this interpreter for local, python3 elsewhere
    allow_hot: bool = False
    calibration: list[np.ndarray] | None = None   # NCHW float32 images, preprocessed (int8 only)
    calibration_source: str | None = None
    rounds: int = 5                                # runs are split into rounds, stages interleaved
    profile: bool = True                           # the operator view, where the engine can give one


def sample_image(height: int, width: int) -> torch.Tensor:
    """A real photo (scikit-image's astronaut, shipped with the package), preprocessed as inference does."""
    from ..export.images import sample_photos

    return torch.from_numpy(sample_photos((height, width), count=1)[0])


def prepare_model(model: TopFormer, fmt: str) -> TopFormer:
    """The model exactly as the exporter converts it: BN folded, plain average pools, NHWC attention for TFLite."""
    from ..export.prepare import fold_for_export
    from ..export.rewrite import rewrite_for_nhwc

    folded = fold_for_export(model)
    return (rewrite_for_nhwc(folded) if fmt == "tflite" else folded).eval()


# ------------------------------------------------------------------------------------------ export
def _names(model: TopFormer, stage: str) -> tuple[list[str], list[str]]:
    if stage == "full":
        return ["image"], ["logits"]
    return stage_input_names(stage, model), stage_output_names(stage, model)


def export_stage(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, fmt: str, precision: str,
                 input_names: list[str], output_names: list[str]) -> Path:
    """Convert one stage (or the whole network) with the exporter's generic converters."""
    from ..export import convert_onnx, convert_tflite

    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # moved into place only when complete
    try:
        if fmt == "tflite":
            convert_tflite(module, inputs, partial, precision=precision, nhwc=True)
        else:
            convert_onnx(module, inputs, partial, input_names, output_names, precision=precision)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def runtime_inputs(path: Path) -> list[dict]:
    """Name, shape and dtype of each input as the runtime reports them (in its order)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [{"name": i.name, "shape": list(i.shape), "dtype": "float32" if "float" in i.type else i.type}
                for i in session.get_inputs()]
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_input_details()
    return [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
            for d in details]


def arrange_inputs(tensors: tuple[torch.Tensor, ...], wanted: list[dict], nhwc: bool) -> dict[str, np.ndarray]:
    """Map the stage's NCHW tensors onto the runtime's inputs (by shape, in order for equal shapes)."""
    arrays = [t.detach().numpy() for t in tensors]
    if nhwc:
        arrays = [a.transpose(0, 2, 3, 1) if a.ndim == 4 else a for a in arrays]
    free = list(range(len(arrays)))
    feeds = {}
    for info in wanted:
        match = next((i for i in free if list(arrays[i].shape) == list(info["shape"])), None)
        if match is None:
            raise TopformerDeployError(f"stage input {info['name']} {info['shape']} matches none of "
                                       f"{[list(a.shape) for a in arrays]}")
        free.remove(match)
        feeds[info["name"]] = np.ascontiguousarray(arrays[match], dtype=np.float32)
    return feeds


def write_inputs(feeds: dict[str, np.ndarray], path: Path) -> Path:
    """Save the runner's ``--input``: .npy for one input, .npz keyed by input name for several."""
    path = path.with_name(path.name + (".npy" if len(feeds) == 1 else ".npz"))
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if len(feeds) == 1:
        np.save(tmp, next(iter(feeds.values())))
    else:
        np.savez(tmp, **feeds)
    tmp.replace(path)
    return path


def stage_manifest(stage: str, path: Path, options: BreakdownOptions, model: TopFormer, wanted: list[dict],
                   weights: str, checkpoint: str | None = None) -> dict:
    """The contract's manifest for a stage artifact (``stage`` names it; ``input_size`` is the network's)."""
    from ..export.manifest import library_versions, now_iso, sha256_file

    layout = "NHWC" if options.fmt == "tflite" else "NCHW"
    inputs = [{**w, "layout": layout} for w in wanted]
    return {"artifact": path.name, "format": options.fmt, "precision": options.precision, "variant": model.variant,
            "num_classes": model.num_classes, "stage": stage, "input": inputs[0], "inputs": inputs,
            "input_size": list(options.input_size),
            "output": {"semantics": "argmax-full" if stage == "post" else "logits", "layout": layout,
                       "scale": "1/1" if stage == "post" else "1/8"},
            "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)} if checkpoint else "random",
            "weights": weights,
            "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "versions": library_versions(),
            "verification": None, "created": now_iso()}


# ----------------------------------------------------------------------------------------- timing
def _load_model(model: TopFormer | str, checkpoint: str | None) -> tuple[TopFormer, str]:
    if isinstance(model, TopFormer):
        return model.eval(), "checkpoint" if checkpoint else "given"
    if checkpoint:
        from ..model.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, variant=model), "checkpoint"
    from ..export import random_live_model

    return random_live_model(model), "random"


def export_breakdown_artifacts(model: TopFormer, options: BreakdownOptions, out_dir: Path, weights: str,
                               progress: Progress, checkpoint: str | None = None) -> dict[str, dict]:
    """Export the five stages and the whole network; -> {stage: {"path", "input_file", "inputs"}}."""
    from ..export.manifest import write_manifest

    h, w = options.input_size
    fmt, precision = options.fmt, options.precision
    prepared = prepare_model(model, fmt)
    image = sample_image(h, w)
    tensors = stage_inputs(prepared, image)
    modules = build_stages(prepared, h, w)
    modules["full"] = prepared
    tensors["full"] = (image,)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"topformer_{model.variant}_{h}x{w}_{precision}"
    artifacts = {}
    if precision == "int8":
        paths = _export_int8(modules, tensors, options, out_dir, base, progress)
    else:
        paths = {}
        for stage in ("full", *ALL_STAGES):
            path = out_dir / f"{base}_{stage}.{fmt}"
            progress(f"exporting {stage} -> {path.name}")
            names_in, names_out = _names(prepared, stage)
            paths[stage] = export_stage(modules[stage], tensors[stage], path, fmt, precision, names_in, names_out)
    for stage, path in paths.items():
        wanted = runtime_inputs(path)
        feeds = arrange_inputs(tensors[stage], wanted, nhwc=fmt == "tflite")
        input_file = write_inputs(feeds, out_dir / f"{path.stem}.inputs")
        write_manifest(path, stage_manifest(stage, path, options, model, wanted, weights, checkpoint))
        artifacts[stage] = {"path": path, "input_file": input_file, "inputs": wanted}
    return artifacts


def _export_int8(modules, tensors, options, out_dir, base, progress) -> dict[str, Path]:
    """int8 artifacts of the whole network and of every stage, calibrated once, by the exporter's routes.

    One float pass over the calibration images gives every stage its real inputs. Calibration is MinMax
    (both routes of :mod:`..export.quantize`), so each tensor of a stage sees exactly the values it sees
    in the whole model and gets the whole int8 model's scale and zero point (the tests check this for
    ONNX). The routes are ``export --precision int8``'s: PT2E for TFLite, onnxruntime QDQ per-channel for
    ONNX; float input/output as the exporter writes them.
    """
    from ..export.quantize import quantize_onnx, quantize_tflite_pt2e

    if not options.calibration:
        raise TopformerDeployError("int8 breakdown needs calibration images (--calib DIR or --calib synthetic)")
    prepared = modules["full"]
    progress(f"calibration: one float pass over {len(options.calibration)} images")
    passes = [stage_inputs(prepared, torch.from_numpy(np.asarray(image, dtype=np.float32)))
              for image in options.calibration]
    samples = {stage: [tuple(t.numpy() for t in p[stage]) for p in passes] for stage in ALL_STAGES}
    samples["full"] = samples["tpm"]
    paths = {}
    for stage in ("full", *ALL_STAGES):
        path = out_dir / f"{base}_{stage}.{options.fmt}"
        progress(f"exporting {stage} -> {path.name} (int8, {len(samples[stage])} calibration samples)")
        if options.fmt == "tflite":
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                with quiet_native_output():
                    quantize_tflite_pt2e(modules[stage], tmp, samples[stage])
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            fp32 = out_dir / f".{path.stem}.fp32.onnx"
            names_in, names_out = _names(prepared, stage)
            try:
                export_stage(modules[stage], tensors[stage], fp32, "onnx", "fp32", names_in, names_out)
                with quiet_native_output():
                    quantize_onnx(fp32, path, samples[stage])
            finally:
                fp32.unlink(missing_ok=True)
        paths[stage] = path
    return paths


def time_artifacts(artifacts: dict[str, dict], options: BreakdownOptions, progress: Progress,
                   on_partial: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """Time every artifact with the same engine and settings on one device; -> {stage: bench result}.

    The runs are split into ``options.rounds`` rounds; each round times every artifact (in alternating
    order), so a drift of the machine (heat, other load) hits all stages alike rather than one.
    """
    from .harness import BenchOptions, run_bench
    from .transports import open_transport

    order = ["full", *ALL_STAGES]
    rounds = max(1, min(options.rounds, options.runs))
    per_round = [options.runs // rounds + (1 if r < options.runs % rounds else 0) for r in range(rounds)]
    docs: dict[str, list[dict]] = {stage: [] for stage in order}
    with open_transport(options.device, options.adb_path, options.ssh_config) as transport:
        for r, runs in enumerate(per_round):
            for stage in (order if r % 2 == 0 else order[::-1]):
                entry = artifacts[stage]
                bench = BenchOptions(threads=options.threads, warmup=options.warmup, runs=runs, cores=options.cores,
                                     engine=options.engine, allow_hot=options.allow_hot, python=options.python,
                                     benchmark_binary=options.benchmark_binary,
                                     input_file=str(entry["input_file"]) if options.engine == "python" else None)
                progress(f"round {r + 1}/{rounds}: timing {stage} on {transport.name} "
                         f"({options.warmup} warmup + {runs} runs)")
                docs[stage].append(run_bench(entry["path"], transport, bench))
            if on_partial:
                on_partial({stage: _merge_rounds(d, options, stage) for stage, d in docs.items() if d})
    return {stage: _merge_rounds(d, options, stage) for stage, d in docs.items()}


def _merge_rounds(docs: list[dict], options: BreakdownOptions, stage: str) -> dict:
    """One bench result from the rounds of one artifact: all latencies, stats over all of them."""
    from .result import config_key
    from .stats import summarize

    doc = copy.deepcopy(docs[0])
    latencies = [x for d in docs for x in d["latencies_ms"]]
    doc.update({"latencies_ms": latencies, "runs": len(latencies), "stats": summarize(latencies),
                "repeats": [{"runs": d["runs"], "p50": d["stats"]["p50"], "load_ms": d.get("load_ms")} for d in docs]})
    doc["conditions"]["temp_after_c"] = docs[-1]["conditions"].get("temp_after_c")
    doc["conditions"]["hot"] = any(d["conditions"].get("hot") for d in docs)
    doc["config"]["input_size"] = list(options.input_size)  # a stage's manifest input is an inner tensor
    doc["config"]["stage"] = stage
    doc["config_key"] = config_key(doc["config"])
    return doc


def operator_view(artifacts: dict[str, dict], options: BreakdownOptions, progress: Progress) -> dict:
    """Operator times of the whole model attributed to stages, where the engine can profile."""
    if not options.profile:
        return {"available": False, "reason": "not asked for (--no-profile)"}
    if options.engine == "python":
        return _python_operator_view(artifacts["full"], options, progress)
    if options.fmt == "tflite" and options.engine == "benchmark_model":
        return _benchmark_model_operator_view(artifacts["full"], options, progress)
    return {"available": False, "reason": f"no operator profiler for {options.fmt} with the {options.engine} engine"}


def _python_operator_view(entry: dict, options: BreakdownOptions, progress: Progress) -> dict:
    """The runner's operator profile: onnxruntime's profiler (ONNX) or one-op models (TFLite)."""
    import json
    import tempfile

    from .benchmark_model import parse_onnxruntime_profile, summarize_onnxruntime_profile
    from .harness import BenchOptions, run_bench
    from .stages import stage_of_node, tflite_op_stages
    from .transports import open_transport

    onnx = options.fmt == "onnx"
    source = ("onnxruntime profiler (kernel time, whole model)" if onnx else
              "every operator run as its own one-op model (a zero PAD with the conv it feeds), same runtime")
    warmup, runs = 2, max(1, min(options.runs, 10))
    with tempfile.TemporaryDirectory(prefix="tfd-profile-") as local, \
            open_transport(options.device, options.adb_path, options.ssh_config) as transport:
        bench = BenchOptions(threads=options.threads, warmup=warmup, runs=runs, cores=options.cores,
                             allow_hot=options.allow_hot, python=options.python,
                             input_file=str(entry["input_file"]), profile_dir=local)
        progress(f"profiling the whole model's operators on {transport.name}")
        doc = run_bench(entry["path"], transport, bench, progress=progress)
        profile = (doc.get("runner") or {}).get("profile") or {}
        if not profile.get("local_file"):
            return {"available": False, "source": source, "reason": "the runner wrote no profile"}
        text = Path(profile["local_file"]).read_text()
    if onnx:
        events = parse_onnxruntime_profile(text)
        view = attribute_ops(events, "node", "dur_ms")
        calls = warmup + runs
        for entry_ in [*view["stages"].values(), view["unattributed"]]:
            entry_["ms_per_run"] = entry_["ms"] / calls
        ops = [{"name": node["op_type"], "node": node["node"], "ms": node["total_ms"] / calls,
                "stage": stage_of_node(node["node"] or "")} for node in summarize_onnxruntime_profile(events)]
        view.update({"available": True, "source": source, "profiled_runs": calls,
                     "ms_per_run": view["total_ms"] / calls, "ops": ops})
        return view
    stages = tflite_op_stages(entry["path"])
    rows = [{**row, "stage": stages[row["index"]][1]} for row in json.loads(text)["rows"] if "ms" in row]
    view = attribute_ops(rows, "name", "ms", inherit=False)
    for entry_ in [*view["stages"].values(), view["unattributed"]]:
        entry_["ms_per_run"] = entry_["ms"]  # one-op medians are already per run
    view.update({"available": True, "source": source, "ms_per_run": view["total_ms"],
                 "ops": sorted(rows, key=lambda r: -r["ms"])})
    return view


def _benchmark_model_operator_view(entry: dict, options: BreakdownOptions, progress: Progress) -> dict:
    from .harness import BenchOptions, run_bench
    from .stages import tflite_op_stages, xnnpack_row_stages
    from .transports import open_transport

    source = "benchmark_model --enable_op_profiling (whole model)"
    if "op_profiling" not in BenchOptions.__dataclass_fields__:
        return {"available": False, "source": source,
                "reason": "the bench harness does not pass --enable_op_profiling to benchmark_model yet"}
    with open_transport(options.device, options.adb_path, options.ssh_config) as transport:
        bench = BenchOptions(threads=options.threads, warmup=2, runs=max(1, min(options.runs, 10)),
                             cores=options.cores, engine="benchmark_model", allow_hot=options.allow_hot,
                             benchmark_binary=options.benchmark_binary, op_profiling=True)
        progress("profiling the whole model with benchmark_model")
        doc = run_bench(entry["path"], transport, bench, progress=progress)
    rows = ((doc.get("runner") or {}).get("benchmark_model") or {}).get("ops") or []
    if not rows:
        return {"available": False, "source": source, "reason": "benchmark_model printed no op profile"}
    view = attribute_ops(xnnpack_row_stages(rows, tflite_op_stages(entry["path"])), "name", "avg_ms",
                         inherit=False)
    for entry_ in [*view["stages"].values(), view["unattributed"]]:
        entry_["ms_per_run"] = entry_["ms"]  # benchmark_model's rows are already per-run averages
    view.update({"available": True, "source": source, "ms_per_run": view["total_ms"]})
    return view


# ---------------------------------------------------------------------------------------- summary
def summarize_breakdown(model: TopFormer, results: dict[str, dict], artifacts: dict[str, dict],
                        options: BreakdownOptions, weights: str, op_view: dict | None) -> dict:
    """The breakdown document: per stage params / MACs / p50 / shares, and the reconciliation."""
    from .. import __version__
    from ..complexity import model_complexity
    from .result import now_iso

    h, w = options.input_size
    cost = {r.stage: r for r in model_complexity(model, h, w, full_resolution=True)}
    cost["post"] = cost.pop("upsample")
    whole = results["full"]["stats"]
    shares = round_shares(results)
    rows = []
    for stage in ALL_STAGES:
        stats = results[stage]["stats"]
        c = cost[stage]
        rows.append({"stage": stage, "in_network": stage in NETWORK_STAGES, "params": c.params,
                     "param_share": c.param_share, "macs": c.macs, "mac_share": c.mac_share,
                     "p50_ms": stats["p50"], "p90_ms": stats["p90"], "mean_ms": stats["mean"], "cv": stats["cv"],
                     "latency_share": shares[stage], "artifact": str(artifacts[stage]["path"]),
                     "config_key": results[stage]["config_key"]})
    network_sum = sum(r["p50_ms"] for r in rows if r["in_network"])
    per_round = round_reconciliations(results)
    reconciliation = float(np.median(per_round)) if per_round else network_sum / whole["p50"]
    full = results["full"]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(), "tool_version": __version__,
        "config": {"variant": model.variant, "format": options.fmt, "precision": options.precision,
                   "threads": options.threads, "input_size": [h, w], "engine": options.engine,
                   "device": options.device, "warmup": options.warmup, "runs": options.runs, "weights": weights,
                   "calibration": options.calibration_source if options.precision == "int8" else None},
        "device": full.get("device"), "runtime": full.get("runtime"),
        "stages": rows,
        "whole": {"p50_ms": whole["p50"], "p90_ms": whole["p90"], "mean_ms": whole["mean"], "cv": whole["cv"],
                  "params": sum(cost[s].params for s in NETWORK_STAGES),
                  "macs": sum(cost[s].macs for s in NETWORK_STAGES), "artifact": str(artifacts["full"]["path"]),
                  "config_key": full["config_key"]},
        "network_sum_ms": network_sum, "reconciliation": reconciliation, "reconciliation_rounds": per_round,
        "reconciliation_pooled": network_sum / whole["p50"],
        "reconciled": RECONCILE_BAND[0] <= reconciliation <= RECONCILE_BAND[1], "reconcile_band": list(RECONCILE_BAND),
        "note": "reconciliation = (tpm + sase + sim + head p50) / whole-model p50, computed within each round "
                "(the artifacts of a round run back to back) and the median over rounds taken, so a drift of "
                "the machine's load between rounds cancels; reconciliation_pooled uses the p50s over all "
                "rounds. post (x8 bilinear upsample to the input size + argmax) is timed beside the network, "
                "not in that sum; every latency share is a stage's p50 over the whole model's p50, taken in "
                "each round and the median over rounds; parameter and MAC shares are of the network's totals",
        "operator_view": op_view,
        "results": results,
    }


def round_reconciliations(results: dict[str, dict]) -> list[float]:
    """(sum of the network stages' p50 / whole-model p50) within each round of interleaved runs."""
    repeats = {stage: results[stage].get("repeats") or [] for stage in ("full", *NETWORK_STAGES)}
    rounds = min(len(r) for r in repeats.values())
    return [sum(repeats[s][i]["p50"] for s in NETWORK_STAGES) / repeats["full"][i]["p50"] for i in range(rounds)]


def round_shares(results: dict[str, dict]) -> dict[str, float]:
    """Each stage's p50 / whole-model p50, taken within each round, median over rounds (paired in time)."""
    whole = results["full"].get("repeats") or []
    shares = {}
    for stage in ALL_STAGES:
        own = results[stage].get("repeats") or []
        ratios = [a["p50"] / b["p50"] for a, b in zip(own, whole)]
        shares[stage] = float(np.median(ratios)) if ratios else results[stage]["stats"]["p50"] / \
            results["full"]["stats"]["p50"]
    return shares


def run_breakdown(model: TopFormer | str, options: BreakdownOptions | None = None, out_dir: str | Path | None = None,
                  *, checkpoint: str | None = None, progress: Progress | None = None,
                  on_partial: Callable[[dict], None] | None = None) -> dict:
    """Export, time and compare the stages of ``model`` (a TopFormer or a variant name); return the document.

    ``out_dir`` keeps the stage artifacts and their input tensors (default ``artifacts/breakdown/<config>``).
    ``on_partial(results)`` gets the bench results measured so far after every artifact.
    """
    from ..export.prepare import check_export_size

    options = options or BreakdownOptions()
    say = progress or (lambda msg: None)
    if options.fmt not in FORMATS:
        raise TopformerDeployError(f"unknown format {options.fmt!r}: use tflite or onnx")
    if options.precision not in PRECISIONS:
        raise TopformerDeployError(f"unknown precision {options.precision!r}: use fp32, fp16 or int8")
    if options.engine == "benchmark_model" and options.fmt != "tflite":
        raise TopformerDeployError("--engine benchmark_model runs TFLite artifacts only")
    h, w = options.input_size
    check_export_size(h, w)
    net, weights = _load_model(model, checkpoint)
    out = Path(out_dir) if out_dir else Path("artifacts") / "breakdown" / (
        f"{net.variant}_{h}x{w}_{options.fmt}_{options.precision}")
    say(f"exporting the stages of {net.variant} {h}x{w} to {options.fmt} {options.precision} in {out}")
    artifacts = export_breakdown_artifacts(net, options, out, weights, say, checkpoint)
    results = time_artifacts(artifacts, options, say, on_partial)
    op_view = operator_view(artifacts, options, say)
    return summarize_breakdown(net, results, artifacts, options, weights, op_view)
