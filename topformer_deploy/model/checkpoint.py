"""Load the TopFormer checkpoints users already have (official mmseg layout and friends)."""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from .topformer import VARIANTS, TopFormer, build_model

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


def _shapes(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = TopFormer(variant, num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The variant whose every backbone tensor shape matches ``state_dict``, or None."""
    for variant in VARIANTS:
        expected = _shapes(variant, 1)
        common = [k for k in expected if k in state_dict and k != _CLASSIFIER and not k.endswith("conv_seg.bias")]
        if common and len(common) >= 0.9 * (len(expected) - 2) and all(
            tuple(state_dict[k].shape) == expected[k] for k in common
        ):
            return variant
    return None


def closest_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The variant with most tensors of the right shape in ``state_dict``, among those whose keys it
    (nearly: 90%) has; None when it has no variant's keys."""
    best, best_score = None, -1
    for variant in VARIANTS:
        expected = _shapes(variant, 1)
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
    """Build the matching TopFormer and load ``path`` into it (eval mode, float32).

    ``variant="auto"`` and ``num_classes=None`` infer both from the tensor shapes. A checkpoint that does
    not fit raises :class:`CheckpointError` naming missing/unexpected keys, shape conflicts and the
    variant that would fit.
    """
    state_dict = read_state_dict(path)
    fitting = infer_variant(state_dict)
    if variant == "auto":
        variant = fitting or closest_variant(state_dict)  # the closest: its mismatches are named below
        if variant is None:
            raise CheckpointError(f"{path}: does not match any TopFormer variant "
                                  f"(keys: {_first(sorted(state_dict))})")
    if num_classes is None:
        num_classes = infer_num_classes(state_dict) or 150
    try:
        model = build_model(variant, num_classes)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    conflicts = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or conflicts:
        closest = " (no variant fits; this is the closest)" if fitting is None and variant in VARIANTS else ""
        parts = [f"{path} does not fit TopFormer-{variant} with {num_classes} classes{closest}"]
        if conflicts:
            parts.append(f"{len(conflicts)} shape conflicts ({_first(conflicts, 3)})")
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if fitting and fitting != variant:
            parts.append(f"it fits variant '{fitting}' (use --variant {fitting} or auto)")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
