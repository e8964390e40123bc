"""ONNX int8: onnxruntime's static QDQ quantization (per-channel int8 weights, int8 activations, MinMax)
with a calibration cache, per-stage exclusion, and an optional int8 graph boundary."""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..model.stages import STAGE_MODULES
from .int8_common import QuantizationError, as_tuple, check_keep_float


def _reader(samples: Sequence, input_names: Sequence[str], progress: Callable[[int, int], None] | None):
    """An onnxruntime ``CalibrationDataReader`` feeding the samples one by one (an array, or a tuple of
    arrays in input order for a multi-input graph)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._index = 0

        def get_next(self):
            if self._index >= len(samples):
                return None
            self._index += 1
            if progress is not None:
                progress(self._index, len(samples))
            arrays = as_tuple(samples[self._index - 1])
            return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(input_names, arrays)}

        def __len__(self):
            return len(samples)

    return _Reader()


def onnx_stage_nodes(model_path: str | os.PathLike, stages: Sequence[str]) -> list[str]:
    """Names of the ONNX nodes that belong to ``stages`` (by module path, e.g. ``/backbone/tpm/...``)."""
    import onnx

    prefixes = [p.replace(".", "/") for s in stages for p in STAGE_MODULES[s]]
    if not prefixes:
        return []
    pattern = re.compile(r"^(?:/[^/]+)*?/(?:" + "|".join(map(re.escape, prefixes)) + r")(?:/|$)")
    return [n.name for n in onnx.load(str(model_path)).graph.node if pattern.match(n.name)]


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: Sequence[np.ndarray], *,
                  keep_float: Sequence[str] = (), per_channel: bool = True,
                  calibration_cache: str | os.PathLike | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Static QDQ int8 quantization of an fp32 ONNX file; returns what was done (for the manifest).

    ``calibration`` items are NCHW arrays, or tuples of arrays in graph-input order (stage graphs).

    With ``calibration_cache`` an existing cache (ranges by tensor name) is reused instead of calibrating,
    and a missing one is written - so a stage cut from the same graph gets the same ranges.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    keep_float = check_keep_float(keep_float)
    input_names = [i.name for i in onnx.load(str(fp32_path)).graph.input]
    excluded = onnx_stage_nodes(fp32_path, keep_float)
    with tempfile.TemporaryDirectory(prefix="topformer-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True)
        quantize_static(str(prepared), str(out_path), _reader(calibration, input_names, progress),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded or None,
                        calibration_cache_path=str(calibration_cache) if calibration_cache else None)
    return {"route": "onnxruntime.quantize_static", "format": "QDQ", "calibrate_method": "MinMax",
            "per_channel": per_channel, "activation_dtype": "int8", "weight_dtype": "int8",
            "excluded_nodes": len(excluded)}


def onnx_int8_io(path: str | os.PathLike) -> dict:
    """Make the graph boundary int8 in place: drop the input QuantizeLinear and the output DequantizeLinear.

    Returns ``{"input": {scale, zero_point}, "output": {scale, zero_point}}`` (real = scale * (q - zp)).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    values = {**consts, **inits}
    params = {}
    graph_in, graph_out = graph.input[0], graph.output[0]
    quant = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph_in.name]
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == graph_out.name]
    if len(quant) != 1 or len(dequant) != 1:
        raise QuantizationError("cannot make the ONNX boundary int8: the input is not quantized by exactly one "
                                "QuantizeLinear or the output is not produced by a DequantizeLinear")
    for key, node, name in (("input", quant[0], graph_in.name), ("output", dequant[0], graph_out.name)):
        params[key] = {"scale": float(values[node.input[1]]), "zero_point": int(values[node.input[2]])}
    q_out = quant[0].output[0]
    for node in graph.node:  # consumers of the quantized input read the (now int8) graph input
        for i, name in enumerate(node.input):
            if name == q_out:
                node.input[i] = graph_in.name
    dq_in = dequant[0].input[0]
    graph.node.remove(quant[0])
    graph.node.remove(dequant[0])
    for node in graph.node:  # the last quantized tensor becomes the graph output, under the output's name
        for i, name in enumerate(node.output):
            if name == dq_in:
                node.output[i] = graph_out.name
        for i, name in enumerate(node.input):
            if name == dq_in:
                node.input[i] = graph_out.name
    graph_in.type.tensor_type.elem_type = onnx.TensorProto.INT8
    graph_out.type.tensor_type.elem_type = onnx.TensorProto.INT8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return params


def onnx_io_params(path) -> dict:
    raise QuantizationError(f"{path}: int8 ONNX boundary without recorded scales; pass io_quantization")
