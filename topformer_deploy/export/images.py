"""Preprocessing (the normalisation every artifact expects) and inputs for verification.

Real photos come from the images scikit-image ships inside its package (read from disk, never fetched).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: ImageNet/ADE20K normalisation of RGB pixels in [0, 255] (official mmseg config).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
COLOR_ORDER = "RGB"
VALUE_RANGE = (0, 255)
#: Colour photos bundled with scikit-image (no network needed).
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def preprocess(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxWx3 RGB image (uint8 or [0, 255] floats) -> normalised float32 NCHW batch of one at ``size``."""
    from skimage.transform import resize

    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    image = resize(rgb[..., :3].astype(np.float32), size, order=1, preserve_range=True, anti_aliasing=True)
    image = (image - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def sample_photos(size: tuple[int, int], count: int = 3) -> list[np.ndarray]:
    """Up to ``count`` of scikit-image's bundled colour photos, preprocessed to NCHW batches at ``size``."""
    import skimage
    from skimage.io import imread

    data_dir = Path(skimage.__file__).parent / "data"
    photos = []
    for name in SAMPLE_PHOTOS[:count]:
        path = data_dir / name
        if path.is_file():
            photos.append(preprocess(imread(path), size))
    return photos


def random_inputs(shape: tuple[int, ...], count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """``count`` seeded standard-normal float32 arrays (the scale of normalised images)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
