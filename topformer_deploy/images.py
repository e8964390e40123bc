"""The pixels every model and artifact is fed: preprocessing, bundled photos and seeded random inputs.

Real photos come from the images scikit-image ships inside its package (read from disk, never fetched).
The normalisation constants are the artifact contract's (:mod:`topformer_deploy.artifact`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifact import MEAN, STD

#: Colour photos bundled with scikit-image (no network needed).
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def preprocess(rgb: np.ndarray, size: tuple[int, int], mean=MEAN, std=STD) -> np.ndarray:
    """An HxWx3 RGB image (uint8 or [0, 255] floats) -> normalised float32 NCHW batch of one at ``size``.

    Bilinear, anti-aliased resize, then (x - mean) / std: eval, calibration and verification feed models
    identically.
    """
    from skimage.transform import resize

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    image = resize(rgb[..., :3].astype(np.float32), tuple(size), order=1, preserve_range=True, anti_aliasing=True)
    image = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
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
