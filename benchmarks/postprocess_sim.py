#!/usr/bin/env python3
"""Post-processing on simulated Arm cores: instructions per call of each method against the in-graph argmax-full.

On the trained demo model (models/topformer_tiny_demo.pth, 11 classes) at --size for --images held-out images:

- the logits artifact (TFLite) runs on each simulated core (``--device sim:CORE``) with every numpy method after
  it (``bench --post``: the single-file runner computes the class map on the core itself, marks around each call);
- the breakdown's post artifact (x8 RESIZE_BILINEAR + ARG_MAX in the graph, what ``--output argmax-full`` adds to
  a network) runs on the same image's logits.

Counts are exact work on that core's XNNPACK kernels and numpy build (repeat to ~1% for numpy, whose
allocations vary a little); they are not a latency (docs/simulated-cores.md). Writes the table to --out.

    python benchmarks/postprocess_sim.py [--size 512] [--images 3] [--cores cortex-a72,cortex-a76]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from postprocess import DEMO, held_out_images, post_artifact  # benchmarks/ is this script's directory
from runtimes import machine_line

REPO = Path(__file__).resolve().parents[1]
METHODS = ("sparse", "dense", "nearest", "bilinear-half", "bilinear-quarter")
IN_GRAPH = "in-graph argmax-full"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    ap.add_argument("--images", type=int, default=3, help="held-out val images (default 3)")
    ap.add_argument("--cores", default="cortex-a72,cortex-a76", help="simulated cores (default cortex-a72,cortex-a76)")
    ap.add_argument("--work", type=Path, default=REPO / "artifacts" / "postprocess_sim")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "POSTPROCESS_SIM.md")
    return ap.parse_args(argv)


def prepare(size: tuple[int, int], count: int, work: Path, say) -> tuple[Path, Path, list[tuple[Path, Path]]]:
    """The logits artifact, the in-graph post artifact and per image (image .npy, its logits .npy), NHWC."""
    import torch

    from topformer_deploy import load_checkpoint
    from topformer_deploy.export import export_model

    work.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(str(DEMO)).eval()
    images = held_out_images(size, count, photos=False)
    with torch.no_grad():
        logits = [model(torch.from_numpy(x)).numpy() for x in images]
    say(f"exporting the demo model at {size[0]}x{size[1]} (logits) and the in-graph post stage")
    network = export_model(model, "tflite", work / "logits", input_size=size, checkpoint=str(DEMO), verify=False).path
    post = post_artifact(size, logits[0], work)
    inputs = []
    for i, (image, out) in enumerate(zip(images, logits)):
        pair = (work / f"image{i}.npy", work / f"logits{i}.npy")
        np.save(pair[0], np.ascontiguousarray(image.transpose(0, 2, 3, 1)))   # TFLite artifacts take NHWC
        np.save(pair[1], np.ascontiguousarray(out.transpose(0, 2, 3, 1)))
        inputs.append(pair)
    return Path(network), Path(post), inputs


def count(core: str, network: Path, post: Path, inputs, say) -> dict:
    """{method: [instructions per image]}, IN_GRAPH included, and "network" and "refined" per image."""
    from topformer_deploy.bench.devices import open_transport
    from topformer_deploy.bench.harness import BenchOptions, run_bench

    found = {m: [] for m in (IN_GRAPH, "network", "refined", *METHODS)}
    with open_transport(f"sim:{core}", progress=say) as transport:
        for i, (image, logits) in enumerate(inputs):
            say(f"{core}: image {i + 1}/{len(inputs)}: network + {len(METHODS)} numpy methods")
            doc = run_bench(network, transport, BenchOptions(warmup=1, runs=1, input_file=str(image), post=METHODS),
                            progress=say)
            found["network"].append(doc["instructions"]["total"])
            for method in METHODS:
                found[method].append(doc["post"]["methods"][method]["instructions_median"])
            found["refined"].append(doc["post"]["methods"]["sparse"]["blocks_refined"])
            say(f"{core}: image {i + 1}/{len(inputs)}: in-graph post")
            graph = run_bench(post, transport, BenchOptions(warmup=1, runs=1, input_file=str(logits)), progress=say)
            found[IN_GRAPH].append(graph["instructions"]["total"])
    return found


def table(size, counts: dict[str, dict], images: int) -> str:
    cores = list(counts)
    lines = [f"# Post-processing on simulated Arm cores: demo model (11 classes), {size[0]}x{size[1]}, {images} "
             "held-out images", "",
             f"`python benchmarks/postprocess_sim.py --size {size[0]} --images {images} --cores {','.join(cores)}`; "
             f"host: {machine_line()}. M instructions per call, median over the images (per image in brackets); "
             "the in-graph row is the breakdown's post artifact (RESIZE_BILINEAR + ARG_MAX, XNNPACK) on the same "
             "logits, the numpy rows run in the device runner after the network, output fetch included.", "",
             "| method | exact? | " + " | ".join(f"{c} M instructions" for c in cores) + " | "
             + " | ".join(f"{c} vs in-graph" for c in cores) + " |",
             "|---|---|" + "---:|" * (2 * len(cores))]
    for method in (IN_GRAPH, *METHODS, "network"):
        cells, ratios = [], []
        for core in cores:
            values = counts[core][method]
            cells.append(f"{statistics.median(values) / 1e6:.2f} ({', '.join(f'{v / 1e6:.2f}' for v in values)})")
            ratios.append(f"{statistics.median(values) / statistics.median(counts[core][IN_GRAPH]):.3f}x")
        exact = {"sparse": "yes", "dense": "yes", "network": "-"}.get(method, "no")
        name = "the network itself (logits)" if method == "network" else method
        lines.append(f"| {name} | {exact} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    refined = counts[cores[0]]["refined"]
    lines += ["", f"sparse refined {', '.join(f'{100 * r:.1f} %' for r in refined)} of the blocks; "
              + "; ".join(f"{c}: in-graph argmax-full / sparse = "
                          f"{statistics.median(counts[c][IN_GRAPH]) / statistics.median(counts[c]['sparse']):.2f}x"
                          for c in cores)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    say = lambda message: print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)  # noqa
    size = (args.size, args.size)
    network, post, inputs = prepare(size, args.images, args.work, say)
    counts = {core: count(core, network, post, inputs, say) for core in args.cores.split(",")}
    text = table(size, counts, args.images)
    print(text)
    args.out.write_text(text)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
