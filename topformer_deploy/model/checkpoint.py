"""Load the TopFormer checkpoints users already have (official mmseg layout and friends).

The architecture is read from the checkpoint's tensor shapes (:func:`config_from_state_dict`), so a
checkpoint of any official config loads - Cityscapes' dense Tiny head and 128-wide Base SIM included -
and so does one trained with other widths, depths or heads, as long as the official stride pattern holds.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from .topformer import (OFFICIAL_STRIDES, VARIANTS, TopFormer, VariantConfig, layer_strides, resolve_config,
                        variant_name)

#: Wrapper keys tried in order, as the official loaders do.
_WRAPPER_KEYS = ("state_dict_ema", "state_dict", "model", "module")
_PREFIXES = ("backbone.", "decode_head.")
_CLASSIFIER = "decode_head.conv_seg.weight"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) and return a float32 segmentor state_dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, i.e. running the file's code: never passed on
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"refusing to load {path}: besides tensors it holds Python objects "
                                  f"({found.group(1)}), which could run code; only plain weights files (tensors in "
                                  "dicts) are loaded") from None
        raise CheckpointError(f"cannot read checkpoint {path}: file is corrupt or not a PyTorch checkpoint "
                              "(no torch.save weights in it)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: file is corrupt or not a PyTorch "
                              f"checkpoint ({type(exc).__name__})") from exc
    return normalise_state_dict(obj, path)


def normalise_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap mmcv/timm wrappers, strip ``module.``, add ``backbone.`` to bare backbone keys, cast to fp32."""
    while isinstance(obj, Mapping) and not _looks_like_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            raise CheckpointError(f"{source}: no state_dict found (top-level keys: {_first(obj.keys())})")
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        while key.startswith("module."):
            key = key[len("module."):]
        if not key.startswith(_PREFIXES) and key.split(".")[0] in ("tpm", "trans", "SIM", "ppa"):
            key = "backbone." + key
        out[key] = value.float() if value.is_floating_point() else value
    if not out:
        raise CheckpointError(f"{source}: contains no tensors")
    return out


def _looks_like_state_dict(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _first(items, n: int = 5) -> str:
    items = list(items)
    text = ", ".join(map(str, items[:n]))
    return text + (f", ... ({len(items)} in all)" if len(items) > n else "")


#: What the tensor shapes cannot tell apart, assumed as in every official config.
ASSUMED = {"key_dim": 16, "strides": "official pattern " + "-".join(map(str, OFFICIAL_STRIDES)) + " (1 after)",
           "c2t_stride": 2, "decode_out_indices": [1, 2, 3]}
_KEY_DIM = 16


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"not a TopFormer segmentor checkpoint: no {key}")
    return tuple(state_dict[key].shape)


def _ratio(numerator: int, denominator: int) -> int | float:
    return numerator // denominator if numerator % denominator == 0 else numerator / denominator


