"""Variant names as bench models: ``--model tiny`` is exported on the fly once and reused from a cache."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..artifact import artifact_name, read_manifest
from ..errors import TopformerDeployError
from ..files import cache_root


def artifact_cache() -> Path:
    """Where variant artifacts exported on the fly are kept."""
    return cache_root() / "artifacts"


def resolve_model(spec: str, fmt: str = "tflite", input_size: tuple[int, int] = (512, 512),
                  progress: Callable[[str], None] | None = None) -> Path:
    """An artifact path as given, or a variant name (tiny/small/base) exported on the fly.

    Variants get random-but-live weights (latency does not depend on the weights' values) and are
    cached under :func:`artifact_cache` so the next bench reuses them.
    """
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix or len(path.parts) > 1:
        raise TopformerDeployError(f"{spec}: no such model file")
    from ..model import VARIANTS  # imports torch: only when the spec may be a variant name

    variant = spec.lower()
    if variant not in VARIANTS:
        raise TopformerDeployError(f"{spec}: no such model file (nor a variant: {', '.join(sorted(VARIANTS))})")
    h, w = input_size
    out_dir = artifact_cache()
    cached = out_dir / artifact_name(variant, (h, w), "fp32", "logits", fmt)
    if cached.is_file() and read_manifest(cached, required=False) is not None:
        return cached
    try:
        from ..export import export_model
        from ..model import random_live_model
    except ImportError as exc:
        raise TopformerDeployError(f"cannot export {variant} on the fly ({exc}); pass an artifact path") from None
    (progress or (lambda m: None))(f"exporting {variant} {h}x{w} to {fmt} (random weights, cached in {out_dir})")
    # verify=False: random weights time exactly like trained ones, and `export` is where accuracy is checked
    result = export_model(random_live_model(variant), fmt, out_dir, input_size=(h, w), precision="fp32",
                          output="logits", weights="random", verify=False)
    return Path(result.path)
