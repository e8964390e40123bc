"""A small synthetic labelled dataset: textured shapes and regions on photos, with ADE20K-style folders.

Every sample is a pure function of ``(seed, split, index)``, so a dataset is reproducible byte for byte and
the splits never overlap. Label convention of this dataset: ``0`` = background (the photo, a real class that
is trained and scored), ``1..10`` = the shapes and regions in :data:`CLASSES`, ``255`` = ignore (not produced
by the generator). This differs from ADE20K, where ``0`` means "ignore" and is removed with
``reduce_zero_label``; ``dataset.json`` written beside the folders records which convention applies.

On disk the layout is ADE20K's: ``images/<name>.jpg`` (RGB) and ``annotations/<name>.png`` (class ids, mode L).
:func:`topformer_deploy.images.preprocess` turns an RGB image into the normalised NCHW batch every model
and artifact takes.
"""
from __future__ import annotations

import colorsys
import functools
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import TopformerDeployError
from .files import write_atomic, write_json

#: Class names by id. 0 is the background photo.
CLASSES = ("background", "disk", "square", "triangle", "ellipse", "star",
           "ring", "cross", "hexagon", "sky", "water")
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
SPLITS = {"train": 0, "val": 1, "test": 2}
DATASET_SCHEMA = "topformer-deploy/dataset"
GENERATOR_VERSION = 1

#: scikit-image sample photos that ship inside the wheel (no download); grey ones get a random tint.
_BACKGROUNDS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "coins",
                "moon", "brick", "grass", "gravel", "immunohistochemistry", "cell", "clock", "page", "text")
#: Each shape class has its own texture family and a typical hue (jittered), so it can be recognised
#: both from its outline and from its surface.
_HUES = {"disk": 0.0, "square": 0.08, "triangle": 0.16, "ellipse": 0.3, "star": 0.42,
         "ring": 0.75, "cross": 0.86, "hexagon": 0.55, "sky": 0.6, "water": 0.5}
_SHAPES = ("disk", "square", "triangle", "ellipse", "star", "ring", "cross", "hexagon")


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3:
        img = img[..., :3]
    return img.astype(np.uint8)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    photo = _photo(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))])
    ph, pw = photo.shape[:2]
    frac = rng.uniform(0.35, 1.0)
    ch, cw = max(8, int(ph * frac)), max(8, int(pw * frac))
    y0, x0 = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    crop = np.ascontiguousarray(photo[y0:y0 + ch, x0:x0 + cw])
    img = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR)).astype(np.float32)
    if img.ndim == 2:  # grey photo: tint it
        tint = np.asarray(_colour(rng.uniform(), rng.uniform(0.0, 0.5), 1.0)) / 255.0
        img = img[..., None] * tint
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return img * rng.uniform(0.7, 1.2)


def _colour(hue: float, sat: float, val: float) -> tuple[float, float, float]:
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(hue % 1.0, sat, val))


