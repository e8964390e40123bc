"""The artifact contract: what an exported model promises whoever runs it. Imports no torch.

An artifact is one ``.tflite`` or ``.onnx`` file with its manifest, ``<artifact>.json``, beside it. Export
writes both (the manifest first, the artifact last, so an artifact is never seen without its manifest);
bench, breakdown and eval read the manifest to know the model's input layout, preprocessing, output
semantics and where it came from. The format is drawn in ``docs/architecture.md``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import TopformerDeployError
from .files import write_json

SCHEMA = "topformer-deploy/manifest"
SCHEMA_VERSION = 1
FORMATS = ("onnx", "tflite")
#: Layout of 4-D tensors at each format's graph boundary.
LAYOUTS = {"tflite": "NHWC", "onnx": "NCHW"}
#: What a full-model artifact returns: 1/8 logits, the 1/8 class map, or the class map at input size.
OUTPUTS = ("logits", "argmax", "argmax-full")

#: ImageNet/ADE20K normalisation of RGB pixels in [0, 255] (official mmseg configs).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
COLOR_ORDER = "RGB"
VALUE_RANGE = (0, 255)

_REQUIRED = ("artifact", "format", "precision", "variant", "num_classes", "stage", "input", "inputs", "output")
_LIBRARIES = ("topformer-deploy", "torch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "onnxsim",
              "numpy")


def artifact_name(variant: str, input_size: tuple[int, int], precision: str, output: str, fmt: str,
                  keep_float: tuple[str, ...] = ()) -> str:
    """``topformer_tiny_512x512_fp32_logits.tflite``; mixed int8 adds ``_float-sase`` (the stages kept float)."""
    height, width = input_size
    suffix = f"_float-{'-'.join(keep_float)}" if keep_float else ""
    return f"topformer_{variant}_{height}x{width}_{precision}_{output}{suffix}.{fmt}"


def manifest_path(artifact: str | os.PathLike) -> Path:
    """``model.tflite`` -> ``model.tflite.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (every document's ``created``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the tool and of the libraries that shape an artifact (None when absent)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions


def input_size_of(manifest: dict) -> tuple[int, int]:
    """(height, width) of the network input an artifact was exported for (stage artifacts included)."""
    if manifest.get("input_size"):
        height, width = manifest["input_size"]
        return int(height), int(width)
    shape, layout = manifest["input"]["shape"], manifest["input"].get("layout", "NHWC")
    return (int(shape[2]), int(shape[3])) if layout == "NCHW" else (int(shape[1]), int(shape[2]))


def build_manifest(*, artifact: Path, fmt: str, precision: str, variant: str, num_classes: int, stage: str,
                   inputs: list[dict], outputs: list[dict], input_size: tuple[int, int], output: str,
                   checkpoint: dict | str, weights: str, verification: dict | None, graph: dict,
                   **extra) -> dict:
    """A manifest for the file ``artifact`` (hashed here) from what the runtime reports of its I/O.

    ``inputs`` / ``outputs`` are ``[{name, shape, dtype}]`` in the runtime's order; a full model's first
    input also gets the preprocessing it expects. ``graph`` holds the operator histogram and counts.
    """
    layout = LAYOUTS[fmt]
    inputs = [{**i, "layout": layout if len(i["shape"]) == 4 else None} for i in inputs]
    first_in, first_out = dict(inputs[0]), outputs[0]
    if stage == "full":
        first_in.update(color_order=COLOR_ORDER, value_range=list(VALUE_RANGE), mean=list(MEAN), std=list(STD))
    return {
        "artifact": artifact.name, "format": fmt, "precision": precision, "variant": variant,
        "num_classes": int(num_classes), "stage": stage, "input": first_in, "inputs": inputs,
        "output": {**first_out, "layout": layout if len(first_out["shape"]) == 4 else "NHW", "semantics": output,
                   "scale": "1/1" if output == "argmax-full" else "1/8"},
        "input_size": list(input_size), "checkpoint": checkpoint, "weights": weights,
        "sha256": sha256_file(artifact), "size_bytes": artifact.stat().st_size,
        "versions": library_versions(), "verification": verification, **graph, **extra,
        "created": now_iso(),
    }


def checkpoint_entry(path: str | os.PathLike | None) -> dict | str:
    """The manifest's ``checkpoint``: the file's absolute path (the manifest is read from anywhere) and
    sha256 (readers check it is still that file), or ``"random"`` for random weights."""
    return {"path": str(Path(path).absolute()), "sha256": sha256_file(path)} if path else "random"


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest`` (schema fields added) beside ``artifact`` atomically; returns its path."""
    return write_json(manifest_path(artifact), {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest})


def read_manifest(artifact: str | os.PathLike, required: bool = True) -> dict | None:
    """The validated manifest of ``artifact``; without one, an error (or None when not ``required``)."""
    path = manifest_path(artifact)
    if not path.is_file():
        if not required:
            return None
        raise TopformerDeployError(f"no manifest for {artifact}: expected {path} (re-export the model)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TopformerDeployError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise TopformerDeployError(f"{path} is not a topformer-deploy manifest")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise TopformerDeployError(f"{path}: unsupported manifest schema_version "
                                   f"{document.get('schema_version')!r} (this tool reads {SCHEMA_VERSION})")
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        raise TopformerDeployError(f"{path}: manifest lacks {', '.join(missing)}")
    return document


def quantize_array(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Real values -> what an int8 (or uint8) graph boundary takes (``real = scale * (q - zero_point)``)."""
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, limits.min, limits.max).astype(dtype)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An int8 boundary tensor -> its real values."""
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
