"""Accuracy: mIoU, pixel accuracy and agreement of checkpoints and artifacts, and int8 sensitivity per stage."""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "evaluate_models": ".evaluate", "load_segmenter": ".evaluate", "Segmenter": ".evaluate",
    "confusion_matrix": ".metrics", "scores": ".metrics", "prepare_labels": ".metrics",
    "read_dataset": ".dataset", "stage_sensitivity": ".sensitivity", "sensitivity_report": ".sensitivity",
})
