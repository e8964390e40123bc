"""Calibration images for int8 export: a folder of photos or the synthetic dataset, preprocessed as inference is.

A folder is searched **recursively** for ``.jpg``/``.jpeg``/``.png``/``.bmp`` files (any case, any size);
hidden files and folders (names starting with ``.``) are ignored. When the folder holds more images than
``count``, a seeded random subset is used, so a calibration is reproducible. Every image is decoded to RGB
by :func:`topformer_deploy.images.read_rgb` (grey, palette, RGBA and 16-bit files included; one far larger
than the input size is decoded with reduction, one over 100 megapixels is skipped with a warning), resized
bilinearly to the input size and normalised with the manifest's mean/std on 0-255 pixels -
:func:`topformer_deploy.images.preprocess`, the function inference uses.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifact import MEAN, STD
from ..data import generate_sample
from ..images import preprocess, read_rgb
from ..errors import TopformerDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SYNTHETIC = "synthetic"


class CalibrationError(TopformerDeployError):
    """No usable calibration images (missing folder, empty folder, nothing decodable)."""


class CalibrationWarning(UserWarning):
    """A calibration image was skipped (unreadable, not an image, too large), or too few were usable."""


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


def calibration_files(source: str | os.PathLike) -> list[Path]:
    """The image files of a calibration folder (``[]`` for ``"synthetic"``); CalibrationError when the folder
    is missing or holds none. Cheap: callers check ``--calib`` with it before loading a model."""
    if str(source) == SYNTHETIC:
        return []
    paths = find_images(source)
    if not paths:
        raise CalibrationError(f"no calibration images ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) in {source}")
    return paths


def load_calibration_images(source: str | os.PathLike, count: int = 100, input_size: tuple[int, int] = (512, 512),
                            seed: int = 0, *, mean=MEAN, std=STD, warn: Callable[[str], None] | None = None,
                            progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """``count`` preprocessed calibration inputs, each float32 NCHW ``(1, 3, h, w)``.

    ``source`` is a folder of images or ``"synthetic"`` (samples of the demo dataset's train split, drawn
    from ``seed``). Unreadable (or too large) files are skipped, and fewer usable images than ``count`` is
    said too: ``warn(message)`` gets each one-line message, or a :class:`CalibrationWarning` is issued when
    no callback is given. Zero usable images raises :class:`CalibrationError`.
    ``progress(done, total)`` is called after each image.
    """
    if count < 1:
        raise CalibrationError(f"calibration count must be >= 1, got {count}")
    if str(source) == SYNTHETIC:
        return _synthetic(count, input_size, seed, mean, std, progress)
    say = warn or (lambda message: warnings.warn(message, CalibrationWarning, stacklevel=3))
    paths = calibration_files(source)
    order = np.random.default_rng(seed).permutation(len(paths)) if len(paths) > count else range(len(paths))
    total = min(count, len(paths))
    images: list[np.ndarray] = []
    for index in order:
        if len(images) == count:
            break
        path = paths[index]
        try:
            rgb = read_rgb(path, at_least=tuple(input_size))
        except (OSError, ValueError) as exc:  # ImageTooLarge is a ValueError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            say(f"skipping calibration image {path}: {reason}")
            continue
        images.append(preprocess(rgb, input_size, mean, std))
        if progress is not None:
            progress(len(images), total)
    if not images:
        raise CalibrationError(f"no usable calibration images in {source}: all {len(paths)} files were unreadable")
    if len(images) < count:
        say(f"only {len(images)} usable calibration image{'s' if len(images) > 1 else ''} in {source} "
            f"({count} asked for): int8 ranges from so few may not fit real inputs")
    return images


def _synthetic(count, input_size, seed, mean, std, progress) -> list[np.ndarray]:
    images = []
    for index in range(count):
        rgb, _ = generate_sample(seed, "train", index, tuple(input_size))
        images.append(preprocess(rgb, input_size, mean, std))
        if progress is not None:
            progress(index + 1, count)
    return images
