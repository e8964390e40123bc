"""What the int8 routes share: the error type, the keep-float check, tuple handling."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import TopformerDeployError
from ..model.stages import STAGES, check_stages


class QuantizationError(TopformerDeployError):
    """Quantization could not be done as asked (bad stage name, no calibration data, converter failure)."""


def check_keep_float(keep_float: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated stage names in data-flow order."""
    try:
        stages = check_stages(keep_float, "keep_float")
    except ValueError as exc:
        raise QuantizationError(str(exc)) from None
    if set(stages) == set(STAGES):
        raise QuantizationError("keep_float lists every stage: nothing would be quantized (export fp32 instead)")
    return stages


def as_tuple(item) -> tuple:
    return tuple(item) if isinstance(item, (list, tuple)) else (item,)