def _texture(name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A [0, 1] mixing map between a class's two colours."""
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period = rng.uniform(6, 12)
    if name == "square":  # stripes
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if name == "triangle":  # checkerboard
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if name == "ellipse":  # dots
        return ((np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2
                < (period / 3.5) ** 2).astype(np.float32)
    if name == "star":  # smooth gradient
        span = max(float(np.ptp(u)), 1.0)
        return ((u - u.min()) / span).astype(np.float32)
    if name == "cross":  # plaid
        return 0.5 * ((np.sin(2 * np.pi * u / period) > 0) + (np.sin(2 * np.pi * v / period) > 0))
    if name == "hexagon":  # fine grain
        return rng.random(yy.shape, dtype=np.float32)
    if name == "water":  # waves
        return 0.5 + 0.5 * np.sin(2 * np.pi * yy / rng.uniform(5, 9) + 2.0 * np.sin(xx / rng.uniform(8, 16)))
    if name == "sky":  # soft clouds
        coarse = rng.random((4, 4), dtype=np.float32)
        clouds = np.asarray(Image.fromarray(coarse).resize((yy.shape[1], yy.shape[0]), Image.BICUBIC))
        return np.clip(clouds, 0, 1) * 0.6
    return np.zeros(yy.shape, np.float32)  # disk, ring: flat


def _shape_mask(name: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    from skimage import draw

    h, w = size
    radius = rng.uniform(0.08, 0.22) * min(h, w)
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    rot = rng.uniform(0, 2 * np.pi)
    mask = np.zeros(size, bool)
    if name in ("disk", "ring"):
        mask[draw.disk((cy, cx), radius, shape=size)] = True
        if name == "ring":
            mask[draw.disk((cy, cx), radius * rng.uniform(0.45, 0.65), shape=size)] = False
        return mask
    if name == "ellipse":
        mask[draw.ellipse(cy, cx, radius, radius * rng.uniform(0.4, 0.65), shape=size, rotation=rot)] = True
        return mask
    if name == "star":
        t = rot + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    elif name == "cross":
        a = 0.33
        px = np.array([a, a, 1, 1, a, a, -a, -a, -1, -1, -a, -a])
        py = np.array([1, a, a, -a, -a, -1, -1, -a, -a, a, a, 1])
        t, r = np.arctan2(py, px) + rot, np.hypot(px, py) * radius
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6}[name]
        t = rot + np.arange(sides) * 2 * np.pi / sides
        r = np.full(sides, radius * (1.2 if sides == 3 else 1.0))
    rr, cc = draw.polygon(cy + r * np.sin(t), cx + r * np.cos(t), shape=size)
    mask[rr, cc] = True
    return mask


def _region_mask(name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h = yy.shape[0]
    edge = rng.uniform(0.2, 0.4) * h + rng.uniform(3, 10) * np.sin(xx[0] / rng.uniform(10, 30) + rng.uniform(0, 6))
    return yy < edge[None, :] if name == "sky" else yy > (h - edge[None, :])


def generate_sample(seed: int, split: str, index: int, size: tuple[int, int] = (256, 256)
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 ``(H, W, 3)``, label uint8 ``(H, W)``) pair, a pure function of its arguments."""
    if split not in SPLITS:
        raise TopformerDeployError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index, GENERATOR_VERSION])
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = _background(rng, size)
    label = np.zeros(size, np.uint8)
    layers = [name for name in ("sky", "water") if rng.random() < 0.35]
    layers += list(rng.choice(_SHAPES, size=rng.integers(2, 7)))
    for name in layers:
        mask = (_region_mask(name, rng, yy, xx) if name in ("sky", "water")
                else _shape_mask(str(name), rng, size))
        hue = _HUES[str(name)] + rng.uniform(-0.05, 0.05)
        c1 = np.asarray(_colour(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0)), np.float32)
        c2 = np.asarray(_colour(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.6)),
                        np.float32)
        mix = _texture(str(name), rng, yy, xx)[mask][:, None]
        image[mask] = c1 * (1 - mix) + c2 * mix
        label[mask] = CLASSES.index(str(name))
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


def iter_samples(count: int, size: tuple[int, int] = (256, 256), seed: int = 0, split: str = "train",
                 start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """In-memory samples ``start .. start + count - 1`` of a split (what training uses)."""
    for index in range(start, start + count):
        yield generate_sample(seed, split, index, size)


def dataset_info(count: int, size: tuple[int, int], seed: int, split: str) -> dict:
    """The ``dataset.json`` document describing a generated folder and its label convention."""
    return {"schema": DATASET_SCHEMA, "schema_version": 1, "generator_version": GENERATOR_VERSION,
            "split": split, "seed": seed, "count": count, "size": list(size),
            "classes": list(CLASSES), "num_classes": NUM_CLASSES,
            "ignore_index": IGNORE_INDEX, "reduce_zero_label": False}


def write_dataset(out_dir: str | os.PathLike, count: int, size: tuple[int, int] = (256, 256), seed: int = 0,
                  split: str = "val") -> Path:
    """Write ``count`` samples as ``images/*.jpg`` + ``annotations/*.png`` + ``dataset.json``; returns ``out_dir``.

    Files are written to temporary names and moved into place; ``dataset.json`` is written last, so a
    folder with it is complete.
    """
    if count < 1:
        raise TopformerDeployError(f"count must be >= 1, got {count}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(iter_samples(count, size, seed, split)):
        stem = f"{split}_{index:05d}"
        _save_atomic(Image.fromarray(image), out / "images" / f"{stem}.jpg", quality=95)
        _save_atomic(Image.fromarray(label, mode="L"), out / "annotations" / f"{stem}.png")
    write_json(out / "dataset.json", dataset_info(count, size, seed, split))
    return out


def _save_atomic(image: Image.Image, path: Path, **kwargs) -> None:
    buf = io.BytesIO()
    image.save(buf, format=Image.registered_extensions()[path.suffix.lower()], **kwargs)
    write_atomic(path, buf.getvalue())


def main(argv=None) -> int:
    """``python -m topformer_deploy.data OUT [--count N] [--size 256] [--seed 0] [--split val]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m topformer_deploy.data", description=main.__doc__)
    parser.add_argument("out", type=Path, help="output folder (images/, annotations/, dataset.json)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="square image size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=sorted(SPLITS), default="val")
    args = parser.parse_args(argv)
    try:
        write_dataset(args.out, args.count, (args.size, args.size), args.seed, args.split)
    except TopformerDeployError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {args.count} {args.split} images ({args.size}x{args.size}, seed {args.seed}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
