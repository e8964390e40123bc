"""Compare the two litert-torch int8 routes (PT2E quantizer vs ai-edge-quantizer) side by side.

For one model and input size it converts: TFLite fp32, TFLite int8 via ai-edge-quantizer (static int8
recipe on the fp32 .tflite), TFLite int8 via the PT2E quantizer (``litert_torch.convert`` with a
``QuantConfig``), and ONNX int8 (onnxruntime ``quantize_static``) for reference - all calibrated on the
same images - then prints one table: argmax agreement with the float PyTorch model, mIoU on labelled
held-out images (meaningful for a trained checkpoint), op counts, size, and the in-process median latency
at 1 thread (runs interleaved), with the ratio to TFLite fp32.

    python benchmarks/int8_routes.py [--checkpoint models/topformer_tiny_demo.pth] [--size 512]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from topformer_deploy.artifact import dequantize_array, quantize_array  # noqa: E402
from topformer_deploy.data import NUM_CLASSES, generate_sample  # noqa: E402
from topformer_deploy.eval.metrics import confusion_matrix, scores  # noqa: E402
from topformer_deploy.export import convert_onnx, convert_tflite, tflite_op_histogram  # noqa: E402
from topformer_deploy.export.calibration import load_calibration_images  # noqa: E402
from topformer_deploy.export.int8_onnx import quantize_onnx  # noqa: E402
from topformer_deploy.export.int8_tflite import (  # noqa: E402
    quantize_tflite_aeq, quantize_tflite_pt2e, tflite_io_quantization)
from topformer_deploy.export.prepare import export_modules, fold_for_export  # noqa: E402
from topformer_deploy.images import preprocess  # noqa: E402
from topformer_deploy.model import random_live_model  # noqa: E402
from topformer_deploy.export.verify import ArtifactRunner  # noqa: E402
from topformer_deploy.model import load_checkpoint  # noqa: E402

DEMO = REPO / "models" / "topformer_tiny_demo.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEMO if DEMO.is_file() else None,
                        help="default: the demo model if trained, else random-but-live Tiny weights (11 classes)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calib-count", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (the demo model's is 0)")
    args = parser.parse_args()
    size = (args.size, args.size)
    model = load_checkpoint(args.checkpoint) if args.checkpoint else random_live_model("tiny", NUM_CLASSES)
    weights = args.checkpoint.name if args.checkpoint else "none (random live weights)"
    print(f"checkpoint {weights}, {args.size}x{args.size}, calibration {args.calib_count} synthetic "
          f"train images, evaluation {args.eval_images} held-out (val) images, {args.runs} timed runs at 1 thread")
    calibration = load_calibration_images("synthetic", args.calib_count, size, seed=args.seed)
    samples = [generate_sample(args.seed, "val", i, size) for i in range(args.eval_images)]

    folded = fold_for_export(model)
    tfl_module, reference = export_modules(folded, "tflite", "logits", size)
    onnx_module, _ = export_modules(folded, "onnx", "logits", size)
    example = (torch.from_numpy(calibration[0]),)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="int8-routes-") as tmp:
        tmp = Path(tmp)
        rows["tflite fp32"] = _timed(lambda p: convert_tflite(tfl_module, example, p), tmp / "fp32.tflite")
        rows["tflite int8 aeq"] = _timed(lambda p: quantize_tflite_aeq(tmp / "fp32.tflite", p, calibration),
                                         tmp / "aeq.tflite")
        rows["tflite int8 pt2e"] = _timed(lambda p: quantize_tflite_pt2e(tfl_module, p, calibration),
                                          tmp / "pt2e.tflite")
        rows["onnx fp32"] = _timed(lambda p: convert_onnx(onnx_module, example, p, ["image"], ["logits"]),
                                   tmp / "fp32.onnx")
        rows["onnx int8"] = _timed(lambda p: quantize_onnx(tmp / "fp32.onnx", p, calibration), tmp / "int8.onnx")
        _accuracy(rows, reference, samples, size, model.num_classes)
        _latency(rows, calibration[0], args.runs)
        _print(rows)


def _timed(make, path: Path) -> dict:
    start = time.perf_counter()
    make(path)
    return {"path": path, "convert_s": time.perf_counter() - start, "size_mb": path.stat().st_size / 1e6}


class _Runner:
    """Float NCHW in, float NCHW logits out, whatever the artifact's layout and boundary dtype."""

    def __init__(self, path: Path):
        self.runner = ArtifactRunner(path, threads=1)
        self.nhwc = path.suffix == ".tflite"
        self.io = tflite_io_quantization(path) if self.runner.inputs()[0]["dtype"] == "int8" else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.nhwc else x
        if self.io and self.io["input"]:
            x = quantize_array(x, **self.io["input"])
        y = self.runner.run([x])[0]
        if self.io and self.io["output"] and y.dtype == np.int8:
            y = dequantize_array(y, **self.io["output"])
        return y.transpose(0, 3, 1, 2) if self.nhwc else y


