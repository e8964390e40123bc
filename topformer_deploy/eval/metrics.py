"""Segmentation metrics, as mmseg computes them: one confusion matrix per model over a whole folder."""
from __future__ import annotations

import numpy as np


def prepare_labels(label: np.ndarray, reduce_zero_label: bool = False, ignore_index: int | None = 255
                   ) -> np.ndarray:
    """Class ids as int64 with every ignored pixel set to -1.

    ``reduce_zero_label`` is ADE20K's convention (mmseg's ``reduce_zero_label``): 0 becomes 255 and every
    other id moves down by one. ``ignore_index`` (applied after that) is the value to skip; ``None`` scores
    every pixel.
    """
    label = np.asarray(label).astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, 255, label - 1)
        label[label == 254] = 255
    if ignore_index is not None:
        label = np.where(label == ignore_index, -1, label)
    return label


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts, rows = true class, columns = predicted class.

    ``label`` is from :func:`prepare_labels`: negative or ``>= num_classes`` pixels are skipped. A
    prediction outside ``[0, num_classes)`` is wrong for its row but lands in no column.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    label = np.asarray(label).astype(np.int64).ravel()
    if pred.shape != label.shape:
        raise ValueError(f"prediction has {pred.size} pixels, label {label.size}")
    keep = (label >= 0) & (label < num_classes)
    pred, label = pred[keep], label[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions outside [0, {num_classes})")
    counts = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion: np.ndarray) -> dict:
    """mIoU, pixel accuracy and per-class IoU from a confusion matrix.

    A class neither labelled nor predicted has IoU None and is left out of the mean (as mmseg does).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
    total = confusion.sum()
    present = ~np.isnan(iou)
    return {"miou": float(np.mean(iou[present])) if present.any() else float("nan"),
            "pixel_accuracy": float(intersection.sum() / total) if total else float("nan"),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
            "pixels": int(total)}
