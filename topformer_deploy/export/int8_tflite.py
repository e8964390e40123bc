"""TFLite int8: the PT2E route (litert-torch's PT2E quantizer on the exported PyTorch graph, residual adds
included) and the ai-edge-quantizer route (static int8 recipe on the fp32 ``.tflite``), per-stage exclusion,
float or int8 graph boundary."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.stages import STAGE_MODULES
from .int8_common import as_tuple, check_keep_float
from .tflite import save_edge_model
from .verify import ArtifactRunner

#: TFLite tensor names carry the module path as ``<Class>_<attribute>``; ai-edge-quantizer matches these.
_TFLITE_STAGE_REGEX = {"tpm": r"TokenPyramidModule_tpm", "sase": r"PyramidPoolAgg_ppa|BasicLayer_trans",
                       "sim": r"InjectionMultiSum_\d", "head": r"SimpleHead_decode_head"}


def _stage_paths(keep_float: Sequence[str]) -> tuple[str, ...]:
    return tuple(p for s in keep_float for p in STAGE_MODULES[s])


def _in_modules(node, paths: Sequence[str]) -> bool:
    """True if ``node`` was traced inside one of the dotted module ``paths`` (any wrapper prefix allowed)."""
    for value in node.meta.get("nn_module_stack", {}).values():
        qualified = "." + str(value[0]).replace("L['self'].", "").replace("L__self__.", "") + "."
        if any(f".{p}." in qualified for p in paths):
            return True
    return False


def pt2e_quantizer(keep_float: Sequence[str] = ()):
    """litert-torch's PT2EQuantizer, static int8, per-channel weights, skipping the nodes of ``keep_float``."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    skip = _stage_paths(check_keep_float(keep_float))

    class StageSkippingQuantizer(PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model):
            keep = lambda n: not _in_modules(n, skip)  # noqa: E731
            self._annotate_all_static_patterns(model, self.global_config, keep)
            annotate_tensor_adds(model, self.global_config, keep)
            annotate_pooling_matmuls(model, self.global_config, keep)
            return model

    return StageSkippingQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def annotate_tensor_adds(graph: torch.fx.GraphModule, config, keep: Callable[[object], bool]) -> int:
    """Annotate every float tensor + tensor ``add`` not yet annotated (the residual and injection adds) as int8.

    litert-torch's ``add`` annotator finds adds by ``source_fn_stack``, which ``torch.export`` no longer
    records, so without this the residual adds stay float between a DEQUANTIZE and a QUANTIZE (24 float ADDs,
    54 QUANTIZE/DEQUANTIZE ops in Tiny). Returns the number of adds annotated.
    """
    return annotate_int8(graph, config, keep, torch.ops.aten.add.Tensor)


def annotate_pooling_matmuls(graph: torch.fx.GraphModule, config, keep: Callable[[object], bool]) -> int:
    """Annotate the pyramid pooling's matrix products (``backbone.ppa``, constant pooling matrix x tokens) as
    int8, both operands and the result.

    PT2E's annotators leave a plain ``matmul`` float (a DEQUANTIZE, a float BATCH_MATMUL, a QUANTIZE per
    product; the attention's are left so on purpose); the pooling's are averages of int8 tokens, so they are
    quantized like the convs around them. Returns the number of products annotated.
    """
    return annotate_int8(graph, config, lambda n: keep(n) and _in_modules(n, POOLING_PATHS),
                         torch.ops.aten.matmul.default)


#: Where the pooling matrices live (module paths; the SASE stage artifact keeps them too).
POOLING_PATHS = ("backbone.ppa",)


def annotate_int8(graph: torch.fx.GraphModule, config, keep: Callable[[object], bool], target) -> int:
    """Annotate every not yet annotated ``target`` node of two float tensors that ``keep`` accepts as int8:
    both inputs and the output get the static activation spec. Returns the number of nodes annotated."""
    from litert_torch.quantize.pt2e_quantizer_utils import get_input_act_qspec, get_output_act_qspec
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    def is_float_tensor(arg) -> bool:
        return isinstance(arg, torch.fx.Node) and getattr(arg.meta.get("val"), "dtype", None) == torch.float32

    count = 0
    for node in graph.graph.nodes:
        if (node.op != "call_function" or node.target != target or not keep(node)
                or "quantization_annotation" in node.meta or not all(map(is_float_tensor, node.args[:2]))):
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={arg: get_input_act_qspec(config) for arg in node.args[:2]},
            output_qspec=get_output_act_qspec(config), _annotated=True)
        count += 1
    return count


