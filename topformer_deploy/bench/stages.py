"""TopFormer cut into five standalone stages with plain tensor inputs and outputs.

Each stage is an ``nn.Module`` that *references* the sub-modules of one (folded) TopFormer - no
weights are copied - so that it can be exported and timed on its own:

=====  ============================================  ==========================================
stage  inputs                                        outputs
=====  ============================================  ==========================================
tpm    image (1, 3, H, W)                            the 4 token maps (1/4, 1/8, 1/16, 1/32)
sase   the 4 token maps                              global semantics (1/64; pooling + blocks)
sim    the 3 tokens SIM uses + semantics             the 3 injected maps (1/8, 1/16, 1/32)
head   the 3 injected maps                           logits at 1/8
post   logits at 1/8                                 full-resolution class map (x8 bilinear,
                                                     align_corners=False, then argmax)
=====  ============================================  ==========================================

``tpm -> sase -> sim -> head`` is exactly the network (``model(image)``); ``post`` is what an app adds.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..model import TopFormer

#: The network's stages, in data-flow order (their latencies add up to the whole model's).
NETWORK_STAGES = ("tpm", "sase", "sim", "head")
#: All stages: the network plus the post-processing an app needs (upsample to full size + argmax).
ALL_STAGES = NETWORK_STAGES + ("post",)


class _BackbonePart(nn.Module):
    """Some of ``model.backbone``'s children under their own names (shared, not copied), run as one stage.

    Stages call it as ``self.backbone(...)`` so that module paths - and the ONNX / TFLite names exporters
    derive from them (``/backbone/tpm/...``, ``/backbone/Split``) - are exactly the whole model's: the
    operator view attributes by them, and an int8 stage can be checked against the whole int8 model.
    """

    def __init__(self, model: TopFormer, names: tuple[str, ...], run: str):
        super().__init__()
        for name in names:
            self.add_module(name, getattr(model.backbone, name))
        self.channels = list(model.backbone.channels)
        self.indices = list(model.backbone.decode_out_indices)
        self.run = run

    def forward(self, *inputs: torch.Tensor):
        return getattr(self, f"_{self.run}")(*inputs)

    def _tpm(self, image):
        return tuple(self.tpm(image))

    def _sase(self, *tokens):
        return self.trans(self.ppa(list(tokens)))

    def _sim(self, t8, t16, t32, semantics):  # Topformer.forward_sim on the tokens it uses
        parts = semantics.split(self.channels, dim=1)
        return tuple(self.SIM[i](x, parts[i]) for i, x in zip(self.indices, (t8, t16, t32)))


class TpmStage(nn.Module):
    """Token Pyramid Module: image -> 4 token maps."""

    def __init__(self, model: TopFormer):
        super().__init__()
        self.backbone = _BackbonePart(model, ("tpm",), "tpm")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.backbone(image)


class SaseStage(nn.Module):
    """Semantics Aware Semantic Extractor: pool the 4 token maps to one grid, run the transformer blocks."""

    def __init__(self, model: TopFormer):
        super().__init__()
        self.backbone = _BackbonePart(model, ("ppa", "trans"), "sase")

    def forward(self, t4: torch.Tensor, t8: torch.Tensor, t16: torch.Tensor, t32: torch.Tensor) -> torch.Tensor:
        return self.backbone(t4, t8, t16, t32)


class SimStage(nn.Module):
    """Semantic Injection Module: the tokens the decoder uses + the semantics -> 3 injected maps.

    Only the token maps listed in ``decode_out_indices`` are inputs (the 1/4 map feeds SASE only).
    """

    def __init__(self, model: TopFormer):
        super().__init__()
        if len(model.backbone.decode_out_indices) != 3:
            raise ValueError(f"SimStage expects 3 decoder scales, the model has "
                             f"{len(model.backbone.decode_out_indices)}")
        self.backbone = _BackbonePart(model, ("SIM",), "sim")

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
    but a TFLite graph (NHWC inside) then needs no TRANSPOSE of the full-size logits before ARG_MAX -
    measured 12x faster at 512x512 with 150 classes (0.66 s vs 7.8 s on a loaded 2-core x86 machine).
    """

    def __init__(self, height: int, width: int):
        super().__init__()
        self.size = (height, width)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        full = F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)
        return full.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.int32)  # int32 like export's argmax-full


