"""Full-integer int8 export (TFLite and ONNX) calibrated on real images, mixed precision per stage.

This module is the int8 route of the export job (:func:`export_int8` and its verification); the quantizers
live in :mod:`.int8_tflite` and :mod:`.int8_onnx`, what they share in :mod:`.int8_common`.

* TFLite: ``ROUTES`` holds the two litert-torch routes measured by ``benchmarks/int8_routes.py``:
  ``"pt2e"`` (PT2E quantizer on the exported PyTorch graph, then ``litert_torch.convert`` with its
  ``QuantConfig``) and ``"aeq"`` (ai-edge-quantizer's static int8 recipe applied to the fp32 ``.tflite``,
  calibrated by running it). :data:`TFLITE_ROUTE` (``"pt2e"``) is the one export uses. Measured on the
  trained demo model (Tiny, 256x256, 30 held-out images, 32 calibration images): PT2E mIoU 84.22 vs float
  83.99, argmax agreement 0.994, relative L2 error 0.034; ai-edge-quantizer 81.46 (-2.5 points), 0.966,
  0.185 - it also quantizes the attention's matmuls/softmax, which PT2E leaves float - and PT2E ran
  faster (1.24x vs 1.34x the fp32 median at 1 thread on the x86 dev host).
* ONNX: onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, int8 activations, MinMax) on the
  fp32 ONNX, with a ``CalibrationDataReader``. The calibration ranges are kept beside the artifact
  (``<artifact>.calibration.json``, onnxruntime's calibration cache) so stage artifacts can reuse them.

Both keep float input/output by default; ``int8_io=True`` makes the graph boundary int8 (the manifest
records the scale and zero point). ``keep_float`` names stages (tpm, sase, sim, head) left in float.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifact import artifact_name, dequantize_array, quantize_array
from .int8_common import QuantizationError, check_keep_float
from .int8_onnx import onnx_int8_io, onnx_io_params, quantize_onnx
from .int8_tflite import quantize_tflite_aeq, quantize_tflite_pt2e, tflite_io_quantization
from .job import (ExportResult, VerificationError, check_arguments, checked_modules, convert, describe_full_model,
                  run_export_job, verification_inputs)
from .prepare import check_export_size
from .verify import (ArtifactRunner, compare, failure_message, from_artifact_layout, nonfinite, passes,
                     to_artifact_layout)

ROUTES = ("pt2e", "aeq")
#: Chosen by benchmarks/int8_routes.py (measured reason in the module docstring).
TFLITE_ROUTE = "pt2e"
#: Verification of an int8 artifact against the float PyTorch model: fraction of 1/8-scale pixels whose
#: argmax agrees. The trained demo model keeps 0.994 (TFLite PT2E and ONNX); a broken quantization (int8
#: softmax on random weights, wrong ranges or layout) drops far below (0.11 measured). Enforced only for
#: checkpoint weights: random weights give near-tied logits everywhere (0.67 measured at 512x512), so
#: their figures are recorded with ``"enforced": false``.
INT8_MIN_AGREEMENT = 0.90


# ---------------------------------------------------------------------------------------------- export
def export_int8(model: nn.Module, fmt: str, out_dir: str | os.PathLike, *, input_size=(512, 512),
                calibration: Sequence[np.ndarray], calibration_source: str = "unknown", output: str = "logits",
                keep_float: Sequence[str] = (), int8_io: bool = False, verify: bool = True,
                checkpoint: str | os.PathLike | None = None, weights: str = "checkpoint", route: str | None = None,
                min_agreement: float = INT8_MIN_AGREEMENT,
                progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the (unfolded) TopFormer ``model`` as a full-integer int8 ``fmt`` artifact in ``out_dir``.

    ``calibration`` are preprocessed NCHW batches (see :mod:`.calibration`); ``calibration_source`` is
    recorded. The artifact is made in the export job's staging folder, verified against the float PyTorch
    model (argmax agreement >= ``min_agreement``) and only then published.
    """
    started = time.perf_counter()
    step = progress or (lambda name: None)
    input_size = (int(input_size[0]), int(input_size[1]))
    keep_float = check_keep_float(keep_float)
    route = _check_int8_arguments(fmt, output, weights, checkpoint, calibration, route)
    check_export_size(*input_size)
    _check_calibration_shape(calibration, input_size)

    step("fold")
    module, reference = checked_modules(model, fmt, output, input_size, checkpoint)
    target = Path(out_dir) / artifact_name(model.variant, input_size, "int8", output, fmt, keep_float)
    calib_tick = _calibration_progress(step)
    example = (torch.from_numpy(calibration[0]),)

    def make(staged: Path, work: Path) -> dict:
        fp32 = work / f"fp32.{fmt}"
        if fmt == "onnx":
            convert(module, example, fp32, "onnx", "fp32", output)
            step("calibrate")
            info = quantize_onnx(fp32, staged, calibration, keep_float=keep_float,
                                 calibration_cache=work / "calibration.json", progress=calib_tick)
            info["io_quantization"] = onnx_int8_io(staged) if int8_io else None
            return info
        if route == "aeq":
            convert(module, example, fp32, "tflite", "fp32", output)
            step("calibrate")
            info, _ = quantize_tflite_aeq(fp32, staged, calibration, keep_float=keep_float, int8_io=int8_io,
                                          progress=calib_tick)
        else:
            step("calibrate")
            info = quantize_tflite_pt2e(module, staged, calibration, keep_float=keep_float, int8_io=int8_io,
                                        progress=calib_tick)
        info["io_quantization"] = tflite_io_quantization(staged) if int8_io else None
        return info

    def check(staged: Path, info: dict) -> dict:
        figures = verify_int8(staged, reference, verification_inputs(input_size), min_agreement,
                              info.get("io_quantization"))
        figures["enforced"] = weights == "checkpoint" or nonfinite(figures)
        if figures["enforced"] and not figures["passed"]:
            raise VerificationError(failure_message(figures, "int8"))
        return figures

    def describe(staged: Path, info: dict, verification: dict | None) -> dict:
        manifest = describe_full_model(staged, model, fmt, "int8", output, input_size, checkpoint, weights,
                                       verification)
        manifest["quantization"] = {
            **info, "calibration": {"source": str(calibration_source), "count": len(calibration)},
            "keep_float": list(keep_float), "int8_io": bool(int8_io),
            "calibration_ranges": f"{target.name}.calibration.json" if fmt == "onnx" else None}
        _io_manifest(manifest, info.get("io_quantization"))
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        return manifest

    return run_export_job(target, make, describe, verify=check if verify else None, progress=step,
                          side_files={".calibration.json": "calibration.json"} if fmt == "onnx" else None)


