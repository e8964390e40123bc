"""Accuracy of checkpoints and exported artifacts on a labelled folder: mIoU, pixel accuracy, agreement.

Metrics come from one confusion matrix per model accumulated over the whole folder (as mmseg does).
Every model sees the same images, preprocessed by :func:`topformer_deploy.images.preprocess` at its input
size; its class scores become class ids at the label size by a post-processing method of
:mod:`topformer_deploy.postprocess` - by default ``sparse``, which gives PyTorch's bilinear upsampling
(align_corners=False) + argmax bit for bit, in the arithmetic PyTorch uses on this machine.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..artifact import MEAN, STD, input_size_of, quantize_array, read_manifest, sha256_file
from ..errors import TopformerDeployError
from ..images import preprocess
from ..postprocess import POST_METHODS, class_map, torch_arithmetic
from .dataset import load_pair, read_dataset
from .metrics import confusion_matrix, prepare_labels, scores

@dataclass
class Segmenter:
    """Anything evaluated: a PyTorch checkpoint or an exported artifact, seen as image -> class map."""

    path: str
    format: str                      # "pytorch" | "onnx" | "tflite"
    precision: str                   # "fp32" | "fp16" | "int8"
    num_classes: int
    input_size: tuple[int, int] | None   # None = each image at its own size (checkpoints only)
    manifest: dict | None = None
    _model: object = field(default=None, repr=False)

    @property
    def semantics(self) -> str:
        """What the model outputs: "logits", or a class map made in the graph ("argmax", "argmax-full")."""
        return ((self.manifest or {}).get("output") or {}).get("semantics", "logits")

    def predict(self, image: np.ndarray, label_size: tuple[int, int],
                input_size: tuple[int, int] | None = None, post: str = "sparse") -> np.ndarray:
        """Class ids ``(H, W)`` at ``label_size`` for an RGB uint8 image (checkpoints: at ``input_size``), the
        logits turned into classes by the post-processing method ``post``."""
        return self.classes(self.output(image, input_size), label_size, post)

    def output(self, image: np.ndarray, input_size: tuple[int, int] | None = None) -> np.ndarray:
        """The model's output for an RGB uint8 image: NCHW float32 logits, or its class map."""
        size = input_size or self.input_size or image.shape[:2]
        spec = (self.manifest or {}).get("input", {})
        x = preprocess(image, size, spec.get("mean", MEAN), spec.get("std", STD))
        if self.format == "pytorch":
            import torch

            with torch.no_grad():
                return self._model(torch.from_numpy(x)).numpy()
        spec, out = self.manifest["input"], self.manifest["output"]
        if spec.get("layout") == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        if spec.get("dtype", "float32") in ("int8", "uint8"):  # --int8-io: quantize as the manifest says
            x = quantize_array(x, **spec["quantization"], dtype=spec["dtype"])
        (y,) = self._model.run([np.ascontiguousarray(x)])
        if self.semantics == "logits" and out.get("layout") == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        # int8 logits need no dequantization: argmax is unchanged by a positive scale and an offset
        return np.ascontiguousarray(y, np.float32) if self.semantics == "logits" else y

    def classes(self, y: np.ndarray, label_size: tuple[int, int], post: str = "sparse") -> np.ndarray:
        """:meth:`output` -> class ids at ``label_size`` (``post`` applies to logits)."""
        return _to_classes(y, self.semantics, label_size, post)


def _to_classes(y: np.ndarray, semantics: str, label_size: tuple[int, int], post: str = "sparse") -> np.ndarray:
    """Model output -> class ids at ``label_size``: logits by the post-processing method ``post`` (``sparse``
    is PyTorch's bilinear + argmax, as the official evaluation does it); class maps made in the graph are
    resized with nearest neighbour."""
    if semantics == "logits":
        size = (int(label_size[0]), int(label_size[1]))
        arithmetic = torch_arithmetic(y.shape[1], y.shape[2:], size)
        return class_map(y, size, post, arithmetic=arithmetic, dtype="int64")
    classes = np.asarray(y).reshape(y.shape[-2:]) if np.asarray(y).ndim > 2 else np.asarray(y)
    if classes.shape != tuple(label_size):
        classes = np.asarray(Image.fromarray(classes.astype(np.int32)).resize(label_size[::-1], Image.NEAREST))
    return classes.astype(np.int64)