def _tpm_layers(state_dict: Mapping[str, torch.Tensor], stem: int) -> list[tuple[int, int | float, int, int]]:
    """[kernel, expand ratio, channels, stride] of every TPM layer; strides from :data:`OFFICIAL_STRIDES`."""
    layers, inp, index = [], stem, 1
    while f"backbone.tpm.layer{index}.conv.0.c.weight" in state_dict:
        prefix = f"backbone.tpm.layer{index}.conv"
        expands = f"{prefix}.4.c.weight" in state_dict  # [expand, dw, linear] vs [dw, linear]
        dw = _shape(state_dict, f"{prefix}.{2 if expands else 0}.c.weight")
        oup = _shape(state_dict, f"{prefix}.{4 if expands else 2}.c.weight")[0]
        hidden, kernel = dw[0], dw[-1]
        if dw[1] != 1 or dw[-2] != kernel or kernel % 2 == 0:
            raise CheckpointError(f"{prefix}: the depthwise conv has shape {dw}, not (hidden, 1, k, k) with k odd")
        if not expands and hidden != inp:
            raise CheckpointError(f"{prefix}: a block without expansion must keep {inp} channels, has {hidden}")
        stride = OFFICIAL_STRIDES[index - 1] if index <= len(OFFICIAL_STRIDES) else 1
        layers.append((kernel, _ratio(hidden, inp) if expands else 1, oup, stride))
        inp, index = oup, index + 1
    return layers


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[VariantConfig, int]:
    """(config, num_classes) read from a segmentor state_dict's tensor shapes.

    Read: every TPM layer's kernel, expand ratio and width, the pyramid channels (SASE input) and which TPM
    layers feed it, the transformer's depth, heads, attention and MLP ratios, the SIM widths, the head's width
    and groups, the class count. Assumed (:data:`ASSUMED`, the same in every official config): key_dim 16
    (only key_dim x heads is in the weights), the strides, the c2t pooling stride. Raises CheckpointError,
    naming the key, for a checkpoint these cannot describe.
    """
    stem = _shape(state_dict, "backbone.tpm.stem.0.c.weight")
    if stem[1:] != (3, 3, 3):
        raise CheckpointError(f"backbone.tpm.stem.0.c.weight has shape {stem}, not (C, 3, 3, 3)")
    cfgs = _tpm_layers(state_dict, stem[0])
    to_q = _shape(state_dict, "backbone.trans.transformer_blocks.0.attn.to_q.c.weight")
    to_v = _shape(state_dict, "backbone.trans.transformer_blocks.0.attn.to_v.c.weight")
    fc1 = _shape(state_dict, "backbone.trans.transformer_blocks.0.mlp.fc1.c.weight")
    dim, depths = to_q[1], 0
    while f"backbone.trans.transformer_blocks.{depths}.attn.to_q.c.weight" in state_dict:
        depths += 1
    if to_q[0] % _KEY_DIM:
        raise CheckpointError(f"backbone.trans...attn.to_q has {to_q[0]} outputs: not a multiple of key_dim "
                              f"{_KEY_DIM} (assumed, as in every official config)")
    sim = {i: _shape(state_dict, f"backbone.SIM.{i}.local_embedding.conv.weight") for i in (1, 2, 3)}
    fuse = _shape(state_dict, "decode_head.linear_fuse.conv.weight")
    classes = _shape(state_dict, "decode_head.conv_seg.weight")[0]
    channels = [dim - sum(w[1] for w in sim.values())] + [sim[i][1] for i in (1, 2, 3)]
    # the pyramid taps the last layer of each stride from 1/4 on (with the official strides: of each channel group)
    strides = layer_strides(cfgs)
    embed = [i for i, stride in enumerate(strides)
             if stride >= 4 and (i + 1 == len(strides) or strides[i + 1] > stride)]
    if len(embed) != len(channels):
        raise CheckpointError(f"the TPM's {len(cfgs)} layers, with the official strides (they are not in the "
                              f"weights), give {len(embed)} pyramid levels from 1/4, the SIM and SASE take "
                              f"{len(channels)}: this tool reads checkpoints with the official stride pattern")
    fields = dict(cfgs=tuple(cfgs), embed_out_indice=tuple(embed), channels=tuple(channels),
                  out_channels=(0, *(sim[i][0] for i in (1, 2, 3))), num_heads=to_q[0] // _KEY_DIM,
                  head_channels=fuse[0], head_is_dw=fuse[1] == 1 and fuse[0] > 1, depths=depths,
                  key_dim=_KEY_DIM, attn_ratio=_ratio(to_v[0], to_q[0]), mlp_ratio=_ratio(fc1[0], dim),
                  stem_channels=stem[0])
    try:
        return resolve_config(VARIANTS["tiny"], **fields), classes
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint's shapes describe no TopFormer this tool can build: {exc}") from None


