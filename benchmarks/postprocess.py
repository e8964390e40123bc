#!/usr/bin/env python3
"""What an app pays after the network: the exact sparse post-processing against the in-graph exact argmax-full.

On the trained demo model (models/topformer_tiny_demo.pth, 11 classes) at --size (default 512x512), for
--images held-out images (the synthetic ``val`` split; ``--photos`` adds scikit-image's photos, which the
demo model never learned and segments poorly), the logits (NHWC, as a TFLite network hands them to an app)
are turned into the class map by:

- in-graph argmax-full: the breakdown's ``post`` artifact (TFLite: RESIZE_BILINEAR + ARG_MAX), timed as an
  app calls it: set the logits, invoke, read the class map;
- the numpy methods of :mod:`topformer_deploy.postprocess`: sparse (exact), nearest, bilinear-half,
  bilinear-quarter, and dense (exact, the reference: --dense-runs, it is slow);
- PyTorch's ``F.interpolate(...).argmax(0)`` (NCHW logits), the definition of the exact map.

Round by round every method runs on every image (so drift and other load hit all alike); per image the
p50 over its runs, then the median over images. Printed: p50 wall and CPU (thread) time per method, the
ratio in-graph / sparse (target: at least 3), the fraction of blocks the sparse method refines, and each
method's pixel agreement with the exact class map. With --pipeline also the whole network side by side:
an ``--output argmax-full`` export against the ``logits`` export + sparse.

    python benchmarks/postprocess.py [--size 512] [--images 8] [--rounds 10] [--runs 3] [--pipeline] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtimes import machine_line, versions_line  # benchmarks/ is this script's directory

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "topformer_tiny_demo.pth"
NUMPY_METHODS = ("sparse", "nearest", "bilinear-half", "bilinear-quarter", "dense")
IN_GRAPH = "in-graph argmax-full"
TORCH = "torch F.interpolate + argmax"


def held_out_images(size: tuple[int, int], count: int, photos: bool) -> list[np.ndarray]:
    """``count`` held-out images (and the photos) preprocessed to NCHW batches of one."""
    from topformer_deploy.data import generate_sample
    from topformer_deploy.images import preprocess, sample_photos

    images = [preprocess(generate_sample(0, "val", index, size)[0], size) for index in range(count)]
    return images + (sample_photos(size, count=5) if photos else [])


def post_artifact(size: tuple[int, int], logits: np.ndarray, out: Path) -> Path:
    """The breakdown's post stage (x8 bilinear + argmax in the graph) as a TFLite artifact."""
    import torch

    from topformer_deploy.export.tflite import convert_tflite
    from topformer_deploy.model.stage_modules import PostStage

    return convert_tflite(PostStage(*size), (torch.from_numpy(logits),), out / "post.tflite")


class InGraph:
    """A TFLite class-map model called as an app calls it: set the input, invoke, read the output."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        self.output = self.interp.get_output_details()[0]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.input, x)
        self.interp.invoke()
        return self.interp.get_tensor(self.output)


def timed(call, runs: int) -> tuple[list[float], list[float], object]:
    """Wall and CPU (this thread) milliseconds of ``runs`` calls, and the last result."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        w, c = time.perf_counter(), time.thread_time()
        result = call()
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return wall, cpu, result


def measure(logits: list[np.ndarray], size, graph: InGraph, rounds: int, runs: int, dense_runs: int) -> dict:
    """{method: {"wall": [[ms per run] per image], "cpu": ..., "maps": [class map per image]}}, interleaved."""
    import torch
    import torch.nn.functional as F

    from topformer_deploy.postprocess import class_map

    nhwc = [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in logits]
    nchw = [torch.from_numpy(x) for x in logits]
    methods = (IN_GRAPH, TORCH, *NUMPY_METHODS)
    data = {m: {"wall": [[] for _ in nhwc], "cpu": [[] for _ in nhwc], "maps": [None] * len(nhwc)} for m in methods}
    calls = {IN_GRAPH: lambda i: graph(nhwc[i])[0],
             TORCH: lambda i: F.interpolate(nchw[i], size=size, mode="bilinear", align_corners=False)[0].argmax(0)}
    calls.update({m: (lambda i, m=m: class_map(nhwc[i], size, m, layout="NHWC")) for m in NUMPY_METHODS})
    for r in range(rounds):
        order = methods if r % 2 == 0 else methods[::-1]
        for i in range(len(nhwc)):
            for method in order:
                n = (dense_runs if r == 0 else 0) if method == "dense" else runs
                if not n:
                    continue
                calls[method](i)  # warm: the first call of a size builds its plan
                wall, cpu, result = timed(lambda: calls[method](i), n)
                data[method]["wall"][i] += wall
                data[method]["cpu"][i] += cpu
                data[method]["maps"][i] = np.asarray(result)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return data


