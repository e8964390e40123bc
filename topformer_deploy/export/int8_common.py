"""What the int8 routes share: stage names and their module paths, argument checks, the error type."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import TopformerDeployError
from ..model.topformer import STAGES

#: Module paths (inside the TopFormer) of each stage.
STAGE_MODULES = {"tpm": ("backbone.tpm",), "sase": ("backbone.ppa", "backbone.trans"),
                 "sim": ("backbone.SIM",), "head": ("decode_head",)}


class QuantizationError(TopformerDeployError):
    """Quantization could not be done as asked (bad stage name, no calibration data, converter failure)."""


def check_keep_float(keep_float: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated stage names in data-flow order."""
    unknown = [s for s in keep_float if s not in STAGES]
    if unknown:
        raise QuantizationError(f"unknown stage {', '.join(map(repr, unknown))} for keep_float: "
                                f"choose from {', '.join(STAGES)}")
    if set(keep_float) == set(STAGES):
        raise QuantizationError("keep_float lists every stage: nothing would be quantized (export fp32 instead)")
    return tuple(s for s in STAGES if s in keep_float)


def as_tuple(item) -> tuple:
    return tuple(item) if isinstance(item, (list, tuple)) else (item,)