def pt2e_calibrate(module: nn.Module, calibration: Sequence[np.ndarray], keep_float: Sequence[str] = (),
                   progress: Callable[[int, int], None] | None = None):
    """(converted PT2E GraphModule with fixed int8 ranges, its quantizer) for an NCHW ``module``.

    ``calibration`` items are arrays, or tuples of arrays for a module with several inputs.

    The converted module holds every scale/zero point; its submodules' nodes can be re-exported as stage
    artifacts with exactly these ranges.
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer(keep_float)
    example = tuple(torch.from_numpy(a) for a in as_tuple(calibration[0]))
    graph = torch.export.export(module.eval(), example).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for index, item in enumerate(calibration, 1):
            prepared(*(torch.from_numpy(a) for a in as_tuple(item)))
            if progress is not None:
                progress(index, len(calibration))
    return move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False)), quantizer


def quantize_tflite_pt2e(module: nn.Module, out_path: str | os.PathLike, calibration: Sequence[np.ndarray], *,
                         keep_float: Sequence[str] = (), int8_io: bool = False, progress=None) -> dict:
    """PT2E route: calibrate the PyTorch graph, convert with ``QuantConfig(pt2e_quantizer=...)`` (NHWC I/O).

    Several inputs: ``calibration`` items are tuples (every 4-D input/output becomes NHWC).
    The converter makes the boundary int8 (it folds the input Quantize / output Dequantize into the I/O);
    unless ``int8_io``, :func:`tflite_float_io` then adds a QUANTIZE / DEQUANTIZE op at the boundary.
    """
    from .offline import offline

    converted, quantizer = pt2e_calibrate(module, calibration, keep_float, progress)
    with offline():
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig

        example = tuple(torch.from_numpy(a) for a in as_tuple(calibration[0]))
        with torch.no_grad():
            outputs = as_tuple(converted(*example))
        wrapped = litert_torch.to_channel_last_io(converted, args=[i for i, x in enumerate(example) if x.ndim == 4],
                                                  outputs=[i for i, y in enumerate(outputs) if y.ndim == 4])
        example = tuple(x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x for x in example)
        edge = litert_torch.convert(wrapped, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    save_edge_model(edge, out_path)
    if not int8_io:
        tflite_float_io(out_path)
    return {"route": "pt2e", "per_channel": True, "activation_dtype": "int8", "weight_dtype": "int8",
            "int8_io": int8_io}


def tflite_float_io(path) -> None:
    """Give an int8-boundary ``.tflite`` float32 inputs/outputs in place: a QUANTIZE op after each int8 input
    and a DEQUANTIZE op before each int8 output, keeping the tensor names the signature exposes."""
    from .tflite import read_model, write_model

    path = Path(path)
    schema, model = read_model(path)
    graph = model.subgraphs[0]

    def opcode(builtin: int) -> int:
        for index, code in enumerate(model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return index
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def float_twin(index: int) -> int:
        quantized = graph.tensors[index]
        twin = schema.TensorT()
        twin.name, twin.shape, twin.type = quantized.name, list(quantized.shape), schema.TensorType.FLOAT32
        twin.shapeSignature = quantized.shapeSignature
        buffer = schema.BufferT()
        model.buffers.append(buffer)
        twin.buffer = len(model.buffers) - 1
        quantized.name = quantized.name + b"_int8" if isinstance(quantized.name, bytes) else quantized.name + "_int8"
        graph.tensors.append(twin)
        return len(graph.tensors) - 1

    graph.inputs, graph.outputs = [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]
    renamed = {}
    for position, index in enumerate(graph.inputs):
        if graph.tensors[index].type != schema.TensorType.INT8:
            continue
        new = float_twin(index)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode(schema.BuiltinOperator.QUANTIZE), [new], [index]
        graph.operators.insert(0, op)
        graph.inputs[position] = new
        renamed[index] = new
    for position, index in enumerate(graph.outputs):
        if graph.tensors[index].type != schema.TensorType.INT8:
            continue
        new = float_twin(index)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode(schema.BuiltinOperator.DEQUANTIZE), [index], [new]
        graph.operators.append(op)
        graph.outputs[position] = new
        renamed[index] = new
    for signature in model.signatureDefs or []:
        for entry in list(signature.inputs or []) + list(signature.outputs or []):
            entry.tensorIndex = renamed.get(entry.tensorIndex, entry.tensorIndex)
    write_model(model, path)


def aeq_recipe(keep_float: Sequence[str] = (), int8_io: bool = False):
    """ai-edge-quantizer recipe: static int8 (per-channel weights) everywhere except ``keep_float`` stages;
    float graph boundary unless ``int8_io``."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8)
    for stage in check_keep_float(keep_float):
        manager.add_quantization_config(regex=f".*(?:{_TFLITE_STAGE_REGEX[stage]}).*",
                                        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
    if not int8_io:
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize_tflite_aeq(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                        calibration: Sequence[np.ndarray], *, keep_float: Sequence[str] = (), int8_io: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
    """ai-edge-quantizer route on an NHWC fp32 ``.tflite``; returns (what was done, calibration result).

    The calibration result maps tensor names to their min/max and can be passed back as
    ``previous_calibration_result`` to quantize a graph sharing those tensor names with the same ranges.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer as aeq

    signatures = Interpreter(model_path=str(fp32_path)).get_signature_list()
    signature = next(iter(signatures))
    input_name = signatures[signature]["inputs"][0]

    samples = [{input_name: np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)} for x in calibration]
    qt = aeq.Quantizer(str(fp32_path), aeq_recipe(keep_float, int8_io))
    if progress is not None:
        progress(0, len(samples))
    ranges = qt.calibrate({signature: samples}, num_threads=1)  # needs a list: it iterates more than once
    if progress is not None:
        progress(len(samples), len(samples))
    result = qt.quantize(ranges, enable_progress_report=False)
    Path(out_path).write_bytes(bytes(result.quantized_model))
    return ({"route": "aeq", "per_channel": True, "activation_dtype": "int8", "weight_dtype": "int8",
             "int8_io": int8_io}, ranges)


def tflite_io_quantization(path: str | os.PathLike) -> dict:
    """``{"input": {scale, zero_point} | None, "output": ...}`` of a ``.tflite``; None for a float side."""
    runner = ArtifactRunner(path)
    details = runner._runner.get_input_details(), runner._runner.get_output_details()
    first = [next(iter(d.values())) for d in details]
    return {key: ({"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}
                  if d["dtype"] == np.int8 else None)
            for key, d in zip(("input", "output"), first)}
