"""``export_model``: fold, convert, verify on a temp file, move into place, write the manifest."""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TopformerDeployError
from . import images
from ..files import make_readable
from .manifest import library_versions, now_iso, sha256_file, write_manifest
from .offline import quiet_native_output
from .prepare import OUTPUTS, check_export_size, export_modules, fold_for_export
from .verify import ArtifactRunner, verify_artifact

FORMATS = ("onnx", "tflite")
PRECISIONS = {"onnx": ("fp32", "fp16"), "tflite": ("fp32", "fp16")}
INPUT_NAME = "image"


class VerificationError(TopformerDeployError):
    """The converted artifact does not match PyTorch closely enough; nothing was written."""

    exit_code = 4


@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict


def artifact_name(variant: str, input_size: tuple[int, int], precision: str, output: str, fmt: str) -> str:
    """``topformer_tiny_512x512_fp32_logits.tflite``."""
    height, width = input_size
    return f"topformer_{variant}_{height}x{width}_{precision}_{output}.{fmt}"


def verification_inputs(input_size: tuple[int, int], random_count: int = 2, photo_count: int = 3) -> list[np.ndarray]:
    """Seeded random batches plus scikit-image's bundled photos, all NCHW and normalised."""
    return images.random_inputs((1, 3, *input_size), random_count) + images.sample_photos(input_size, photo_count)