def load_segmenter(path: str | os.PathLike, input_size: tuple[int, int] | None = None,
                   threads: int | None = 1) -> Segmenter:
    """A checkpoint (``.pth``/``.pt``) or an artifact (``.onnx``/``.tflite`` with its manifest)."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".onnx", ".tflite"):
        return _load_artifact(path, threads)
    from ..model import check_finite_weights, check_input_size, load_checkpoint

    if input_size is not None:
        try:
            check_input_size(*input_size)
        except ValueError as exc:
            raise TopformerDeployError(str(exc)) from exc
    model = load_checkpoint(path)
    check_finite_weights(model, path)
    return Segmenter(path, "pytorch", "fp32", model.num_classes, input_size, None, model)


def _load_artifact(path: str, threads: int | None = 1) -> Segmenter:
    """An exported artifact, fed as its manifest says (layout, size, dtype, mean/std)."""
    from ..export.native import quiet_native_output
    from ..export.verify import ArtifactRunner

    manifest = read_manifest(path)
    spec = manifest["input"]
    if manifest.get("stage", "full") != "full":
        raise TopformerDeployError(f"{path} is a '{manifest['stage']}' stage artifact: eval needs a full model")
    if spec.get("color_order", "RGB") != "RGB" or list(spec.get("value_range", [0, 255])) != [0, 255]:
        raise TopformerDeployError(f"{path}: eval feeds RGB pixels in [0, 255]; its manifest asks for "
                                   f"{spec.get('color_order')} in {spec.get('value_range')}")
    if spec.get("dtype") in ("int8", "uint8") and "quantization" not in spec:
        raise TopformerDeployError(f"{path}: {spec['dtype']} input but its manifest has no input quantization")
    shape = spec["shape"]
    size = input_size_of(manifest)
    try:
        with quiet_native_output(f"loading {path}"):  # the runtimes print banners (XNNPACK) on the first run
            runner = ArtifactRunner(path, threads)
            runner.run([np.zeros(shape, spec.get("dtype", "float32"))])
    except Exception as exc:  # onnxruntime / LiteRT raise their own types for a broken file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TopformerDeployError(f"cannot load {path}: {first}") from exc
    return Segmenter(path, manifest.get("format", Path(path).suffix[1:]), manifest.get("precision", "fp32"),
                     int(manifest["num_classes"]), (int(size[0]), int(size[1])), manifest, runner)


# ---------------------------------------------------------------------------------------------- evaluation
def label_convention(info: dict | None, ignore_index: int | None | str = "auto",
                     reduce_zero_label: bool | None = None) -> tuple[bool, int | None]:
    """(reduce_zero_label, ignore_index): explicit arguments win, then ``dataset.json``, then ADE20K's (True, 255)."""
    info = info or {}
    if reduce_zero_label is None:
        reduce_zero_label = bool(info.get("reduce_zero_label", True))
    if ignore_index == "auto":
        ignore_index = info.get("ignore_index", 255)
    return reduce_zero_label, ignore_index


