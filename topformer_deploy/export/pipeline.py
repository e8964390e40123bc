"""``export_model``: a TopFormer to a verified artifact with its manifest, fp32 / fp16 here, int8 through
:func:`.quantize.export_int8`; both run the same job (:func:`.job.run_export_job`)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifact import artifact_name
from ..errors import TopformerDeployError
from .job import (ExportResult, VerificationError, check_arguments, checked_modules, convert, describe_full_model,
                  run_export_job, verification_inputs)
from .prepare import check_export_size


def export_model(model: nn.Module, fmt: str, out_dir: str | os.PathLike, *, input_size=(512, 512),
                 precision: str = "fp32", output: str = "logits", opset: int | None = None, verify: bool = True,
                 checkpoint: str | os.PathLike | None = None, weights: str = "checkpoint",
                 calibration: Sequence[np.ndarray] | None = None, progress: Callable[[str], None] | None = None,
                 **int8_options) -> ExportResult:
    """Export the (unfolded) TopFormer ``model`` to ``fmt`` in ``out_dir`` and describe it in a manifest.

    The artifact is converted in a hidden staging folder, verified against the folded PyTorch model (unless
    ``verify=False``) and only then published as ``topformer_<variant>_<H>x<W>_<precision>_<output>.<fmt>``.
    ``precision="int8"`` needs ``calibration`` (see :func:`.quantize.export_int8` for its options).
    Raises TopformerDeployError for bad arguments and VerificationError when the figures miss the thresholds.
    """
    if precision == "int8":
        from .quantize import export_int8

        return export_int8(model, fmt, out_dir, input_size=input_size, calibration=calibration, output=output,
                           verify=verify, checkpoint=checkpoint, weights=weights, progress=progress,
                           **int8_options)
    if int8_options or calibration is not None:
        raise TopformerDeployError("calibration and int8 options apply to precision int8 only")
    started = time.perf_counter()
    step = progress or (lambda name: None)
    input_size = (int(input_size[0]), int(input_size[1]))
    check_arguments(fmt, precision, output, weights, checkpoint)
    check_export_size(*input_size)
    step("fold")
    module, reference = checked_modules(model, fmt, output, input_size, checkpoint)
    example = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
    target = Path(out_dir) / artifact_name(model.variant, input_size, precision, output, fmt)

    def make(staged: Path, work: Path) -> None:
        convert(module, (example,), staged, fmt, precision, output, opset)

    def check(staged: Path, info: dict) -> dict:
        from .verify import failure_message, nonfinite, verify_artifact

        figures = verify_artifact(staged, reference, verification_inputs(input_size), precision)
        # Random weights give near-tied class logits, so fp16's argmax agreement measures the weights,
        # not the converter: recorded, not enforced (as for int8). fp32, and finite outputs, always are.
        figures["enforced"] = precision == "fp32" or weights == "checkpoint" or nonfinite(figures)
        if figures["enforced"] and not figures["passed"]:
            raise VerificationError(failure_message(figures, precision))
        return figures

    def describe(staged: Path, info: dict, verification: dict | None) -> dict:
        manifest = describe_full_model(staged, model, fmt, precision, output, input_size, checkpoint, weights,
                                       verification)
        manifest["opset"] = (opset or _default_opset()) if fmt == "onnx" else None
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        return manifest

    return run_export_job(target, make, describe, verify=check if verify else None, progress=step)


def _default_opset() -> int:
    from .onnx import DEFAULT_OPSET

    return DEFAULT_OPSET
