"""Full-integer int8 export (TFLite and ONNX) calibrated on real images, mixed precision per stage.

This module is the job (:func:`export_int8`, verification, per-stage sensitivity); the routes live in
:mod:`.int8_tflite` and :mod:`.int8_onnx`, what they share in :mod:`.int8_common`.

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

import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.topformer import STAGES
from .int8_common import STAGE_MODULES, QuantizationError, check_keep_float
from .int8_onnx import onnx_int8_io, onnx_io_params, onnx_stage_nodes, quantize_onnx
from .int8_tflite import (aeq_recipe, annotate_tensor_adds, pt2e_calibrate, pt2e_quantizer, quantize_tflite_aeq,
                          quantize_tflite_pt2e, tflite_float_io, tflite_io_quantization)
from .manifest import write_manifest
from .offline import quiet_native_output
from .pipeline import (ExportResult, VerificationError, artifact_name, check_common_arguments,
                       output_directory, verification_inputs)
from .prepare import check_export_size, export_modules, fold_for_export
from .verify import ArtifactRunner, compare, from_artifact_layout, to_artifact_layout

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
    recorded. Conversion and quantization happen in a hidden temp folder; the artifact is verified against
    the float PyTorch model (argmax agreement >= ``min_agreement``) and only then moved into place.
    """
    from . import pipeline

    started = time.perf_counter()
    step = progress or (lambda name: None)
    input_size = (int(input_size[0]), int(input_size[1]))
    keep_float = check_keep_float(keep_float)
    route = _check_int8_arguments(fmt, output, weights, checkpoint, calibration, route)
    check_export_size(*input_size)
    out_dir = output_directory(out_dir)
    _check_calibration_shape(calibration, input_size)

    step("fold")
    module, reference = export_modules(fold_for_export(model), fmt, output, input_size)
    target = out_dir / int8_artifact_name(model.variant, input_size, output, fmt, keep_float)
    work = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=out_dir))
    try:
        fp32, int8 = work / f"fp32.{fmt}", work / f"int8.{fmt}"
        calib_tick = _calibration_progress(step)
        with quiet_native_output():  # converter banners and onnxsim/ORT chatter would corrupt --json
            cache = None
            if fmt == "onnx":
                step("convert")
                from .onnx import convert_onnx

                convert_onnx(module, (torch.from_numpy(calibration[0]),), fp32, [pipeline.INPUT_NAME],
                             [pipeline._output_name(output)])
                step("calibrate")
                cache = work / "calibration.json"
                info = quantize_onnx(fp32, int8, calibration, keep_float=keep_float, calibration_cache=cache,
                                     progress=calib_tick)
                info["io_quantization"] = onnx_int8_io(int8) if int8_io else None
            elif route == "aeq":
                step("convert")
                from .tflite import convert_tflite

                convert_tflite(module, (torch.from_numpy(calibration[0]),), fp32, precision="fp32", nhwc=True)
                step("calibrate")
                info, _ = quantize_tflite_aeq(fp32, int8, calibration, keep_float=keep_float, int8_io=int8_io,
                                              progress=calib_tick)
            else:
                step("calibrate")
                info = quantize_tflite_pt2e(module, int8, calibration, keep_float=keep_float, int8_io=int8_io,
                                            progress=calib_tick)
            if fmt == "tflite":
                info["io_quantization"] = tflite_io_quantization(int8) if int8_io else None
            verification = None
            if verify:
                step("verify")
                verification = verify_int8(int8, reference, verification_inputs(input_size), min_agreement,
                                           info.get("io_quantization"))
                verification["enforced"] = weights == "checkpoint"
                if verification["enforced"] and not verification["passed"]:
                    raise VerificationError(
                        f"int8 verification failed: argmax agreement {verification['argmax_agreement']:.4f} with the "
                        f"float model (needs >= {min_agreement}); no artifact was written")
        step("write")
        manifest = pipeline._manifest(int8, target, model, fmt, "int8", output, input_size, checkpoint, weights,
                                      verification, None)
        manifest["quantization"] = {
            **info, "calibration": {"source": str(calibration_source), "count": len(calibration)},
            "keep_float": list(keep_float), "int8_io": bool(int8_io),
            "calibration_ranges": f"{target.name}.calibration.json" if cache else None}
        _io_manifest(manifest, info.get("io_quantization"))
        if cache is not None:
            os.replace(cache, target.with_name(f"{target.name}.calibration.json"))
        os.replace(int8, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    return ExportResult(target, write_manifest(target, manifest), manifest)


def int8_artifact_name(variant: str, input_size: tuple[int, int], output: str, fmt: str,
                       keep_float: Sequence[str] = ()) -> str:
    """``topformer_tiny_512x512_int8_logits.onnx``; mixed precision adds ``_float-sase`` (stages in float)."""
    name = artifact_name(variant, input_size, "int8", output, fmt)
    if keep_float:
        stem, suffix = name.rsplit(".", 1)
        name = f"{stem}_float-{'-'.join(keep_float)}.{suffix}"
    return name




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
    agreement = figures["argmax_agreement"]
    figures["passed"] = agreement is None or agreement >= min_agreement
    return figures


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)




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
    check_common_arguments(fmt, output, weights, checkpoint)
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