def default_reference(paths: Sequence[str], segmenters: Sequence[Segmenter]) -> tuple[str | None, str | None]:
    """(the float PyTorch model agreement is measured against, why there is none).

    The first checkpoint given, else the checkpoint an artifact's manifest records - only if the file is
    there and its sha256 is the recorded one: a file of the same name that is not the export's checkpoint
    would measure agreement with another model. A relative path (older manifests) is looked up from the
    current directory, then from the artifact's.
    """
    for seg in segmenters:
        if seg.format == "pytorch":
            return seg.path, None
    note = None
    for seg in segmenters:
        entry = (seg.manifest or {}).get("checkpoint")
        if not isinstance(entry, dict) or not entry.get("path"):
            continue
        recorded = Path(entry["path"])
        candidates = [recorded] if recorded.is_absolute() else [recorded, Path(seg.path).parent / recorded]
        found = [c for c in candidates if c.is_file()]
        for candidate in found:
            if sha256_file(candidate) == entry.get("sha256"):
                return str(candidate), None
        name = Path(seg.path).name
        if found:
            note = note or f"{found[0]} is not the checkpoint {name} was exported from (its sha256 differs)"
        else:
            note = note or f"the checkpoint {name} was exported from ({entry['path']}) is not there"
    return None, note and f"{note}: no agreement column (pass --reference CHECKPOINT)"


def evaluate_models(models: Sequence[str], data_dir: str | os.PathLike, *, num_images: int | None = None,
                    ignore_index: int | None | str = "auto", reduce_zero_label: bool | None = None,
                    input_size: tuple[int, int] | None = None, reference: str | None = None,
                    skip_out_of_range: bool = False, threads: int | None = 1,
                    on_image: Callable[[int, int], None] | None = None,
                    post: Sequence[str] = ("sparse",)) -> list[dict]:
    """One row per model and post-processing method: mIoU, pixel accuracy, per-class IoU and pixel
    agreement with the float model's exact class map.

    ``input_size`` applies to checkpoints (artifacts use their manifest's size; default: each image's own
    size). ``reference`` is the float PyTorch checkpoint for agreement (default :func:`default_reference`;
    ``reference_note`` says why there is none); it runs at each model's input size, so agreement isolates
    conversion/quantization from resizing, and its logits become classes exactly (``sparse``). ``post``
    lists the methods of :mod:`topformer_deploy.postprocess` each logits model is scored with (a model whose
    graph makes the class map gets one row, post ``in-graph``). A label value that is neither a class of the
    models nor the ignore index is an error (the convention is probably wrong), unless ``skip_out_of_range``:
    then such pixels are left out and counted (``out_of_range_pixels``). ``threads`` is used by PyTorch and
    the runtimes alike (1 by default: on a busy machine more threads can be several times slower).
    ``on_image(done, total)`` reports progress.
    """
    import torch

    unknown = [m for m in post if m not in POST_METHODS]
    if unknown or not post:
        raise TopformerDeployError(f"unknown post-processing method {(unknown or [''])[0]!r}: "
                                   f"use {', '.join(POST_METHODS)}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _evaluate(models, data_dir, num_images, ignore_index, reduce_zero_label, input_size, reference,
                         skip_out_of_range, threads, on_image, tuple(post))
    finally:
        torch.set_num_threads(previous)


