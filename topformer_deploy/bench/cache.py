"""Variant names as bench models: ``--model tiny`` is exported on the fly once and reused from a cache.

The cache is keyed by what determines the artifact: variant, input size, format, precision, output, the
weights (random-but-live, seed 0), the tool's version and the source of its model and export code, and the
converter packages' versions. An entry is reused only when the artifact still has the sha256 its manifest
records; a corrupt or half-copied entry is exported again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from ..artifact import artifact_name, read_manifest, sha256_file
from ..errors import TopformerDeployError
from ..files import cache_root, write_json

#: The packages whose versions shape an exported artifact, per format
CONVERTERS = {"tflite": ("torch", "litert-torch", "litert-converter", "ai-edge-litert", "numpy"),
              "onnx": ("torch", "onnx", "onnxsim", "onnxruntime", "numpy")}
#: The parts of this package an export runs (their source is part of the key: an edited checkout re-exports)
EXPORT_SOURCES = ("artifact.py", "model", "export")
DEFAULT_VARIANT = "tiny"


def artifact_cache() -> Path:
    """Where variant artifacts exported on the fly are kept."""
    return cache_root() / "artifacts"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_digest() -> str:
    """sha256 over the source of the model and export code (what an export of this checkout runs)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in EXPORT_SOURCES:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(variant: str, fmt: str, input_size: tuple[int, int], precision: str = "fp32",
              output: str = "logits") -> dict:
    """Everything that determines an on-the-fly artifact."""
    from .. import __version__

    return {"variant": variant, "format": fmt, "input_size": list(input_size), "precision": precision,
            "output": output, "weights": "random-live seed 0", "topformer_deploy": __version__,
            "source": source_digest(), "versions": {p: _version(p) for p in CONVERTERS[fmt]}}


def cached_artifact(folder: Path, name: str, say: Callable[[str], None]) -> Path | None:
    """The artifact in ``folder`` when it matches its manifest's sha256; a mismatching entry is removed."""
    path = folder / name
    manifest = read_manifest(path, required=False) if path.is_file() else None
    if manifest is None:
        return None
    if manifest.get("sha256") == sha256_file(path):
        return path
    say(f"{path} does not match its manifest's sha256 (corrupt or half-copied): exporting it again")
    shutil.rmtree(folder, ignore_errors=True)
    return None


def resolve_model(spec: str | None, fmt: str = "tflite", input_size: tuple[int, int] = (512, 512),
                  progress: Callable[[str], None] | None = None) -> Path:
    """An artifact path as given, or a variant name (tiny/small/base; None: tiny) exported on the fly.

    Variants get random-but-live weights (latency does not depend on the weights' values) and are
    cached under :func:`artifact_cache`, keyed by :func:`cache_key`, so the next bench reuses them.
    """
    say = progress or (lambda m: None)
    path = Path(spec or DEFAULT_VARIANT)
    if path.is_file():
        return path
    if path.suffix or len(path.parts) > 1:
        raise TopformerDeployError(f"{spec}: no such model file")
    from ..model import VARIANTS  # imports torch: only when the spec may be a variant name

    variant = path.name.lower()
    if variant not in VARIANTS:
        raise TopformerDeployError(f"{spec}: no such model file (nor a variant: {', '.join(sorted(VARIANTS))})")
    h, w = input_size
    key = cache_key(variant, fmt, (h, w))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = artifact_cache() / f"{variant}_{h}x{w}_{fmt}_fp32-{digest}"
    cached = cached_artifact(folder, artifact_name(variant, (h, w), "fp32", "logits", fmt), say)
    if cached:
        return cached
    try:
        from ..export import export_model
        from ..model import random_live_model
    except ImportError as exc:
        raise TopformerDeployError(f"cannot export {variant} on the fly ({exc}); pass an artifact path") from None
    say(f"exporting {variant} {h}x{w} to {fmt} (random weights, cached in {folder})")
    # verify=False: random weights time exactly like trained ones, and `export` is where accuracy is checked
    result = export_model(random_live_model(variant), fmt, folder, input_size=(h, w), precision="fp32",
                          output="logits", weights="random", verify=False)
    write_json(folder / "key.json", key)
    return Path(result.path)