def pipeline(model, size, logits_in: list[np.ndarray], out: Path, threads: int, rounds: int, runs: int) -> dict:
    """The whole network: ``--output argmax-full`` export against the ``logits`` export + sparse (p50 ms)."""
    from topformer_deploy.export import export_model
    from topformer_deploy.postprocess import class_map

    paths = {o: export_model(model, "tflite", out / o, input_size=size, output=o, checkpoint=str(DEMO),
                             verify=False).path for o in ("logits", "argmax-full")}
    full, logits = InGraph(paths["argmax-full"], threads), InGraph(paths["logits"], threads)
    times = {"argmax-full export": [], "logits export + sparse": []}
    for r in range(rounds):
        for x in logits_in:
            for name in (times if r % 2 == 0 else list(times)[::-1]):
                call = (lambda: full(x)) if name == "argmax-full export" else \
                    (lambda: class_map(logits(x), size, "sparse", layout="NHWC"))
                times[name] += timed(call, runs)[0]
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    ap.add_argument("--images", type=int, default=8, help="held-out val images (default 8)")
    ap.add_argument("--photos", action="store_true", help="also scikit-image's photos (off the demo's domain)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds over all images and methods (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per method, image and round (default 3)")
    ap.add_argument("--dense-runs", type=int, default=2, help="runs of the slow dense reference per image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pipeline", action="store_true", help="also the whole network: argmax-full vs logits + sparse")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    from topformer_deploy import load_checkpoint
    from topformer_deploy.postprocess import class_scores, sparse_class_map

    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    model = load_checkpoint(str(DEMO)).eval()
    images = held_out_images(size, args.images, args.photos)
    with torch.no_grad():
        logits = [model(torch.from_numpy(x)).numpy() for x in images]
    refined = []
    for x in logits:
        stats = {}
        sparse_class_map(class_scores(x), size, stats=stats)
        refined.append(stats["refined"] / stats["blocks"])
    with tempfile.TemporaryDirectory(prefix="postprocess-bench-") as tmp:
        graph = InGraph(post_artifact(size, logits[0], Path(tmp)), args.threads)
        data = measure(logits, size, graph, args.rounds, args.runs, args.dense_runs)
        whole = pipeline(model, size, [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in images], Path(tmp),
                         args.threads, max(1, args.rounds // 2), args.runs) if args.pipeline else None
    exact = data["sparse"]["maps"]
    assert all(np.array_equal(s, d) for s, d in zip(exact, data["dense"]["maps"])), "sparse != dense"
    summary = {}
    for method, d in data.items():
        p50 = lambda key: statistics.median(statistics.median(t) for t in d[key] if t)  # noqa: E731
        agreement = float(np.mean([np.mean(m == e) for m, e in zip(d["maps"], exact)]))
        summary[method] = {"p50_wall_ms": p50("wall"), "p50_cpu_ms": p50("cpu"), "agreement": agreement,
                           "exact": method in ("sparse", "dense", TORCH)}
    ratio_wall = summary[IN_GRAPH]["p50_wall_ms"] / summary["sparse"]["p50_wall_ms"]
    ratio_cpu = summary[IN_GRAPH]["p50_cpu_ms"] / summary["sparse"]["p50_cpu_ms"]
    lines = [f"# post-processing, demo model (11 classes), {size[0]}x{size[1]}, {len(logits)} images "
             f"({args.images} held-out{' + photos' if args.photos else ''}), {args.threads} thread(s)",
             f"machine: {machine_line()}; load average {os.getloadavg()[0]:.2f}",
             f"versions: {versions_line()}, numpy {np.__version__}", "",
             "| method | exact? | agreement with the exact map | p50 wall ms | p50 CPU ms |", "|---|---|---:|---:|---:|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {'yes' if s['exact'] else 'no'} | {100 * s['agreement']:.3f} % | "
                     f"{s['p50_wall_ms']:.2f} | {s['p50_cpu_ms']:.2f} |")
    lines += ["", f"blocks refined by sparse: median {100 * statistics.median(refined):.1f} % "
                  f"(min {100 * min(refined):.1f} %, max {100 * max(refined):.1f} %)",
              f"in-graph argmax-full / sparse: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU (target >= 3)"]
    if whole:
        lines.append("whole network, p50 ms: " + ", ".join(f"{k} {v:.2f}" for k, v in whole.items()))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"size": list(size), "images": len(logits), "methods": summary,
                                               "blocks_refined": refined, "ratio_wall": ratio_wall,
                                               "ratio_cpu": ratio_cpu, "pipeline": whole,
                                               "machine": machine_line(), "versions": versions_line()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
