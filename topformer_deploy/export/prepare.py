"""Turn a TopFormer into the exact module that gets exported: folded, output head chosen, per-format rewrite."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..artifact import OUTPUTS
from ..errors import TopformerDeployError
from ..model.fold import fold_batchnorm
from ..model.topformer import SIZE_MULTIPLE, check_input_size
from .rewrite import rewrite_for_nhwc


class SegmentationOutput(nn.Module):
    """``model`` followed by the requested output: 1/8 logits, 1/8 class map, or full-size class map (int32)."""

    def __init__(self, model: nn.Module, output: str, input_size: tuple[int, int]):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.output, self.input_size = output, tuple(input_size)
        # The model's children are registered here directly (not under ``model.``) so exported node names
        # keep the module paths the profiler attributes time by: /backbone/tpm/..., /decode_head/...
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_model_forward", model.forward)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self._model_forward(image)
        if self.output == "logits":
            return logits
        if self.output == "argmax-full":
            logits = F.interpolate(logits, size=self.input_size, mode="bilinear", align_corners=False)
        return logits.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.int32)  # no NCHW->NHWC TRANSPOSE in TFLite


def check_export_size(height: int, width: int) -> None:
    """Raise TopformerDeployError unless (height, width) exports exactly (multiples of 64)."""
    try:
        check_input_size(height, width)
    except ValueError as exc:
        raise TopformerDeployError(str(exc)) from exc
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise TopformerDeployError(
            f"input size {height}x{width} cannot be exported exactly: the pyramid pooling is an exact average "
            f"pool only for multiples of {SIZE_MULTIPLE} (other sizes give uneven adaptive windows); "
            f"nearest exportable sizes: {', '.join(nearest_sizes(height, width))}")


def nearest_sizes(height: int, width: int) -> list[str]:
    """The exportable sizes around (height, width), closest first."""
    def around(n: int) -> list[int]:
        low = max(SIZE_MULTIPLE, n // SIZE_MULTIPLE * SIZE_MULTIPLE)
        return sorted({low, low + SIZE_MULTIPLE} if n % SIZE_MULTIPLE else {n})
    sizes = [(h, w) for h in around(height) for w in around(width)]
    sizes.sort(key=lambda s: abs(s[0] - height) + abs(s[1] - width))
    return [f"{h}x{w}" for h, w in sizes]


def fold_for_export(model: nn.Module) -> nn.Module:
    """A BN-folded copy whose pyramid pooling is written as plain average pools (exact for multiples of 64)."""
    folded = fold_batchnorm(model)
    for module in folded.modules():
        if hasattr(module, "exact_avgpool"):
            module.exact_avgpool = True
    return folded


def export_modules(folded: nn.Module, fmt: str, output: str,
                   input_size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """(module to convert, reference module to verify against) for ``fmt`` ('onnx' or 'tflite').

    The reference is the folded official model; TFLite gets the NHWC-friendly rewrite of the attention.
    """
    reference = SegmentationOutput(folded, output, input_size).eval()
    if fmt == "tflite":
        return SegmentationOutput(rewrite_for_nhwc(folded), output, input_size).eval(), reference
    return SegmentationOutput(copy.deepcopy(folded), output, input_size).eval(), reference