# ---------------------------------------------------------------------------------------------- stages
def stage_calibration_inputs(model: nn.Module, stage: str, calibration: Sequence[np.ndarray]) -> list[tuple]:
    """For each calibration image, the float tensors ``stage`` receives (the stages before it run in float).

    Both calibrations here are MinMax over the *float* activations (observers do not change values), so
    calibrating a stage artifact on these inputs gives exactly the ranges the whole-model calibration
    gave that stage's tensors: tpm -> (image,), sase -> the 4 tokens, sim -> (4 tokens, semantics),
    head -> the 3 SIM maps.
    """
    if stage not in STAGES:
        raise QuantizationError(f"unknown stage {stage!r}: choose from {', '.join(STAGES)}")
    folded = fold_for_export(model)
    inputs = []
    with torch.no_grad():
        for image in calibration:
            x = torch.from_numpy(image)
            tokens = folded.tpm(x)
            semantics = folded.sase(tokens) if stage in ("sim", "head") else None
            if stage == "tpm":
                item = (x,)
            elif stage == "sase":
                item = tuple(tokens)
            elif stage == "sim":
                item = (*tokens, semantics)
            else:
                item = tuple(folded.sim(tokens, semantics))
            inputs.append(tuple(t.numpy() for t in item))
    return inputs


# ---------------------------------------------------------------------------------------------- sensitivity
def stage_quantizer(checkpoint: str | os.PathLike, stage: str, *, fmt: str = "onnx",
                    out_dir: str | os.PathLike = "artifacts/sensitivity", input_size=(512, 512),
                    calibration: Sequence[np.ndarray] | None = None, calibration_source: str = "synthetic",
                    calibration_count: int = 32, progress: Callable[[str], None] | None = None) -> str:
    """The hook :func:`topformer_deploy.evaluate.stage_sensitivity` takes: ``stage_quantizer(checkpoint, stage)``
    exports an int8 artifact with only ``stage`` quantized (the three others kept float) and returns its path.

    Without ``calibration``, ``calibration_count`` images are loaded from ``calibration_source`` (a folder
    or "synthetic"). Bind the options with ``functools.partial`` to change them.
    """
    from ..model import load_checkpoint
    from .calibration import load_calibration_images

    input_size = (int(input_size[0]), int(input_size[1]))
    others = [s for s in STAGES if s != check_keep_float([stage])[0]]
    if calibration is None:
        calibration = load_calibration_images(calibration_source, calibration_count, input_size)
    result = export_int8(load_checkpoint(checkpoint), fmt, out_dir, input_size=input_size, calibration=calibration,
                         calibration_source=calibration_source, keep_float=others, checkpoint=checkpoint,
                         verify=False, progress=progress)
    return str(result.path)


def sensitivity_report(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, fmt: str = "onnx", *,
                       input_size=(512, 512), calibration: Sequence[np.ndarray], out_dir: str | os.PathLike,
                       calibration_source: str = "unknown", stages: Sequence[str] | None = None,
                       progress: Callable[[str], None] | None = None, **eval_kwargs) -> list[dict]:
    """Quantize one stage at a time (TPM, SASE, SIM, head) and report the mIoU drop each causes.

    One row per model (first the float checkpoint, then one per stage) as
    :func:`topformer_deploy.evaluate.evaluate_models` returns them, plus ``stage`` and ``miou_drop_points``.
    The per-stage artifacts are written to ``out_dir`` (named ``..._int8_logits_float-<others>.<fmt>``).
    """
    from ..evaluate import stage_sensitivity

    quantize_stage = functools.partial(stage_quantizer, fmt=fmt, out_dir=out_dir, input_size=input_size,
                                       calibration=calibration, calibration_source=calibration_source,
                                       progress=progress)
    return stage_sensitivity(str(checkpoint), data_dir, quantize_stage, stages=stages,
                             input_size=tuple(input_size), **eval_kwargs)


__all__ = ["INT8_MIN_AGREEMENT", "ROUTES", "STAGE_MODULES", "TFLITE_ROUTE", "QuantizationError", "aeq_recipe",
           "annotate_tensor_adds", "check_keep_float", "dequantize_array", "export_int8", "int8_artifact_name",
           "onnx_int8_io", "onnx_stage_nodes", "pt2e_calibrate", "pt2e_quantizer", "quantize_array",
           "quantize_onnx", "quantize_tflite_aeq", "quantize_tflite_pt2e", "sensitivity_report",
           "stage_calibration_inputs", "stage_quantizer", "tflite_float_io", "tflite_io_quantization", "verify_int8"]
