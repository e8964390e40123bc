"""The stage vocabulary, the one place that names TopFormer's stages. Imports no torch.

=====  =================================  ============================================  ==========================
stage  modules (paths in the TopFormer)   inputs                                        outputs
=====  =================================  ============================================  ==========================
tpm    backbone.tpm                       image (1, 3, H, W)                            4 token maps (1/4 .. 1/32)
sase   backbone.ppa, backbone.trans       the 4 token maps                              semantics (1/64 grid)
sim    backbone.SIM                       the 3 tokens SIM uses + semantics             3 injected maps
head   decode_head                        the 3 injected maps                           logits at 1/8
post   (none: what an app adds)           logits at 1/8                                 class map at input size
=====  =================================  ============================================  ==========================

``tpm -> sase -> sim -> head`` is the network; ``post`` (x8 bilinear upsample, align_corners=False, then
argmax) is timed beside it. The stage modules themselves are in :mod:`.stage_modules`.
"""
from __future__ import annotations

import re

#: The network's stages, in data-flow order.
STAGES = ("tpm", "sase", "sim", "head")
#: The network plus the post-processing an app needs.
ALL_STAGES = STAGES + ("post",)
#: Module paths (inside the TopFormer) of each network stage.
STAGE_MODULES = {"tpm": ("backbone.tpm",), "sase": ("backbone.ppa", "backbone.trans"),
                 "sim": ("backbone.SIM",), "head": ("decode_head",)}
#: How stages are written for people.
STAGE_LABELS = {"tpm": "TPM", "sase": "SASE", "sim": "SIM", "head": "head", "post": "post (x8 + argmax)"}
#: Strides of the four token maps.
TOKEN_STRIDES = (4, 8, 16, 32)

#: Module-path words -> stage: the attribute names (in ONNX node names) and the class names litert-torch
#: writes before them in TFLite tensor names (``TokenPyramidModule_tpm``).
_STAGE_WORDS = {"tpm": "tpm", "TokenPyramidModule": "tpm", "ppa": "sase", "PyramidPoolAgg": "sase",
                "trans": "sase", "BasicLayer": "sase", "SIM": "sim", "InjectionMultiSum": "sim",
                "decode_head": "head", "SimpleHead": "head", "PostStage": "post"}


def check_stages(stages, purpose: str = "") -> tuple[str, ...]:
    """``stages`` validated and put in data-flow order; ValueError naming an unknown one (and ``purpose``)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {', '.join(map(repr, unknown))}{' for ' + purpose if purpose else ''}: "
                         f"choose from {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in stages)


def stage_input_names(stage: str, decode_indices=(1, 2, 3)) -> list[str]:
    """Readable input names of a stage artifact (``token_1_8``, ``semantics``, ``sim_1_16``...)."""
    names = {"full": ["image"], "tpm": ["image"], "sase": [f"token_1_{s}" for s in TOKEN_STRIDES],
             "sim": [f"token_1_{TOKEN_STRIDES[i]}" for i in decode_indices] + ["semantics"],
             "head": [f"sim_1_{TOKEN_STRIDES[i]}" for i in decode_indices], "post": ["logits"]}
    return names[stage]


def stage_output_names(stage: str, decode_indices=(1, 2, 3)) -> list[str]:
    """Readable output names of a stage artifact (the next stage's input names)."""
    following = {"tpm": "sase", "sim": "head", "head": "post"}
    if stage in following:
        return stage_input_names(following[stage], decode_indices)
    return {"full": ["logits"], "sase": ["semantics"], "post": ["class_map"]}[stage]


def stage_of_node(name: str) -> str | None:
    """Which stage an exported node / tensor name belongs to, from the module path it carries.

    Works for ONNX node names (``/backbone/tpm/layer1/conv/conv.0/c/Conv``) and for litert-torch tensor
    names (``.../TopFormerBackbone_backbone/TokenPyramidModule_tpm/...``); a fused TFLite op's name joins
    several tensor names with ``;`` and the first that names a stage wins. None when no stage is named.
    """
    if re.fullmatch(r"/backbone/Split(_\d+)?", name):  # the SIM splits the semantics per scale
        return "sim"
    for part in name.split(";"):
        for word in re.split(r"[/.:\s]", part):
            for candidate in (word, *word.split("_", 1)):
                if candidate in _STAGE_WORDS:
                    return _STAGE_WORDS[candidate]
    return None
