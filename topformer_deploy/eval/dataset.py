"""A labelled folder in ADE20K's layout: ``images/<name>.jpg`` and ``annotations/<name>.png`` (class ids),
with an optional ``dataset.json`` saying its label convention."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import TopformerDeployError
from ..images import open_image, read_rgb

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


def load_pair(image_path: Path, label_path: Path, at_least: tuple[int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and 2-D label array; a clear error for unreadable, over-large or mismatched files.

    ``at_least``: the models need the image at this size or more, so a much larger one is decoded with
    reduction (:func:`topformer_deploy.images.read_rgb`); the label always keeps its full size.
    """
    try:
        with open_image(image_path) as im:
            image_size = im.size[::-1]
        with open_image(label_path) as im:
            if im.size[::-1] != image_size:
                raise TopformerDeployError(f"{label_path}: size {im.size[::-1]} differs from its image {image_size}")
            label = np.asarray(im)
        image = read_rgb(image_path, at_least)
    except (OSError, ValueError) as exc:  # ImageTooLarge is a ValueError
        raise TopformerDeployError(f"cannot read {image_path.name} / {label_path.name}: {exc}") from exc
    if label.ndim != 2:
        raise TopformerDeployError(f"{label_path}: annotations must be single-channel class ids, got {label.shape}")
    return image, label
