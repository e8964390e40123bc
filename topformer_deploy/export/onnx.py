"""ONNX export (TorchScript exporter: node names keep the module path, e.g. ``/backbone/tpm/...``) + onnxsim."""
from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .offline import offline

#: Newest opset the TorchScript exporter writes; onnxruntime 1.32 runs it fully.
DEFAULT_OPSET = 20
PRECISIONS = ("fp32", "fp16")


class OnnxExportError(ValueError):
    """The exported or simplified ONNX graph is not what we need."""


def convert_onnx(module: nn.Module, example_inputs: tuple, path: str | os.PathLike,
                 input_names: list[str], output_names: list[str], opset: int | None = None,
                 simplify: bool = True, precision: str = "fp32") -> Path:
    """Export ``module`` to ONNX at ``path`` (static shapes), then simplify it with onnxsim (checked).

    ``precision="fp16"``: float16 weights and activations (onnxruntime's ``float16`` converter), float32
    graph inputs/outputs so callers feed the same arrays as for fp32.
    Raises OnnxExportError if onnxsim's numerical check fails or a BatchNormalization node remains.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} for ONNX, got {precision!r}")
    import onnx

    path = Path(path)
    opset = opset or DEFAULT_OPSET
    with offline(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(example_inputs), str(path), dynamo=False,
                          input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, do_constant_folding=True)
        model = onnx.load(str(path))
        if simplify:
            import onnxsim

            model, check_ok = onnxsim.simplify(model, check_n=2)
            if not check_ok:
                raise OnnxExportError("onnxsim's check failed: the simplified ONNX graph differs from the original")
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    batchnorms = onnx_op_histogram(model).get("BatchNormalization", 0)
    if batchnorms:
        raise OnnxExportError(f"{batchnorms} BatchNormalization nodes remain in the ONNX graph (fold the model first)")
    onnx.save(model, str(path))
    return path


def onnx_op_histogram(model_or_path) -> dict[str, int]:
    """Operator type -> count in an ONNX model (or file), most frequent first."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    return dict(collections.Counter(node.op_type for node in model.graph.node).most_common())
