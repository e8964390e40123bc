"""Calibration images for int8 export: a folder of photos or the synthetic dataset, preprocessed as inference is.

A folder is searched **recursively** for ``.jpg``/``.jpeg``/``.png``/``.bmp`` files (any case, any size);
hidden files and folders (names starting with ``.``) are ignored. When the folder holds more images than
``count``, a seeded random subset is used, so a calibration is reproducible. Every image is decoded to RGB
(grey, palette and RGBA files included), resized bilinearly to the input size and normalised with the
manifest's mean/std on 0-255 pixels - :func:`topformer_deploy.data.preprocess`, the function inference uses.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..artifact import MEAN, STD
from ..data import generate_sample
from ..images import preprocess
from ..errors import TopformerDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SYNTHETIC = "synthetic"


class CalibrationError(TopformerDeployError):
    """No usable calibration images (missing folder, empty folder, nothing decodable)."""


class CalibrationWarning(UserWarning):
    """A calibration image was skipped (unreadable or not an image)."""


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder`` (recursive, hidden entries skipped), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"calibration folder not found: {root}")
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def read_rgb(path: Path) -> np.ndarray:
    """Decode one image file to RGB uint8 ``(H, W, 3)``; raises OSError/ValueError if it cannot be read."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def load_calibration_images(source: str | os.PathLike, count: int = 100, input_size: tuple[int, int] = (512, 512),
                            seed: int = 0, *, mean=MEAN, std=STD,
                            on_skip: Callable[[Path, str], None] | None = None,
                            progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """``count`` preprocessed calibration inputs, each float32 NCHW ``(1, 3, h, w)``.

    ``source`` is a folder of images or ``"synthetic"`` (samples of the demo dataset's train split, drawn
    from ``seed``). Unreadable files are skipped: ``on_skip(path, reason)`` is called, or a
    :class:`CalibrationWarning` is issued when no callback is given. A folder with fewer usable images than
    ``count`` yields all of them; zero usable images raises :class:`CalibrationError`.
    ``progress(done, total)`` is called after each image.
    """
    if count < 1:
        raise CalibrationError(f"calibration count must be >= 1, got {count}")
    if str(source) == SYNTHETIC:
        return _synthetic(count, input_size, seed, mean, std, progress)

    paths = find_images(source)
    if not paths:
        raise CalibrationError(f"no calibration images ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) in {source}")
    order = np.random.default_rng(seed).permutation(len(paths)) if len(paths) > count else range(len(paths))
    total = min(count, len(paths))
    images: list[np.ndarray] = []
    for index in order:
        if len(images) == count:
            break
        path = paths[index]
        try:
            rgb = read_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if on_skip is not None:
                on_skip(path, reason)
            else:
                warnings.warn(f"skipping unreadable calibration image {path}: {reason}", CalibrationWarning,
                              stacklevel=2)
            continue
        images.append(preprocess(rgb, input_size, mean, std))
        if progress is not None:
            progress(len(images), total)
    if not images:
        raise CalibrationError(f"no usable calibration images in {source}: all {len(paths)} files were unreadable")
    return images


def _synthetic(count, input_size, seed, mean, std, progress) -> list[np.ndarray]:
    images = []
    for index in range(count):
        rgb, _ = generate_sample(seed, "train", index, tuple(input_size))
        images.append(preprocess(rgb, input_size, mean, std))
        if progress is not None:
            progress(index + 1, count)
    return images
