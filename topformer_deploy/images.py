"""The pixels every model and artifact is fed: image files, preprocessing, bundled photos, seeded random inputs.

Real photos come from the images scikit-image ships inside its package (read from disk, never fetched).
The normalisation constants are the artifact contract's (:mod:`topformer_deploy.artifact`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .artifact import MEAN, STD

#: Colour photos bundled with scikit-image (no network needed).
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
#: Images with more pixels are refused from their header, before decoding: a 164 KB PNG can claim
#: 13000x13000 (169 megapixels), which took 242 s and 4.6 GB to decode and resize.
MAX_PIXELS = 100_000_000


class ImageTooLarge(ValueError):
    """An image file whose header claims more than :data:`MAX_PIXELS` pixels."""


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """``PIL.Image.open`` (header only, nothing decoded yet) refusing images over ``max_pixels``."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # Pillow warns above 89 megapixels; the limit here is checked below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"over the {max_pixels / 1e6:.0f}-megapixel limit for input images") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                            f"{max_pixels / 1e6:.0f}-megapixel limit for input images")
    return image


def read_rgb(path: str | os.PathLike, at_least: tuple[int, int] | None = None,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)``: grey, palette, RGBA and 16-bit files included
    (16-bit values are scaled to 0-255, not clipped).

    ``at_least`` (height, width): the image is only needed at this size or more, so one much larger is
    decoded with reduction (JPEG at 1/2-1/8 scale in the decoder, others by an integer box reduction)
    down to no less than twice that size. Raises :class:`ImageTooLarge` (a ValueError) above
    ``max_pixels``, OSError/ValueError when the file cannot be read.
    """
    with open_image(path, max_pixels) as image:
        width, height = image.size
        factor = 1 if at_least is None else min(height // (2 * at_least[0]), width // (2 * at_least[1]))
        if factor >= 2:
            image.draft("RGB", (width // factor, height // factor))  # JPEG only; a no-op for other formats
        image.load()
        if image.mode.startswith("I;16"):
            image = image.convert("I")
        factor = 1 if at_least is None else min(image.height // (2 * at_least[0]), image.width // (2 * at_least[1]))
        if factor >= 2:
            if image.mode not in ("L", "RGB", "RGBA", "I"):  # modes Image.reduce does not take (palette, 1-bit)
                image = image.convert("RGB")
            image = image.reduce(factor)
        if image.mode == "I":  # 16-bit grey: scale to 8 bits
            grey = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


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