def _evaluate(models, data_dir, num_images, ignore_index, reduce_zero_label, input_size, reference,
              skip_out_of_range, threads, on_image, post) -> list[dict]:
    if not models:
        raise TopformerDeployError("give at least one model (checkpoint or exported artifact)")
    pairs, info = read_dataset(data_dir, num_images)
    reduce, ignore = label_convention(info, ignore_index, reduce_zero_label)
    segmenters = [load_segmenter(m, input_size, threads) for m in models]
    note = None
    if not reference:
        reference, note = default_reference(models, segmenters)
    ref = load_segmenter(reference, None, threads) if reference else None
    _check_classes(segmenters, info, reduce)
    classes = min(s.num_classes for s in segmenters)
    needed = _needed_size(segmenters)
    jobs = [(i, method) for i, seg in enumerate(segmenters)
            for method in (post if seg.semantics == "logits" else ("in-graph",))]
    confusions = [np.zeros((segmenters[i].num_classes,) * 2, np.int64) for i, _ in jobs]
    agree = np.zeros(len(jobs), np.int64)
    seconds = np.zeros(len(jobs))
    total_pixels = out_of_range = 0
    for done, (image_path, label_path) in enumerate(pairs, 1):
        image, raw_label = load_pair(image_path, label_path, needed)
        label = prepare_labels(raw_label, reduce, ignore)
        bad = label >= classes
        if bad.any():
            if not skip_out_of_range:
                raise TopformerDeployError(_out_of_range_message(label_path, raw_label[bad], classes, reduce, ignore))
            out_of_range += int(bad.sum())
            label = np.where(bad, -1, label)
        size = raw_label.shape
        ref_preds: dict = {}
        for i, seg in enumerate(segmenters):
            start = time.perf_counter()
            y = seg.output(image)
            network = time.perf_counter() - start
            key = seg.input_size or image.shape[:2]
            if ref is not None and key not in ref_preds:
                same = seg.format == "pytorch" and seg.path == ref.path
                ref_preds[key] = seg.classes(y, size) if same else ref.predict(image, size, key)
            for j, (owner, method) in enumerate(jobs):
                if owner != i:
                    continue
                start = time.perf_counter()
                pred = seg.classes(y, size, "sparse" if method == "in-graph" else method)
                seconds[j] += network + time.perf_counter() - start
                confusions[j] += confusion_matrix(pred, label, seg.num_classes)
                if ref is not None:
                    agree[j] += int(np.count_nonzero(ref_preds[key] == pred))
        total_pixels += raw_label.size
        if on_image:
            on_image(done, len(pairs))
    if not confusions[0].sum():
        raise TopformerDeployError(f"{data_dir}: no pixel to score: every label value is the ignore index "
                                   f"{ignore}{' (after reduce_zero_label)' if reduce else ''} or out of range")
    rows = []
    for j, (i, method) in enumerate(jobs):
        seg, result = segmenters[i], scores(confusions[j])
        rows.append({"model": seg.path, "name": Path(seg.path).name, "format": seg.format,
                     "precision": seg.precision,
                     "input_size": list(seg.input_size) if seg.input_size else "native",
                     "output": seg.semantics, "post": method,
                     "images": len(pairs), "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"],
                     "agreement": float(agree[j] / total_pixels) if ref is not None else None,
                     "reference": reference, "reference_note": note, "per_class_iou": result["per_class_iou"],
                     "classes": (info or {}).get("classes") if not reduce else None,
                     "ms_per_image": 1000 * seconds[j] / len(pairs), "threads": threads,
                     "reduce_zero_label": reduce, "ignore_index": ignore, "pixels": result["pixels"],
                     "out_of_range_pixels": out_of_range})
    return rows


def _needed_size(segmenters: Sequence[Segmenter]) -> tuple[int, int] | None:
    """The largest input size the models run at (the reference runs at theirs): images can be decoded down
    to it; None when one runs at each image's own size."""
    sizes = [s.input_size for s in segmenters]
    if any(size is None for size in sizes):
        return None
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def _out_of_range_message(label_path: Path, values: np.ndarray, classes: int, reduce: bool, ignore) -> str:
    found = ", ".join(str(v) for v in np.unique(values)[:5]) + (", ..." if len(np.unique(values)) > 5 else "")
    return (f"{label_path}: {values.size} pixels have label values outside the models' {classes} classes "
            f"(0..{classes - 1}) that are not the ignore index (raw values {found}; reduce_zero_label={reduce}, "
            f"ignore_index={ignore}): check --reduce-zero-label / --ignore-index, or pass "
            "--skip-out-of-range-labels to leave them out (counted)")


def _check_classes(segmenters: Sequence[Segmenter], info: dict | None, reduce: bool) -> None:
    if not info or "num_classes" not in info:
        return
    expected = int(info["num_classes"]) - (1 if reduce else 0)
    for seg in segmenters:
        if seg.num_classes != expected:
            raise TopformerDeployError(f"{seg.path} predicts {seg.num_classes} classes but the dataset has "
                                       f"{expected} (check --reduce-zero-label / --ignore-index)")