def _accuracy(rows, reference, samples, size, num_classes) -> None:
    runners = {name: _Runner(row["path"]) for name, row in rows.items()}
    confusions = {name: np.zeros((num_classes, num_classes), np.int64) for name in ["pytorch fp32", *rows]}
    agree = {name: [0, 0] for name in rows}
    errors = {name: [0.0, 0.0] for name in rows}
    for rgb, label in samples:
        x = preprocess(rgb, size)
        with torch.no_grad():
            ref = reference(torch.from_numpy(x)).numpy()
        confusions["pytorch fp32"] += confusion_matrix(_classes(ref, label.shape), label, num_classes)
        for name, run in runners.items():
            y = run(x)
            agree[name][0] += int((y.argmax(1) == ref.argmax(1)).sum())
            agree[name][1] += ref[:, 0].size
            errors[name][0] += float(((y - ref) ** 2).sum())
            errors[name][1] += float((ref ** 2).sum())
            confusions[name] += confusion_matrix(_classes(y, label.shape), label, num_classes)
    rows["pytorch fp32"] = {"miou": scores(confusions["pytorch fp32"])["miou"], "agreement": 1.0, "rel_l2": 0.0}
    for name in runners:
        rows[name]["agreement"] = agree[name][0] / agree[name][1]
        rows[name]["miou"] = scores(confusions[name])["miou"]
        rows[name]["rel_l2"] = (errors[name][0] / errors[name][1]) ** 0.5
        if name.startswith("tflite"):
            hist = tflite_op_histogram(rows[name]["path"])
            rows[name]["ops"] = (f"Q {hist.get('QUANTIZE', 0)} DQ {hist.get('DEQUANTIZE', 0)} "
                                 f"int8-in {runners[name].io is not None}")


def _classes(logits: np.ndarray, label_size) -> np.ndarray:
    t = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)),
                                        size=label_size, mode="bilinear", align_corners=False)
    return t[0].argmax(0).numpy()


def _latency(rows, x, runs) -> None:
    runners = {name: _Runner(row["path"]) for name, row in rows.items() if "path" in row}
    times = {name: [] for name in runners}
    for name, run in runners.items():  # warm-up
        for _ in range(3):
            run(x)
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(1000 * (time.perf_counter() - start))
    for name, values in times.items():
        rows[name]["p50_ms"] = statistics.median(values)


def _print(rows) -> None:
    base = rows["tflite fp32"]["p50_ms"]
    rows = {"pytorch fp32": rows.pop("pytorch fp32"), **rows}
    print(f"\n{'artifact':18} {'agree':>7} {'rel L2':>7} {'mIoU':>7} {'p50 ms':>8} {'x fp32':>7} {'MB':>6} "
          f"{'conv s':>7}  ops")
    for name, row in rows.items():
        p50 = row.get("p50_ms")
        print(f"{name:18} {row['agreement']:7.4f} {row['rel_l2']:7.4f} {100 * row['miou']:7.2f} "
              f"{p50 if p50 is not None else float('nan'):8.2f} "
              f"{(p50 / base) if p50 is not None else float('nan'):7.2f} {row.get('size_mb', float('nan')):6.2f} "
              f"{row.get('convert_s', float('nan')):7.1f}  {row.get('ops', '')}")


if __name__ == "__main__":
    main()
