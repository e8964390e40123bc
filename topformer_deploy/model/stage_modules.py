"""TopFormer cut into its five stages (see :mod:`.stages`), each an ``nn.Module`` with plain tensor I/O.

A stage module *references* the sub-modules of one (usually folded) TopFormer - no weights are copied -
and calls them through the same attribute paths (``backbone.tpm``, ``backbone.SIM``, ``decode_head``), so
that the node names exporters derive from them are exactly the whole model's: the operator view
attributes time by them, and an int8 stage can be checked against the whole int8 model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stages import ALL_STAGES
from .topformer import TopFormer, TopFormerBackbone


class _BackbonePart(nn.Module):
    """Some of ``model.backbone``'s children under their own names (shared), run with the backbone's own
    ``forward_sase`` / ``forward_sim``: stage execution is written once, in :class:`TopFormerBackbone`.

    A stage calls it as ``self.backbone(...)`` (through ``__call__``, so exporters see the ``backbone``
    scope and name nodes ``/backbone/tpm/...`` as in the whole model).
    """

    forward_sase = TopFormerBackbone.forward_sase
    forward_sim = TopFormerBackbone.forward_sim

    def __init__(self, model: TopFormer, stage: str, names: tuple[str, ...]):
        super().__init__()
        for name in names:
            self.add_module(name, getattr(model.backbone, name))
        self.stage = stage
        self.channels = list(model.backbone.channels)
        self.decode_out_indices = list(model.backbone.decode_out_indices)

    def forward(self, *inputs: torch.Tensor):
        if self.stage == "tpm":
            return tuple(self.tpm(inputs[0]))
        if self.stage == "sase":
            return self.forward_sase(list(inputs))
        tokens: list = [None] * len(self.channels)      # sim: (t8, t16, t32, semantics)
        for index, token in zip(self.decode_out_indices, inputs[:-1]):
            tokens[index] = token
        return tuple(self.forward_sim(tokens, inputs[-1]))


class TpmStage(nn.Module):
    """Token Pyramid Module: image -> the 4 token maps."""

    def __init__(self, model: TopFormer):
        super().__init__()
        self.backbone = _BackbonePart(model, "tpm", ("tpm",))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.backbone(image)


class SaseStage(nn.Module):
    """Scale-aware Semantics Extractor: pool the 4 token maps to one grid, run the transformer blocks."""

    def __init__(self, model: TopFormer):
        super().__init__()
        self.backbone = _BackbonePart(model, "sase", ("ppa", "trans"))

    def forward(self, t4: torch.Tensor, t8: torch.Tensor, t16: torch.Tensor, t32: torch.Tensor) -> torch.Tensor:
        return self.backbone(t4, t8, t16, t32)


class SimStage(nn.Module):
    """Semantics Injection Module: the 3 tokens the decoder uses + the semantics -> 3 injected maps."""

    def __init__(self, model: TopFormer):
        super().__init__()
        if len(model.backbone.decode_out_indices) != 3:
            raise ValueError(f"SimStage expects 3 decoder scales, the model has "
                             f"{len(model.backbone.decode_out_indices)}")
        self.backbone = _BackbonePart(model, "sim", ("SIM",))

    def forward(self, t8: torch.Tensor, t16: torch.Tensor, t32: torch.Tensor,
                semantics: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.backbone(t8, t16, t32, semantics)


class HeadStage(nn.Module):
    """Segmentation head: the 3 injected maps -> logits at 1/8."""

    def __init__(self, model: TopFormer):
        super().__init__()
        self.decode_head = model.decode_head

    def forward(self, m8: torch.Tensor, m16: torch.Tensor, m32: torch.Tensor) -> torch.Tensor:
        return self.decode_head([m8, m16, m32])


class PostStage(nn.Module):
    """Post-processing: bilinear upsample of the 1/8 logits to the input size, then argmax over classes.

    The argmax is taken over the last axis of a channels-last view: the same numbers as ``argmax(dim=1)``,
    but a TFLite graph (NHWC inside) then needs no TRANSPOSE of the full-size logits before ARG_MAX
    (12x faster at 512x512 with 150 classes).
    """

    def __init__(self, height: int, width: int):
        super().__init__()
        self.size = (height, width)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        full = F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)
        return full.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.int32)  # int32 like export's argmax-full


def build_stages(model: TopFormer, height: int, width: int) -> dict[str, nn.Module]:
    """The five stage modules of ``model`` for a (height, width) input, in eval mode, by stage name."""
    stages = {"tpm": TpmStage(model), "sase": SaseStage(model), "sim": SimStage(model),
              "head": HeadStage(model), "post": PostStage(height, width)}
    assert tuple(stages) == ALL_STAGES
    return {name: stage.eval() for name, stage in stages.items()}


@torch.no_grad()
def stage_inputs(model: TopFormer, image: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """The real tensors each stage receives when ``model`` runs on ``image`` (NCHW), plus ``"output"``.

    ``result["sim"]`` holds (token 1/8, token 1/16, token 1/32, semantics); ``result["output"]`` holds the
    post stage's output (the full-resolution class map), for checking a chain of stage artifacts.
    """
    stages = build_stages(model, image.shape[-2], image.shape[-1])
    tokens = stages["tpm"](image)
    semantics = stages["sase"](*tokens)
    used = tuple(tokens[i] for i in model.backbone.decode_out_indices)
    maps = stages["sim"](*used, semantics)
    logits = stages["head"](*maps)
    return {"tpm": (image,), "sase": tokens, "sim": used + (semantics,), "head": maps, "post": (logits,),
            "output": (stages["post"](logits),)}


def stage_params(stages: dict[str, nn.Module]) -> dict[str, int]:
    """Parameter count of each stage module (they share the model's tensors, none is counted twice)."""
    return {name: sum(p.numel() for p in stage.parameters()) for name, stage in stages.items()}
