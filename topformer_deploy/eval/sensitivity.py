"""Which stage int8 hurts: quantize one stage at a time (the others kept float) and score each artifact."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..model.stages import STAGES
from .evaluate import evaluate_models

#: ``quantize_stage(checkpoint, stage) -> artifact path``: an int8 artifact with only ``stage`` quantized.
StageQuantizer = Callable[[str, str], str]


def stage_sensitivity(checkpoint: str, data_dir: str | os.PathLike, quantize_stage: StageQuantizer,
                      stages: Sequence[str] | None = None, **kwargs) -> list[dict]:
    """mIoU drop caused by quantizing one stage at a time (TPM, SASE, SIM, head), in mIoU points.

    One row per model (first the float checkpoint, then one per stage) as :func:`.evaluate_models` returns
    them, plus ``stage`` and ``miou_drop_points``.
    """
    stages = list(stages or STAGES)
    artifacts = [quantize_stage(checkpoint, stage) for stage in stages]
    rows = evaluate_models([checkpoint, *artifacts], data_dir, reference=checkpoint, **kwargs)
    base = rows[0]["miou"]
    for stage, row in zip(stages, rows[1:]):
        row["stage"] = stage
        row["miou_drop_points"] = 100.0 * (base - row["miou"])
    rows[0]["stage"] = "none (float)"
    rows[0]["miou_drop_points"] = 0.0
    return rows


def stage_quantizer(checkpoint: str | os.PathLike, stage: str, *, fmt: str = "onnx",
                    out_dir: str | os.PathLike = "artifacts/sensitivity", input_size=(512, 512),
                    calibration: Sequence[np.ndarray] | None = None, calibration_source: str = "synthetic",
                    calibration_count: int = 32, progress: Callable[[str], None] | None = None) -> str:
    """A :data:`StageQuantizer`: exports an int8 artifact of ``checkpoint`` with only ``stage`` quantized.

    Without ``calibration``, ``calibration_count`` images are loaded from ``calibration_source`` (a folder
    or "synthetic"). Bind the options with ``functools.partial`` to change them.
    """
    from ..export.calibration import load_calibration_images
    from ..export.int8_common import check_keep_float
    from ..export.quantize import export_int8
    from ..model import load_checkpoint

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
    """:func:`stage_sensitivity` with :func:`stage_quantizer`: the per-stage int8 artifacts go to ``out_dir``
    (named ``..._int8_logits_float-<others>.<fmt>``)."""
    quantize_stage = functools.partial(stage_quantizer, fmt=fmt, out_dir=out_dir, input_size=input_size,
                                       calibration=calibration, calibration_source=calibration_source,
                                       progress=progress)
    return stage_sensitivity(str(checkpoint), data_dir, quantize_stage, stages=stages,
                             input_size=tuple(input_size), **eval_kwargs)
