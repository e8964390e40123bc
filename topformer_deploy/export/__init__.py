"""Export TopFormer to ONNX and TFLite, verified against PyTorch, described by a manifest.

Public API: :func:`export_model` (fp32 / fp16 / int8: the whole job), the generic converters
:func:`convert_onnx` and :func:`convert_tflite` (any module with 4-D NCHW tensor inputs/outputs),
:class:`ArtifactRunner`, :func:`run_artifact`, :func:`verify_artifact`, graph statistics and
:func:`load_calibration_images`. Names resolve lazily: importing this package imports no converter.
"""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "export_model": ".pipeline", "ExportResult": ".job", "VerificationError": ".job",
    "run_export_job": ".job", "verification_inputs": ".job",
    "convert_onnx": ".onnx", "onnx_op_histogram": ".onnx", "convert_tflite": ".tflite",
    "tflite_op_histogram": ".tflite", "ArtifactRunner": ".verify", "run_artifact": ".verify",
    "verify_artifact": ".verify", "THRESHOLDS": ".verify", "QuantizationError": ".int8_common",
    "load_calibration_images": ".calibration", "check_export_size": ".prepare",
})