def build_stages(model: TopFormer, height: int, width: int) -> dict[str, nn.Module]:
    """The five stage modules of ``model`` (usually BN-folded) for a (height, width) input, in eval mode."""
    stages = {"tpm": TpmStage(model), "sase": SaseStage(model), "sim": SimStage(model),
              "head": HeadStage(model), "post": PostStage(height, width)}
    return {name: stage.eval() for name, stage in stages.items()}


@torch.no_grad()
def stage_inputs(model: TopFormer, image: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """The real tensors each stage receives when ``model`` runs on ``image`` (NCHW), plus ``"output"``.

    ``result["sim"]`` holds (token 1/8, token 1/16, token 1/32, semantics); ``result["output"]``
    holds the stage ``post``'s output (the full-resolution class map), for checking a chain.
    """
    stages = build_stages(model, image.shape[-2], image.shape[-1])
    tokens = stages["tpm"](image)
    semantics = stages["sase"](*tokens)
    used = tuple(tokens[i] for i in model.backbone.decode_out_indices)
    maps = stages["sim"](*used, semantics)
    logits = stages["head"](*maps)
    return {"tpm": (image,), "sase": tokens, "sim": used + (semantics,), "head": maps, "post": (logits,),
            "output": (stages["post"](logits),)}


def stage_input_names(stage: str, model: TopFormer) -> list[str]:
    """Readable input names for a stage artifact (``token_1_8``, ``semantics``, ``sim_1_16``...)."""
    strides = [4, 8, 16, 32]
    used = model.backbone.decode_out_indices
    names = {"tpm": ["image"], "sase": [f"token_1_{s}" for s in strides],
             "sim": [f"token_1_{strides[i]}" for i in used] + ["semantics"],
             "head": [f"sim_1_{strides[i]}" for i in used], "post": ["logits"]}
    return names[stage]


def stage_output_names(stage: str, model: TopFormer) -> list[str]:
    """Readable output names for a stage artifact (the next stage's input names)."""
    following = {"tpm": "sase", "sase": None, "sim": "head", "head": "post", "post": None}
    if following[stage]:
        return stage_input_names(following[stage], model)
    return ["semantics"] if stage == "sase" else ["class_map"]


def stage_params(stages: dict[str, nn.Module]) -> dict[str, int]:
    """Parameter count of each stage module (they share the model's tensors, none is counted twice)."""
    return {name: sum(p.numel() for p in stage.parameters()) for name, stage in stages.items()}



#: module-path words -> stage: the PyTorch attribute names (ONNX node names) and the class names that
#: litert-torch writes before them in TFLite tensor names (``TokenPyramidModule_tpm``)
_STAGE_WORDS = {"tpm": "tpm", "TokenPyramidModule": "tpm", "ppa": "sase", "PyramidPoolAgg": "sase",
                "trans": "sase", "BasicLayer": "sase", "SIM": "sim", "InjectionMultiSum": "sim",
                "decode_head": "head", "SimpleHead": "head", "PostStage": "post"}


def stage_of_node(name: str) -> str | None:
    """Which stage an exported node / tensor name belongs to, from the module path it carries.

    Works for ONNX node names (``/backbone/tpm/layer1/conv/conv.0/c/Conv``) and for litert-torch tensor
    names (``.../Topformer_backbone/TokenPyramidModule_tpm/...``); a fused TFLite op's name joins several
    tensor names with ``;`` and the first that names a stage wins. None when no stage is named.
    """
    if re.fullmatch(r"/backbone/Split(_\d+)?", name):  # Topformer.forward_sim splits the semantics
        return "sim"
    for part in name.split(";"):
        for word in re.split(r"[/.:\s]", part):
            for candidate in (word, *word.split("_", 1)):
                if candidate in _STAGE_WORDS:
                    return _STAGE_WORDS[candidate]
    return None


def attribute_ops(rows: list[dict], name_key: str, ms_key: str, inherit: bool = True) -> dict:
    """Sum operator times per stage: ``{"stages": {stage: {ms, ops, share}}, "unattributed": {...}, "total_ms"}``.

    ``rows`` are profiler rows in execution order (ORT kernel events, benchmark_model op rows); a row's stage
    is its ``"stage"`` key when it has one, else read from its name by :func:`stage_of_node`. A row whose
    name carries no module path (ORT's inserted ``ReorderInput``/``ReorderOutput`` layout nodes) takes,
    with ``inherit``, the stage of its neighbour: the next attributed row for a name with ``Input`` in
    it, else the previous one; such rows are counted as ``inherited``.
    """
    named = [row["stage"] if "stage" in row else stage_of_node(str(row.get(name_key) or "")) for row in rows]
    stages = list(named)
    if inherit:
        for i, stage in enumerate(named):
            if stage is None:
                after = next((s for s in named[i + 1:] if s), None)
                before = next((s for s in reversed(named[:i]) if s), None)
                wants_next = "Input" in str(rows[i].get(name_key) or "")
                stages[i] = (after or before) if wants_next else (before or after)
    totals: dict[str, dict] = {}
    unattributed = {"ms": 0.0, "ops": 0, "names": []}
    for row, own, stage in zip(rows, named, stages):
        ms = float(row.get(ms_key) or 0.0)
        if stage is None:
            unattributed["ms"] += ms
            unattributed["ops"] += 1
            if len(unattributed["names"]) < 10:
                unattributed["names"].append(row.get(name_key))
            continue
        entry = totals.setdefault(stage, {"ms": 0.0, "ops": 0, "inherited": 0})
        entry["ms"] += ms
        entry["ops"] += 1
        entry["inherited"] += own is None
    total = sum(e["ms"] for e in totals.values()) + unattributed["ms"]
    for entry in [*totals.values(), unattributed]:
        entry["share"] = entry["ms"] / total if total else 0.0
    return {"stages": {s: totals[s] for s in ALL_STAGES if s in totals}, "unattributed": unattributed,
            "total_ms": total}


#: TFLite ops that XNNPACK runs as one "Convolution (...)" operator each, in the graph's order
_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def tflite_op_stages(path) -> list[tuple[str, str | None]]:
    """(op name, stage) of every operator of a ``.tflite`` file, in execution order, from its tensor names.

    An op whose output is a graph output (``serving_default_output_0``, no module path) takes the stage of
    the op before it.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops, previous = [], None
    for op in interp._get_ops_details():
        stage = stage_of_node(";".join(names.get(i, "") for i in op["outputs"])) or previous
        ops.append((op["op_name"], stage))
        previous = stage
    return ops


def xnnpack_row_stages(rows: list[dict], op_stages: list[tuple[str, str | None]]) -> list[dict]:
    """Give benchmark_model op-profile rows a ``"stage"``, also for XNNPACK's delegate-internal rows.

    XNNPACK names its operators by kind and index (``Delegate/Convolution (NHWC, F32) IGEMM:12``), not by
    tensor. It creates them in the TFLite graph's order, one per convolution, so the k-th XNNPACK
    convolution is the k-th CONV_2D / DEPTHWISE_CONV_2D of the graph; every other delegated operator is
    given the stage of the convolution before it (an approximation at stage boundaries: e.g. SASE's
    average pools count towards the TPM). Rows that name a tensor (undelegated ops) use their name; the
    runtime's own rows (``AllocateTensors``, ``LiteRT::Run[...]``) get no stage.
    """
    conv_stages = [stage for op, stage in op_stages if op in _CONV_OPS]
    current, k, out = None, 0, []
    for row in rows:
        name, kind = str(row.get("name") or ""), str(row.get("node_type") or "")
        stage = stage_of_node(name)
        if stage is None and name.startswith("Delegate/"):
            if kind.startswith("Convolution") and k < len(conv_stages):
                current, k = conv_stages[k], k + 1
            stage = current or (conv_stages[0] if conv_stages else None)
        out.append({**row, "stage": stage})
    return out
