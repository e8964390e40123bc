"""Turn a TopFormer into the exact module that gets exported: folded, pooling fixed for the input size, output
head chosen, per-format rewrite."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..artifact import OUTPUTS
from ..errors import TopformerDeployError
from ..model.fold import fold_batchnorm
from ..model.topformer import TopFormer, check_input_size
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
    """Raise TopformerDeployError for a size the network cannot take; every other size exports exactly."""
    try:
        check_input_size(height, width)
    except ValueError as exc:
        raise TopformerDeployError(str(exc)) from exc


def fix_pooling(model: nn.Module, input_size: tuple[int, int]) -> list[dict]:
    """Write ``model``'s pyramid pooling (in place) as exact fixed ops for ``input_size``; returns the plan."""
    return model.backbone.ppa.fix_sizes(model.token_sizes(*input_size))


def pooling_record(model: TopFormer, input_size: tuple[int, int]) -> dict:
    """The manifest's ``pooling``: per level the token size, output and op, and the method overall.

    ``avg_pool``: every level's windows are even (plain average pools, as for multiples of 64);
    ``pooling_matrices``: at least one level is pooled by two constant matrices (exact, a little dearer).
    """
    levels = model.backbone.ppa.plan(model.token_sizes(*input_size))
    method = "avg_pool" if all(level["op"] == "avg_pool" for level in levels) else "pooling_matrices"
    return {"method": method, "levels": levels}


def fold_for_export(model: nn.Module, input_size: tuple[int, int] | None = None) -> nn.Module:
    """A BN-folded copy; with ``input_size``, its pyramid pooling fixed for that size (:func:`fix_pooling`)."""
    folded = fold_batchnorm(model)
    if input_size is not None:
        fix_pooling(folded, input_size)
    return folded


def export_modules(folded: nn.Module, fmt: str, output: str,
                   input_size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """(module to convert, reference module to verify against) for ``fmt`` ('onnx' or 'tflite').

    The reference is the folded official model (its adaptive pooling); the converted module has the pooling
    fixed for ``input_size`` and, for TFLite, the NHWC-friendly rewrite (attention and pooling matrices).
    """
    reference = SegmentationOutput(folded, output, input_size).eval()
    module = copy.deepcopy(folded)
    fix_pooling(module, input_size)
    if fmt == "tflite":
        module = rewrite_for_nhwc(module)
    return SegmentationOutput(module, output, input_size).eval(), reference