def _shapes(config: VariantConfig, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = TopFormer(config, num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The variant whose backbone (TPM + SASE) the checkpoint has, or None (a custom one, or unreadable)."""
    try:
        config, _ = config_from_state_dict(state_dict)
    except CheckpointError:
        return None
    return _official_variant(config)


def _official_variant(config: VariantConfig) -> str | None:
    name = variant_name(config)
    return None if name == "custom" else name


def closest_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The variant with most tensors of the right shape in ``state_dict``, among those whose keys it
    (nearly: 90%) has; None when it has no variant's keys."""
    best, best_score = None, -1
    for variant in VARIANTS:
        expected = _shapes(VARIANTS[variant], 1)
        present = [k for k in expected if k in state_dict]
        if len(present) < 0.9 * len(expected):
            continue
        score = sum(tuple(state_dict[k].shape) == expected[k] for k in present)
        if score > best_score:
            best, best_score = variant, score
    return best


def infer_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    weight = state_dict.get(_CLASSIFIER)
    return int(weight.shape[0]) if weight is not None else None


def load_checkpoint(path: str | os.PathLike, variant: str = "auto", num_classes: int | None = None) -> TopFormer:
    """Build the TopFormer the checkpoint describes and load ``path`` into it (eval mode, float32).

    ``variant="auto"``: the architecture comes from the tensor shapes (:func:`config_from_state_dict`;
    ``model.describe()`` names the official configs it matches). ``variant="tiny"`` etc. also demands that
    backbone (TPM + SASE; the SIM and head widths still come from the checkpoint). ``num_classes=None``
    takes the checkpoint's. A checkpoint that does not fit raises :class:`CheckpointError` naming
    missing/unexpected keys, shape conflicts and the variant that would fit.
    """
    state_dict = read_state_dict(path)
    try:
        derived, classes = config_from_state_dict(state_dict)
        unreadable = None
    except CheckpointError as exc:
        derived, classes, unreadable = None, infer_num_classes(state_dict), exc
    fitting = _official_variant(derived) if derived is not None else None
    if variant == "auto":
        named = None if derived is not None else closest_variant(state_dict)
        if derived is None and named is None:
            raise CheckpointError(f"{path}: does not match any TopFormer ({unreadable}; "
                                  f"keys: {_first(sorted(state_dict))})")
        # unreadable shapes: compared with the closest variant, so the wrong-shaped tensors are named
        config = derived if derived is not None else VARIANTS[named]
    else:
        named = str(variant).lower()
        if named not in VARIANTS:
            raise CheckpointError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        # the named backbone, with the decoder (SIM, head) the checkpoint has when it could be read
        decoder = {f: getattr(derived, f) for f in ("out_channels", "head_channels", "head_is_dw")} if derived else {}
        config = dataclasses.replace(VARIANTS[named], **decoder)
    num_classes = num_classes if num_classes is not None else (classes or 150)
    if num_classes < 1:
        raise CheckpointError(f"num_classes must be >= 1, got {num_classes}")
    try:
        _check_fit(path, state_dict, config, num_classes, named, fitting)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {unreadable}" if unreadable is not None else str(exc)) from None
    model = TopFormer(config, num_classes).eval()
    model.load_state_dict(state_dict, strict=True)
    model.config_source = {"from": "checkpoint shapes", "assumed": ASSUMED}
    return model


def _check_fit(path, state_dict, config: VariantConfig, num_classes: int, variant: str | None,
               fitting: str | None) -> None:
    """Raise CheckpointError naming every missing/unexpected key and shape conflict against ``config``
    (the architecture read from the checkpoint, or ``variant``'s backbone)."""
    expected = _shapes(config, num_classes)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    conflicts = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {expected[k]}"
                 for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or conflicts:
        label = f"TopFormer-{variant}" if variant else "the architecture its shapes describe"
        closest = " (no variant fits; this is the closest)" if fitting is None and variant in VARIANTS else ""
        parts = [f"{path} does not fit {label} with {num_classes} classes{closest}"]
        if conflicts:
            parts.append(f"{len(conflicts)} shape conflicts ({_first(conflicts, 3)})")
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if fitting and fitting != variant:
            parts.append(f"it fits variant '{fitting}' (use --variant {fitting} or auto)")
        raise CheckpointError("; ".join(parts))
