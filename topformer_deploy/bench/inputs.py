"""A real photo as an artifact's ``--input``: for timings whose cost depends on what the image shows
(the sparse post-processing refines only where classes meet; random pixels make noise of every block)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..artifact import MEAN, STD, input_size_of, quantize_array, read_manifest
from ..errors import TopformerDeployError
from ..files import write_atomic
from ..images import sample_photos


def write_photo_input(model: str | Path, path: str | Path) -> Path:
    """Save scikit-image's astronaut, preprocessed as ``model``'s manifest says (size, layout, dtype), as .npy."""
    manifest = read_manifest(model)
    spec = manifest["input"]
    if list(spec.get("mean", MEAN)) != list(MEAN) or list(spec.get("std", STD)) != list(STD):
        raise TopformerDeployError(f"{model}: its input normalisation is not the standard one; pass --input")
    x = sample_photos(input_size_of(manifest), count=1)[0]
    if spec.get("layout") == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    if spec.get("dtype", "float32") in ("int8", "uint8"):
        x = quantize_array(x, **spec["quantization"], dtype=spec["dtype"])
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x))
    return write_atomic(Path(path), buffer.getvalue())
