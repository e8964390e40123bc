"""A labelled folder in ADE20K's layout: ``images/<name>.jpg`` and ``annotations/<name>.png`` (class ids),
with an optional ``dataset.json`` saying its label convention."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import TopformerDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_dataset(data_dir: str | os.PathLike, num_images: int | None = None
                 ) -> tuple[list[tuple[Path, Path]], dict | None]:
    """Pairs ``(images/<name>.jpg, annotations/<name>.png)`` (sub-folders allowed, sorted) and ``dataset.json``."""
    root = Path(data_dir)
    images_dir, labels_dir = root / "images", root / "annotations"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise TopformerDeployError(f"{root}: expected an ADE20K-style folder with images/ and annotations/")
    pairs = []
    for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label = (labels_dir / image.relative_to(images_dir)).with_suffix(".png")
        if not label.is_file():
            raise TopformerDeployError(f"{image}: no annotation {label}")
        pairs.append((image, label))
    if not pairs:
        raise TopformerDeployError(f"{images_dir}: no images (.jpg/.png)")
    if num_images is not None:
        pairs = pairs[:num_images]
    info = None
    if (root / "dataset.json").is_file():
        try:
            info = json.loads((root / "dataset.json").read_text())
        except (OSError, ValueError) as exc:
            raise TopformerDeployError(f"{root / 'dataset.json'}: unreadable ({exc})") from exc
    return pairs, info


def load_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and 2-D label array; a clear error for unreadable or mismatched files."""
    try:
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(label_path) as im:
            label = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise TopformerDeployError(f"cannot read {image_path.name} / {label_path.name}: {exc}") from exc
    if label.ndim != 2:
        raise TopformerDeployError(f"{label_path}: annotations must be single-channel class ids, got {label.shape}")
    if label.shape != image.shape[:2]:
        raise TopformerDeployError(f"{label_path}: size {label.shape} differs from its image {image.shape[:2]}")
    return image, label