def verify_int8(path: str | os.PathLike, reference: nn.Module, inputs_nchw: Sequence[np.ndarray],
                min_agreement: float = INT8_MIN_AGREEMENT, io_quantization: dict | None = None) -> dict:
    """Error figures of an int8 artifact against the float module; ``passed`` = agreement >= ``min_agreement``.

    ``io_quantization`` (int8 boundary) is read from the artifact when not given.
    """
    runner = ArtifactRunner(path)
    nhwc = runner.format == "tflite"
    io = io_quantization
    if io is None and runner.inputs()[0]["dtype"] == "int8":
        io = tflite_io_quantization(path) if nhwc else onnx_io_params(path)
    references, actuals = [], []
    with torch.no_grad():
        for x in inputs_nchw:
            references.append(reference(torch.from_numpy(x)).numpy())
            feed = to_artifact_layout(x, nhwc)
            if io is not None and io.get("input"):
                feed = quantize_array(feed, **io["input"])
            out = runner.run([feed])[0]
            if io is not None and io.get("output") and out.dtype == np.int8 and references[-1].dtype.kind == "f":
                out = dequantize_array(out, **io["output"])
            actuals.append(from_artifact_layout(out, nhwc))
    figures = compare(references, actuals)
    figures["thresholds"] = {"argmax_agreement": min_agreement}
    figures["passed"] = passes(figures, figures["thresholds"])
    return figures


def _io_manifest(manifest: dict, io: dict | None) -> None:
    """Record the scale/zero point of int8 boundary tensors (dtypes come from the artifact itself)."""
    if not io:
        return
    if io.get("input"):
        manifest["input"]["quantization"] = io["input"]
        if manifest.get("inputs"):
            manifest["inputs"][0]["quantization"] = io["input"]
    if io.get("output"):
        manifest["output"]["quantization"] = io["output"]


def _calibration_progress(step: Callable[[str], None]) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        step(f"calibrate {done}/{total}")

    return tick


def _check_int8_arguments(fmt, output, weights, checkpoint, calibration, route) -> str:
    check_arguments(fmt, "int8", output, weights, checkpoint)
    if not calibration:
        raise QuantizationError("int8 export needs calibration images (none given)")
    route = route or TFLITE_ROUTE
    if route not in ROUTES:
        raise QuantizationError(f"unknown int8 TFLite route {route!r}: choose {', '.join(ROUTES)}")
    return route


def _check_calibration_shape(calibration: Sequence[np.ndarray], input_size: tuple[int, int]) -> None:
    expected = (1, 3, *input_size)
    bad = [tuple(x.shape) for x in calibration if tuple(x.shape) != expected]
    if bad:
        raise QuantizationError(f"calibration batches must be NCHW {expected} (preprocessed at the export size), "
                                f"got {bad[0]}")