def export_model(model: nn.Module, fmt: str, out_dir: str | os.PathLike, *, input_size=(512, 512),
                 precision: str = "fp32", output: str = "logits", opset: int | None = None, verify: bool = True,
                 checkpoint: str | os.PathLike | None = None, weights: str = "checkpoint",
                 progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the (unfolded) TopFormer ``model`` to ``fmt`` in ``out_dir`` and describe it in a manifest.

    The artifact is converted to a hidden temp file, verified against the folded PyTorch model (unless
    ``verify=False``) and only then moved to ``topformer_<variant>_<H>x<W>_<precision>_<output>.<fmt>``.
    Raises TopformerDeployError for bad arguments and VerificationError when the figures miss the thresholds.
    """
    started = time.perf_counter()
    step = progress or (lambda name: None)
    input_size = (int(input_size[0]), int(input_size[1]))
    _check_arguments(fmt, precision, output, weights, checkpoint)
    check_export_size(*input_size)
    out_dir = output_directory(out_dir)

    step("fold")
    folded = fold_for_export(model)
    module, reference = export_modules(folded, fmt, output, input_size)
    example = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
    target = out_dir / artifact_name(model.variant, input_size, precision, output, fmt)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial.{fmt}", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        step("convert")
        with quiet_native_output():
            _convert(module, example, tmp, fmt, precision, output, opset)
        verification = None
        if verify:
            step("verify")
            with quiet_native_output():
                verification = verify_artifact(tmp, reference, verification_inputs(input_size), precision)
            # Random weights give near-tied class logits, so fp16's argmax agreement measures the weights,
            # not the converter: recorded, not enforced (as for int8). fp32 is always enforced.
            verification["enforced"] = precision == "fp32" or weights == "checkpoint"
            if verification["enforced"] and not verification["passed"]:
                raise VerificationError(_failure_message(verification, precision))
        step("write")
        with quiet_native_output():
            manifest = _manifest(tmp, target, model, fmt, precision, output, input_size, checkpoint, weights,
                                 verification, opset)
        make_readable(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    return ExportResult(target, write_manifest(target, manifest), manifest)


def _convert(module, example, tmp: Path, fmt: str, precision: str, output: str, opset) -> None:
    """Run the converter; its failures become one-line TopformerDeployErrors."""
    try:
        if fmt == "onnx":
            from .onnx import convert_onnx

            convert_onnx(module, (example,), tmp, [INPUT_NAME], [_output_name(output)], opset=opset,
                         precision=precision)
        else:
            from .tflite import convert_tflite

            convert_tflite(module, (example,), tmp, precision=precision, nhwc=True)
    except TopformerDeployError:
        raise
    except Exception as exc:  # converters raise anything; report it in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TopformerDeployError(f"{fmt} conversion failed: {type(exc).__name__}: {first[:300]}") from exc


def _check_arguments(fmt, precision, output, weights, checkpoint) -> None:
    check_common_arguments(fmt, output, weights, checkpoint)
    if precision not in PRECISIONS[fmt]:
        raise TopformerDeployError(f"{fmt} export supports precision {', '.join(PRECISIONS[fmt])}, not {precision}")


def output_directory(out_dir) -> Path:
    """``out_dir`` as a Path, created if needed; a clear error when it cannot be."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TopformerDeployError(f"cannot create output directory {out_dir}: {exc.strerror}") from exc
    return out_dir


def check_common_arguments(fmt, output, weights, checkpoint) -> None:
    """The checks every export route shares: format, output kind, and where the weights come from."""
    if fmt not in FORMATS:
        raise TopformerDeployError(f"unknown format {fmt!r}: choose onnx or tflite")
    if output not in OUTPUTS:
        raise TopformerDeployError(f"unknown output {output!r}: choose {', '.join(OUTPUTS)}")
    if weights not in ("checkpoint", "random"):
        raise TopformerDeployError(f"weights must be 'checkpoint' or 'random', got {weights!r}")
    if weights == "checkpoint" and checkpoint is None:
        raise TopformerDeployError("weights='checkpoint' needs the checkpoint path (or pass weights='random')")


def _output_name(output: str) -> str:
    return "logits" if output == "logits" else "classes"


def _failure_message(figures: dict, precision: str) -> str:
    parts = [f"{key} {figures[key]:.3g}" for key in ("max_abs_error", "rel_l2_error", "argmax_agreement")
             if figures.get(key) is not None]
    limits = ", ".join(f"{k} {'<=' if k == 'rel_l2_error' else '>='} {v}"
                       for k, v in figures["thresholds"].items() if v is not None)
    return (f"verification failed ({precision}): {', '.join(parts)} (needs {limits}); "
            "no artifact was written")


def _manifest(tmp: Path, target: Path, model, fmt, precision, output, input_size, checkpoint, weights,
              verification, opset) -> dict:
    runner = ArtifactRunner(tmp)
    inputs, outputs = runner.inputs(), runner.outputs()
    layout = "NHWC" if fmt == "tflite" else "NCHW"
    for entry in inputs:
        entry["layout"] = layout if len(entry["shape"]) == 4 else None
    first_out = outputs[0]
    if fmt == "tflite":
        from .tflite import tflite_op_histogram

        histogram = tflite_op_histogram(tmp)
        names = {"transpose_count": "TRANSPOSE", "reshape_count": "RESHAPE", "pad_count": "PAD"}
    else:
        from .onnx import onnx_op_histogram

        histogram = onnx_op_histogram(tmp)
        names = {"transpose_count": "Transpose", "reshape_count": "Reshape", "pad_count": "Pad"}
    out_layout = (layout if len(first_out["shape"]) == 4 else "NHW")
    return {
        "artifact": target.name, "format": fmt, "precision": precision,
        "variant": model.variant, "num_classes": model.num_classes, "stage": "full",
        "input": {**inputs[0], "layout": layout, "color_order": images.COLOR_ORDER,
                  "value_range": list(images.VALUE_RANGE), "mean": list(images.MEAN), "std": list(images.STD)},
        "inputs": inputs,
        "output": {**first_out, "layout": out_layout, "semantics": output,
                   "scale": "1/1" if output == "argmax-full" else "1/8"},
        "input_size": list(input_size),
        "opset": (opset or _default_opset()) if fmt == "onnx" else None,
        "checkpoint": ({"path": str(checkpoint), "sha256": sha256_file(checkpoint)}
                       if weights == "checkpoint" else "random"),
        "weights": weights,
        "sha256": sha256_file(tmp), "size_bytes": tmp.stat().st_size,
        "versions": library_versions(),
        "verification": verification,
        "op_histogram": histogram,
        **{key: histogram.get(op, 0) for key, op in names.items()},
        "export_seconds": None,
        "created": now_iso(),
    }


def _default_opset() -> int:
    from .onnx import DEFAULT_OPSET

    return DEFAULT_OPSET
