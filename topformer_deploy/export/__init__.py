"""Export TopFormer to ONNX and TFLite, verified against PyTorch, described by a manifest.

Public API: :func:`export_model` (the whole job), the generic converters :func:`convert_onnx` and
:func:`convert_tflite` (any module with 4-D NCHW tensor inputs/outputs), :func:`verify_artifact`,
:func:`run_artifact`, manifests (:func:`read_manifest`, :func:`write_manifest`), graph statistics
(:func:`tflite_op_histogram`, :func:`onnx_op_histogram`) and :func:`random_live_model`.
The converters import lazily: importing this package does not import litert-torch or onnx.
"""
from .images import MEAN, STD, preprocess, sample_photos
from .manifest import manifest_path, read_manifest, write_manifest
from .pipeline import ExportResult, VerificationError, artifact_name, export_model, verification_inputs
from .prepare import OUTPUTS, SegmentationOutput, check_export_size, nearest_sizes
from .rewrite import NhwcAttention, rewrite_for_nhwc
from .verify import THRESHOLDS, ArtifactRunner, run_artifact, verify_artifact
from .weights import random_live_model


def convert_onnx(*args, **kwargs):
    """See :func:`topformer_deploy.export.onnx.convert_onnx`."""
    from .onnx import convert_onnx as _convert

    return _convert(*args, **kwargs)


def convert_tflite(*args, **kwargs):
    """See :func:`topformer_deploy.export.tflite.convert_tflite`."""
    from .tflite import convert_tflite as _convert

    return _convert(*args, **kwargs)


def tflite_op_histogram(path):
    """Operator name -> count of a ``.tflite`` file (see :mod:`topformer_deploy.export.tflite`)."""
    from .tflite import tflite_op_histogram as _histogram

    return _histogram(path)


def onnx_op_histogram(model_or_path):
    """Operator type -> count of an ONNX model or file."""
    from .onnx import onnx_op_histogram as _histogram

    return _histogram(model_or_path)


__all__ = ["MEAN", "OUTPUTS", "STD", "THRESHOLDS", "ArtifactRunner", "ExportResult", "NhwcAttention",
           "SegmentationOutput", "VerificationError", "artifact_name", "check_export_size", "convert_onnx",
           "convert_tflite", "export_model", "manifest_path", "nearest_sizes", "onnx_op_histogram",
           "preprocess", "random_live_model", "read_manifest", "rewrite_for_nhwc", "run_artifact",
           "sample_photos", "tflite_op_histogram", "verification_inputs", "verify_artifact", "write_manifest"]
