#!/usr/bin/env python3
"""Where the time goes per operator: TFLite (XNNPACK) fp32 vs int8 vs onnxruntime fp32, one model, one run.

    python benchmarks/operators.py [--variant tiny] [--size 512] [--threads 1] [--rounds 5] [--artifacts DIR]

Explains RESULTS.md's missed targets at the operator level. TFLite operators are timed the way the device runner's
``--profile`` does it (each operator as its own one-op model, a zero PAD with the conv it feeds); onnxruntime
with its own profiler (kernel time). Both whole models are timed too, so each column's sum can be checked
against its whole. The per-layer table puts each convolution's fp32 and int8 time side by side (the k-th
convolution of one graph is the k-th of the other) with its arithmetic rate, against a single-core torch
GEMM measured in the same run. Writes benchmarks/OPERATORS.md (``--out``) and prints it.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtimes import GEMM_N, machine_line, versions_line  # benchmarks/ is this script's directory

HERE = Path(__file__).resolve().parent
#: operator kind -> category, for TFLite builtin names and onnxruntime op types alike
CATEGORIES = {
    "convolution": {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD+CONV_2D", "PAD+DEPTHWISE_CONV_2D", "Conv", "FusedConv",
                    "QLinearConv"},
    "elementwise": {"ADD", "MUL", "RELU6", "RELU", "DIV", "SUB", "Add", "Mul", "Div", "Clip", "Relu", "Sum",
                    "HardSigmoid"},
    "resize": {"RESIZE_BILINEAR", "Resize", "Upsample"},
    "attention": {"BATCH_MATMUL", "SOFTMAX", "SUM", "MatMul", "FusedMatMul", "Softmax"},
    "pooling": {"AVERAGE_POOL_2D", "AveragePool", "GlobalAveragePool"},
    "layout": {"RESHAPE", "TRANSPOSE", "SLICE", "CONCATENATION", "PAD", "Reshape", "Transpose", "Split", "Concat",
               "ReorderInput", "ReorderOutput", "Slice"},
    "quantize": {"QUANTIZE", "DEQUANTIZE", "QuantizeLinear", "DequantizeLinear"},
}


def category(kind: str) -> str:
    return next((name for name, kinds in CATEGORIES.items() if kind in kinds), "other")


def export_artifacts(variant: str, size: tuple[int, int], out: Path) -> dict[str, Path]:
    """TFLite fp32 + int8 (PT2E) and ONNX fp32 of random live weights; reused when already in ``out``."""
    from topformer_deploy.export import export_model
    from topformer_deploy.model import random_live_model
    from topformer_deploy.export.calibration import load_calibration_images
    from topformer_deploy.artifact import artifact_name
    from topformer_deploy.export.quantize import export_int8

    paths = {"tflite-fp32": out / artifact_name(variant, size, "fp32", "logits", "tflite"),
             "tflite-int8": out / artifact_name(variant, size, "int8", "logits", "tflite"),
             "onnx-fp32": out / artifact_name(variant, size, "fp32", "logits", "onnx")}
    model = None
    for key, path in paths.items():
        if path.exists():
            continue
        model = model or random_live_model(variant, seed=0)
        print(f"exporting {path.name} ...", file=sys.stderr, flush=True)
        if key == "tflite-int8":
            export_int8(model, "tflite", out, input_size=size, weights="random",
                        calibration=load_calibration_images("synthetic", 16, size, seed=0))
        else:
            export_model(model, key.split("-")[0], out, input_size=size, precision="fp32", weights="random")
    return paths


def tflite_profile(path: Path, threads: int, rounds: int) -> dict:
    """One-op profile (the device runner's own code) plus the whole model's p50, interleaved sweeps."""
    from ai_edge_litert.interpreter import Interpreter

    from topformer_deploy.bench.device_runner import profile_tflite_ops

    whole = Interpreter(model_path=str(path), num_threads=threads)
    whole.allocate_tensors()
    whole.invoke()
    profiles, times = [], []
    for _ in range(rounds):
        profiles.append(profile_tflite_ops(str(path), threads, "litert", rounds=1))
        for _ in range(5):
            start = time.perf_counter()
            whole.invoke()
            times.append((time.perf_counter() - start) * 1e3)
    rows = profiles[0]["rows"]
    for k, row in enumerate(rows):
        row["ms"] = float(np.median([p["rows"][k]["ms"] for p in profiles]))
    return {"rows": rows, "whole_ms": float(np.median(times)), "shapes": _tflite_shapes(path)}


def _tflite_shapes(path: Path) -> dict[int, list[list[int]]]:
    """op index -> shapes of its inputs (activation, weights, ...)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    shapes = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        shapes[i] = [graph.Tensors(op.Inputs(j)).ShapeAsNumpy().tolist() for j in range(op.InputsLength())
                     if op.Inputs(j) >= 0]
    return shapes


def onnx_profile(path: Path, threads: int, runs: int) -> dict:
    """onnxruntime's kernel times per node (median over runs) and the whole model's p50."""
    import onnxruntime as ort

    from topformer_deploy.bench.benchmark_model import parse_onnxruntime_profile

    with tempfile.TemporaryDirectory(prefix="tfd-ops-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_profiling, opts.profile_file_prefix = True, f"{tmp}/ort"
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        feed = {inp.name: np.random.default_rng(0).uniform(0, 255, [int(d) for d in inp.shape]).astype(np.float32)}
        times = []
        for _ in range(runs + 2):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        events = parse_onnxruntime_profile(Path(session.end_profiling()).read_text())
    per_node = collections.defaultdict(list)
    kinds = {}
    for e in events:
        per_node[e["node"]].append(e["dur_ms"])
        kinds[e["node"]] = e["op_type"]
    rows = [{"name": kinds[n], "node": n, "ms": float(np.median(v[2:] or v))} for n, v in per_node.items()]
    return {"rows": rows, "whole_ms": float(np.median(times[2:]))}


def by_category(rows: list[dict]) -> dict[str, tuple[int, float]]:
    table = collections.defaultdict(lambda: [0, 0.0])
    for row in rows:
        if "ms" in row:
            entry = table[category(row["name"])]
            entry[0] += 1
            entry[1] += row["ms"]
    return {k: (v[0], v[1]) for k, v in table.items()}


def conv_macs(name: str, output_shape: list[int], input_shapes: list[list[int]]) -> int:
    """MACs of a TFLite CONV_2D / DEPTHWISE_CONV_2D from its output and weight shapes (NHWC, OHWI / 1HWC)."""
    _, h, w, c_out = output_shape
    weight = input_shapes[1]
    if name.endswith("DEPTHWISE_CONV_2D"):
        return h * w * c_out * weight[1] * weight[2]
    return h * w * c_out * weight[1] * weight[2] * weight[3]


def gemm_peak(threads: int, n: int = GEMM_N, reps: int = 10) -> float:
    """Single-core fp32 GEMM rate (GFLOP/s) of torch.mm n x n, as benchmarks/runtimes.py measures it."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times)) / 1e9


def render(variant, size, threads, fp32, int8, ort_, peak) -> str:
    cats = [c for c in [*CATEGORIES, "other"]]
    f, q, o = by_category(fp32["rows"]), by_category(int8["rows"]), by_category(ort_["rows"])
    lines = [f"### TopFormer-{variant}, {size[0]}x{size[1]}, {threads} thread(s)\n",
             "| category | TFLite fp32 ops | ms | TFLite int8 ops | ms | int8 / fp32 | ORT fp32 nodes | ms | "
             "TFLite fp32 / ORT |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(table, cat):
        n, ms = table.get(cat, (0, 0.0))
        return (f"{n}", f"{ms:.2f}") if n else ("-", "-")

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    for cat in cats:
        if not any(cat in t for t in (f, q, o)):
            continue
        (fn, fm), (qn, qm), (on, om) = cell(f, cat), cell(q, cat), cell(o, cat)
        lines.append(f"| {cat} | {fn} | {fm} | {qn} | {qm} | {ratio(q.get(cat, (0, 0))[1], f.get(cat, (0, 0))[1])} "
                     f"| {on} | {om} | {ratio(f.get(cat, (0, 0))[1], o.get(cat, (0, 0))[1])} |")
    sums = [sum(ms for _, ms in t.values()) for t in (f, q, o)]
    lines.append(f"| **sum of operators** | | {sums[0]:.2f} | | {sums[1]:.2f} | {ratio(sums[1], sums[0])} | | "
                 f"{sums[2]:.2f} | {ratio(sums[0], sums[2])} |")
    lines.append(f"| **whole model p50** | | {fp32['whole_ms']:.2f} | | {int8['whole_ms']:.2f} | "
                 f"{ratio(int8['whole_ms'], fp32['whole_ms'])} | | {ort_['whole_ms']:.2f} | "
                 f"{ratio(fp32['whole_ms'], ort_['whole_ms'])} |")

    convs_f = [r for r in fp32["rows"] if category(r["name"]) == "convolution"]
    convs_q = [r for r in int8["rows"] if category(r["name"]) == "convolution"]
    pairs = []
    if len(convs_f) == len(convs_q):
        for rf, rq in zip(convs_f, convs_q):
            macs = conv_macs(rf["name"], rf["output_shape"], fp32["shapes"][rf["index"] + rf["name"].count("+")])
            pairs.append((rf, rq, macs))
    pairs.sort(key=lambda p: -p[0]["ms"])
    lines += ["", f"Largest convolutions (TFLite fp32 order; GEMM peak = torch.mm {peak:.1f} GFLOP/s, same run):\n",
              "| # | op | output | MMACs | fp32 ms | fp32 GFLOP/s | of peak | int8 ms | int8 GOP/s | int8 / fp32 |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rf, rq, macs in pairs[:12]:
        gf, gq = 2 * macs / rf["ms"] / 1e6, 2 * macs / rq["ms"] / 1e6
        shape = "x".join(map(str, rf["output_shape"][1:]))
        lines.append(f"| {rf['index']} | {rf['name']} | {shape} | {macs / 1e6:.1f} | {rf['ms']:.3f} | {gf:.1f} | "
                     f"{gf / peak:.0%} | {rq['ms']:.3f} | {gq:.1f} | {rq['ms'] / rf['ms']:.2f} |")
    if pairs:
        total_macs = sum(m for *_, m in pairs)
        tf, tq = sum(p[0]["ms"] for p in pairs), sum(p[1]["ms"] for p in pairs)
        lines.append(f"| all | {len(pairs)} convolutions | | {total_macs / 1e6:.1f} | {tf:.2f} | "
                     f"{2 * total_macs / tf / 1e6:.1f} | {2 * total_macs / tf / 1e6 / peak:.0%} | {tq:.2f} | "
                     f"{2 * total_macs / tq / 1e6:.1f} | {tq / tf:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="tiny", choices=["tiny", "small", "base"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="sweeps over all operators (medians reported)")
    ap.add_argument("--artifacts", type=Path, help="reuse / keep the artifacts here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=HERE / "OPERATORS.md")
    ap.add_argument("--json", type=Path, help="also write the raw rows here")
    args = ap.parse_args(argv)
    size = (args.size, args.size)
    with tempfile.TemporaryDirectory(prefix="tfd-ops-") as tmp:
        out = args.artifacts or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        paths = export_artifacts(args.variant, size, out)
        print("profiling TFLite fp32, TFLite int8, onnxruntime fp32 ...", file=sys.stderr, flush=True)
        peak = gemm_peak(args.threads)
        fp32 = tflite_profile(paths["tflite-fp32"], args.threads, args.rounds)
        int8 = tflite_profile(paths["tflite-int8"], args.threads, args.rounds)
        ort_ = onnx_profile(paths["onnx-fp32"], args.threads, runs=10 * args.rounds)
        peak = max(peak, gemm_peak(args.threads))
    text = (f"# Operators side by side\n\nGenerated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by "
            f"`{' '.join(['python benchmarks/operators.py', *sys.argv[1:]])}`.\n\nMachine: {machine_line()}.\nVersions: {versions_line()}.\n\n" + EXPLAIN + "\n"
            + render(args.variant, size, args.threads, fp32, int8, ort_, peak))
    tmp_out = args.out.with_suffix(".md.tmp")
    tmp_out.write_text(text)
    tmp_out.replace(args.out)
    if args.json:
        args.json.write_text(json.dumps({"tflite_fp32": fp32, "tflite_int8": int8, "onnx_fp32": ort_,
                                         "gemm_peak_gflops": peak}, default=str))
    print(text)
    return 0


EXPLAIN = """\
TFLite columns: every operator run as its own one-op model with XNNPACK (the device runner's `--profile`;
a zero PAD is timed with the convolution it feeds, as XNNPACK fuses them), median of the sweeps. ORT
column: onnxruntime's profiler (kernel time per node, NCHWc layout; its layout nodes count as `layout`).
An operator alone starts with cold caches and misses its neighbours' fusions, so a column's sum is close
to, not equal to, its whole model. Weights are random but live (latency does not depend on them).
"""

if __name__ == "__main__":
    sys.exit(main())
