"""TFLite conversion with litert-torch (NHWC graph boundary, fp32 or fp16 weights) and graph statistics."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import torch
from torch import nn

from .offline import offline

PRECISIONS = ("fp32", "fp16")
#: TFLite model metadata that tells XNNPACK the model may run in FP16 (inference and accumulation): it then
#: does on cores with FP16 arithmetic (Cortex-A76, ARMv8.2 FP16) and stays FP32 elsewhere.
FP16_HINT = ("reduced_precision_support", b"fp16accfp16")


def convert_tflite(module: nn.Module, example_inputs: tuple, path: str | os.PathLike,
                   precision: str = "fp32", nhwc: bool = True) -> Path:
    """Convert ``module`` (NCHW tensors in and out) to a ``.tflite`` file at ``path``.

    With ``nhwc=True`` every 4-D input and output is NHWC at the graph boundary: the layout change is
    folded into the graph by the converter, so no TRANSPOSE remains at the inputs or outputs.
    ``precision="fp16"`` stores float16 weights and asks XNNPACK for FP16 inference where the core can
    (:data:`FP16_HINT`); elsewhere the weights are dequantized on load and it computes in FP32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} for TFLite, got {precision!r}")
    path = Path(path)
    module = module.eval()
    example_inputs = tuple(example_inputs)
    with offline():
        import litert_torch

        if nhwc:
            with torch.no_grad():
                outputs = module(*example_inputs)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            in_4d = [i for i, x in enumerate(example_inputs) if x.ndim == 4]
            out_4d = [i for i, y in enumerate(outputs) if y.ndim == 4]
            module = litert_torch.to_channel_last_io(module, args=in_4d, outputs=out_4d).eval()
            example_inputs = tuple(x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x
                                   for x in example_inputs)
        quant_config = None
        if precision == "fp16":
            from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

            quant_config = full_fp16_recipe()
        edge_model = litert_torch.convert(module, example_inputs, quant_config=quant_config)
        save_edge_model(edge_model, path)
    if precision == "fp16":
        add_metadata(path, *FP16_HINT)
    return path


def save_edge_model(edge_model, path: str | os.PathLike) -> None:
    """Write a converted LiteRT model with a plain Python write of its flatbuffer bytes.

    ``edge_model.export(path)`` writes from native code, which on a full disk aborts the whole process
    (``LLVM ERROR: IO failure on output stream: No space left on device``: no Python cleanup runs); the
    bytes are serialized in memory here, so a full disk is an OSError the export job reports.
    """
    Path(path).write_bytes(edge_model.model_content())


def read_model(path: str | os.PathLike):
    """(schema module, the ``ModelT`` object of a .tflite) with every buffer inline, ready to edit and write.

    litert-torch stores large constant buffers after the flatbuffer (``offset``/``size``); packing a
    ``ModelT`` again would drop them, so they are read into the buffers' ``data`` first.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    raw = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(raw, 0))
    for buffer in model.buffers or []:
        if getattr(buffer, "offset", 0) and buffer.offset > 1:
            buffer.data = np.frombuffer(raw[buffer.offset:buffer.offset + buffer.size], np.uint8).copy()
            buffer.offset = buffer.size = 0
    return schema, model


def write_model(model, path: str | os.PathLike) -> None:
    """Serialize a ``ModelT`` to ``path`` (as a .tflite: file identifier TFL3)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))


def add_metadata(path: str | os.PathLike, name: str, value: bytes) -> None:
    """Add (or replace) the model metadata entry ``name`` of a .tflite in place."""
    import numpy as np

    schema, model = read_model(path)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, np.uint8).copy()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes)
                                                           else m.name) != name] + [entry]
    write_model(model, path)


def tflite_metadata(path: str | os.PathLike) -> dict[str, bytes]:
    """The metadata entries of a .tflite: {name: value}."""
    _, model = read_model(path)
    return {(m.name.decode() if isinstance(m.name, bytes) else m.name): bytes(bytearray(model.buffers[m.buffer].data))
            for m in model.metadata or []}


def _model_view(path: str | os.PathLike):
    from ai_edge_litert import schema_py_generated as schema

    return schema, schema.Model.GetRootAs(Path(path).read_bytes(), 0)


def tflite_op_histogram(path: str | os.PathLike, output_dtype: str | None = None) -> dict[str, int]:
    """Operator name -> count over all subgraphs of a ``.tflite`` file, most frequent first.

    ``output_dtype`` (a TensorType name such as ``"FLOAT32"``) counts only the operators whose first output has
    that type: in an int8 graph, the float islands.
    """
    schema, model = _model_view(path)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    types = {name: value for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        codes.append(names.get(builtin, f"OP_{builtin}") if builtin != schema.BuiltinOperator.CUSTOM
                     else (code.CustomCode() or b"CUSTOM").decode())
    counts = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            if output_dtype is None or subgraph.Tensors(op.Outputs(0)).Type() == types[output_dtype]:
                counts[codes[op.OpcodeIndex()]] += 1
    return dict(counts.most_common())


def tflite_weight_dtypes(path: str | os.PathLike) -> dict[str, int]:
    """Element type name -> number of constant tensors (those with data in a buffer)."""
    schema, model = _model_view(path)
    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    counts = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0):
                counts[names.get(tensor.Type(), str(tensor.Type()))] += 1
    return dict(counts)
