"""Full-integer int8 export (TFLite and ONNX) calibrated on real images, mixed precision per stage.

* TFLite: ``ROUTES`` holds the two litert-torch routes measured by ``benchmarks/int8_routes.py``:
  ``"pt2e"`` (PT2E quantizer on the exported PyTorch graph, then ``litert_torch.convert`` with its
  ``QuantConfig``) and ``"aeq"`` (ai-edge-quantizer's static int8 recipe applied to the fp32 ``.tflite``,
  calibrated by running it). :data:`TFLITE_ROUTE` (``"pt2e"``) is the one export uses. Measured on the
  trained demo model (Tiny, 256x256, 30 held-out images, 32 calibration images): PT2E mIoU 84.22 vs float
  83.99, argmax agreement 0.994, relative L2 error 0.034; ai-edge-quantizer 81.46 (-2.5 points), 0.966,
  0.185 - it also quantizes the attention's matmuls/softmax, which PT2E leaves float - and PT2E ran
  faster (1.24x vs 1.34x the fp32 median at 1 thread on the x86 dev host).
* ONNX: onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, int8 activations, MinMax) on the
  fp32 ONNX, with a ``CalibrationDataReader``. The calibration ranges are kept beside the artifact
  (``<artifact>.calibration.json``, onnxruntime's calibration cache) so stage artifacts can reuse them.

Both keep float input/output by default; ``int8_io=True`` makes the graph boundary int8 (the manifest
records the scale and zero point). ``keep_float`` names stages (tpm, sase, sim, head) left in float.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TopformerDeployError
from ..model.topformer import STAGES
from .manifest import write_manifest
from .offline import quiet_native_output
from .pipeline import (ExportResult, VerificationError, artifact_name, check_common_arguments,
                       output_directory, verification_inputs)
from .prepare import check_export_size, export_modules, fold_for_export
from .verify import ArtifactRunner, compare, from_artifact_layout, to_artifact_layout

ROUTES = ("pt2e", "aeq")
#: Chosen by benchmarks/int8_routes.py (measured reason in the module docstring).
TFLITE_ROUTE = "pt2e"
#: Module paths (inside the TopFormer) of each stage.
STAGE_MODULES = {"tpm": ("backbone.tpm",), "sase": ("backbone.ppa", "backbone.trans"),
                 "sim": ("backbone.SIM",), "head": ("decode_head",)}
#: TFLite tensor names carry the module path as ``<Class>_<attribute>``; ai-edge-quantizer matches these.
_TFLITE_STAGE_REGEX = {"tpm": r"TokenPyramidModule_tpm", "sase": r"PyramidPoolAgg_ppa|BasicLayer_trans",
                       "sim": r"InjectionMultiSum_\d", "head": r"SimpleHead_decode_head"}
#: Verification of an int8 artifact against the float PyTorch model: fraction of 1/8-scale pixels whose
#: argmax agrees. The trained demo model keeps 0.994 (TFLite PT2E and ONNX); a broken quantization (int8
#: softmax on random weights, wrong ranges or layout) drops far below (0.11 measured). Enforced only for
#: checkpoint weights: random weights give near-tied logits everywhere (0.67 measured at 512x512), so
#: their figures are recorded with ``"enforced": false``.
INT8_MIN_AGREEMENT = 0.90


class QuantizationError(TopformerDeployError):
    """Quantization could not be done as asked (bad stage name, no calibration data, converter failure)."""


def check_keep_float(keep_float: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated stage names in data-flow order."""
    unknown = [s for s in keep_float if s not in STAGES]
    if unknown:
        raise QuantizationError(f"unknown stage {', '.join(map(repr, unknown))} for keep_float: "
                                f"choose from {', '.join(STAGES)}")
    if set(keep_float) == set(STAGES):
        raise QuantizationError("keep_float lists every stage: nothing would be quantized (export fp32 instead)")
    return tuple(s for s in STAGES if s in keep_float)


# ---------------------------------------------------------------------------------------------- ONNX
def _as_tuple(item) -> tuple:
    return tuple(item) if isinstance(item, (list, tuple)) else (item,)


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
            arrays = _as_tuple(samples[self._index - 1])
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


# ---------------------------------------------------------------------------------------------- TFLite
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
            return model

    return StageSkippingQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def annotate_tensor_adds(graph: torch.fx.GraphModule, config, keep: Callable[[object], bool]) -> int:
    """Annotate every float tensor + tensor ``add`` not yet annotated (the residual and injection adds) as int8.

    litert-torch's ``add`` annotator finds adds by ``source_fn_stack``, which ``torch.export`` no longer
    records, so without this the residual adds stay float between a DEQUANTIZE and a QUANTIZE (24 float ADDs,
    54 QUANTIZE/DEQUANTIZE ops in Tiny). Returns the number of adds annotated.
    """
    from litert_torch.quantize.pt2e_quantizer_utils import get_input_act_qspec, get_output_act_qspec
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    def is_float_tensor(arg) -> bool:
        return isinstance(arg, torch.fx.Node) and getattr(arg.meta.get("val"), "dtype", None) == torch.float32

    count = 0
    for node in graph.graph.nodes:
        if (node.op != "call_function" or node.target != torch.ops.aten.add.Tensor or not keep(node)
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
    example = tuple(torch.from_numpy(a) for a in _as_tuple(calibration[0]))
    graph = torch.export.export(module.eval(), example).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for index, item in enumerate(calibration, 1):
            prepared(*(torch.from_numpy(a) for a in _as_tuple(item)))
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

        example = tuple(torch.from_numpy(a) for a in _as_tuple(calibration[0]))
        with torch.no_grad():
            outputs = _as_tuple(converted(*example))
        wrapped = litert_torch.to_channel_last_io(converted, args=[i for i, x in enumerate(example) if x.ndim == 4],
                                                  outputs=[i for i, y in enumerate(outputs) if y.ndim == 4])
        example = tuple(x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x for x in example)
        edge = litert_torch.convert(wrapped, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(out_path))
    if not int8_io:
        tflite_float_io(out_path)
    return {"route": "pt2e", "per_channel": True, "activation_dtype": "int8", "weight_dtype": "int8",
            "int8_io": int8_io}


def tflite_float_io(path) -> None:
    """Give an int8-boundary ``.tflite`` float32 inputs/outputs in place: a QUANTIZE op after each int8 input
    and a DEQUANTIZE op before each int8 output, keeping the tensor names the signature exposes."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
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
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


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


# ---------------------------------------------------------------------------------------------- export
def export_int8(model: nn.Module, fmt: str, out_dir: str | os.PathLike, *, input_size=(512, 512),
                calibration: Sequence[np.ndarray], calibration_source: str = "unknown", output: str = "logits",
                keep_float: Sequence[str] = (), int8_io: bool = False, verify: bool = True,
                checkpoint: str | os.PathLike | None = None, weights: str = "checkpoint", route: str | None = None,
                min_agreement: float = INT8_MIN_AGREEMENT,
                progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the (unfolded) TopFormer ``model`` as a full-integer int8 ``fmt`` artifact in ``out_dir``.

    ``calibration`` are preprocessed NCHW batches (see :mod:`.calibration`); ``calibration_source`` is
    recorded. Conversion and quantization happen in a hidden temp folder; the artifact is verified against
    the float PyTorch model (argmax agreement >= ``min_agreement``) and only then moved into place.
    """
    from . import pipeline

    started = time.perf_counter()
    step = progress or (lambda name: None)
    input_size = (int(input_size[0]), int(input_size[1]))
    keep_float = check_keep_float(keep_float)
    route = _check_int8_arguments(fmt, output, weights, checkpoint, calibration, route)
    check_export_size(*input_size)
    out_dir = output_directory(out_dir)
    _check_calibration_shape(calibration, input_size)

    step("fold")
    module, reference = export_modules(fold_for_export(model), fmt, output, input_size)
    target = out_dir / int8_artifact_name(model.variant, input_size, output, fmt, keep_float)
    work = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=out_dir))
    try:
        fp32, int8 = work / f"fp32.{fmt}", work / f"int8.{fmt}"
        calib_tick = _calibration_progress(step)
        with quiet_native_output():  # converter banners and onnxsim/ORT chatter would corrupt --json
            cache = None
            if fmt == "onnx":
                step("convert")
                from .onnx import convert_onnx

                convert_onnx(module, (torch.from_numpy(calibration[0]),), fp32, [pipeline.INPUT_NAME],
                             [pipeline._output_name(output)])
                step("calibrate")
                cache = work / "calibration.json"
                info = quantize_onnx(fp32, int8, calibration, keep_float=keep_float, calibration_cache=cache,
                                     progress=calib_tick)
                info["io_quantization"] = onnx_int8_io(int8) if int8_io else None
            elif route == "aeq":
                step("convert")
                from .tflite import convert_tflite

                convert_tflite(module, (torch.from_numpy(calibration[0]),), fp32, precision="fp32", nhwc=True)
                step("calibrate")
                info, _ = quantize_tflite_aeq(fp32, int8, calibration, keep_float=keep_float, int8_io=int8_io,
                                              progress=calib_tick)
            else:
                step("calibrate")
                info = quantize_tflite_pt2e(module, int8, calibration, keep_float=keep_float, int8_io=int8_io,
                                            progress=calib_tick)
            if fmt == "tflite":
                info["io_quantization"] = tflite_io_quantization(int8) if int8_io else None
            verification = None
            if verify:
                step("verify")
                verification = verify_int8(int8, reference, verification_inputs(input_size), min_agreement,
                                           info.get("io_quantization"))
                verification["enforced"] = weights == "checkpoint"
                if verification["enforced"] and not verification["passed"]:
                    raise VerificationError(
                        f"int8 verification failed: argmax agreement {verification['argmax_agreement']:.4f} with the "
                        f"float model (needs >= {min_agreement}); no artifact was written")
        step("write")
        manifest = pipeline._manifest(int8, target, model, fmt, "int8", output, input_size, checkpoint, weights,
                                      verification, None)
        manifest["quantization"] = {
            **info, "calibration": {"source": str(calibration_source), "count": len(calibration)},
            "keep_float": list(keep_float), "int8_io": bool(int8_io),
            "calibration_ranges": f"{target.name}.calibration.json" if cache else None}
        _io_manifest(manifest, info.get("io_quantization"))
        if cache is not None:
            os.replace(cache, target.with_name(f"{target.name}.calibration.json"))
        os.replace(int8, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    return ExportResult(target, write_manifest(target, manifest), manifest)


def int8_artifact_name(variant: str, input_size: tuple[int, int], output: str, fmt: str,
                       keep_float: Sequence[str] = ()) -> str:
    """``topformer_tiny_512x512_int8_logits.onnx``; mixed precision adds ``_float-sase`` (stages in float)."""
    name = artifact_name(variant, input_size, "int8", output, fmt)
    if keep_float:
        stem, suffix = name.rsplit(".", 1)
        name = f"{stem}_float-{'-'.join(keep_float)}.{suffix}"
    return name


def tflite_io_quantization(path: str | os.PathLike) -> dict:
    """``{"input": {scale, zero_point} | None, "output": ...}`` of a ``.tflite``; None for a float side."""
    runner = ArtifactRunner(path)
    details = runner._runner.get_input_details(), runner._runner.get_output_details()
    first = [next(iter(d.values())) for d in details]
    return {key: ({"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}
                  if d["dtype"] == np.int8 else None)
            for key, d in zip(("input", "output"), first)}


def verify_int8(path: str | os.PathLike, reference: nn.Module, inputs_nchw: Sequence[np.ndarray],
                min_agreement: float = INT8_MIN_AGREEMENT, io_quantization: dict | None = None) -> dict:
    """Error figures of an int8 artifact against the float module; ``passed`` = agreement >= ``min_agreement``.

    ``io_quantization`` (int8 boundary) is read from the artifact when not given.
    """
    runner = ArtifactRunner(path)
    nhwc = runner.format == "tflite"
    io = io_quantization
    if io is None and runner.inputs()[0]["dtype"] == "int8":
        io = tflite_io_quantization(path) if nhwc else _onnx_io_params(path)
    references, actuals = [], []
    with torch.no_grad():
        for x in inputs_nchw:
            references.append(reference(torch.from_numpy(x)).numpy())
            feed = to_artifact_layout(x, nhwc)
            if io is not None and io.get("input"):
                feed = quantize_array(feed, **io["input"])
            out = runner.run([feed])[0]
            if io is not None and io.get("output") and out.dtype == np.int8 and references[-1].dtype.kind == "f":
                out = dequantize_array(out, **io["output"])
            actuals.append(from_artifact_layout(out, nhwc))
    figures = compare(references, actuals)
    figures["thresholds"] = {"argmax_agreement": min_agreement}
    agreement = figures["argmax_agreement"]
    figures["passed"] = agreement is None or agreement >= min_agreement
    return figures


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _onnx_io_params(path) -> dict:
    raise QuantizationError(f"{path}: int8 ONNX boundary without recorded scales; pass io_quantization")


def _io_manifest(manifest: dict, io: dict | None) -> None:
    """Record the scale/zero point of int8 boundary tensors (dtypes come from the artifact itself)."""
    if not io:
        return
    if io.get("input"):
        manifest["input"]["quantization"] = io["input"]
        if manifest.get("inputs"):
            manifest["inputs"][0]["quantization"] = io["input"]
    if io.get("output"):
        manifest["output"]["quantization"] = io["output"]


def _calibration_progress(step: Callable[[str], None]) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        step(f"calibrate {done}/{total}")

    return tick


def _check_int8_arguments(fmt, output, weights, checkpoint, calibration, route) -> str:
    check_common_arguments(fmt, output, weights, checkpoint)
    if not calibration:
        raise QuantizationError("int8 export needs calibration images (none given)")
    route = route or TFLITE_ROUTE
    if route not in ROUTES:
        raise QuantizationError(f"unknown int8 TFLite route {route!r}: choose {', '.join(ROUTES)}")
    return route


def _check_calibration_shape(calibration: Sequence[np.ndarray], input_size: tuple[int, int]) -> None:
    expected = (1, 3, *input_size)
    bad = [tuple(x.shape) for x in calibration if tuple(x.shape) != expected]
    if bad:
        raise QuantizationError(f"calibration batches must be NCHW {expected} (preprocessed at the export size), "
                                f"got {bad[0]}")


# ---------------------------------------------------------------------------------------------- stages
def stage_calibration_inputs(model: nn.Module, stage: str, calibration: Sequence[np.ndarray]) -> list[tuple]:
    """For each calibration image, the float tensors ``stage`` receives (the stages before it run in float).

    Both calibrations here are MinMax over the *float* activations (observers do not change values), so
    calibrating a stage artifact on these inputs gives exactly the ranges the whole-model calibration
    gave that stage's tensors: tpm -> (image,), sase -> the 4 tokens, sim -> (4 tokens, semantics),
    head -> the 3 SIM maps.
    """
    if stage not in STAGES:
        raise QuantizationError(f"unknown stage {stage!r}: choose from {', '.join(STAGES)}")
    folded = fold_for_export(model)
    inputs = []
    with torch.no_grad():
        for image in calibration:
            x = torch.from_numpy(image)
            tokens = folded.tpm(x)
            semantics = folded.sase(tokens) if stage in ("sim", "head") else None
            if stage == "tpm":
                item = (x,)
            elif stage == "sase":
                item = tuple(tokens)
            elif stage == "sim":
                item = (*tokens, semantics)
            else:
                item = tuple(folded.sim(tokens, semantics))
            inputs.append(tuple(t.numpy() for t in item))
    return inputs


# ---------------------------------------------------------------------------------------------- sensitivity
def stage_quantizer(checkpoint: str | os.PathLike, stage: str, *, fmt: str = "onnx",
                    out_dir: str | os.PathLike = "artifacts/sensitivity", input_size=(512, 512),
                    calibration: Sequence[np.ndarray] | None = None, calibration_source: str = "synthetic",
                    calibration_count: int = 32, progress: Callable[[str], None] | None = None) -> str:
    """The hook :func:`topformer_deploy.evaluate.stage_sensitivity` takes: ``stage_quantizer(checkpoint, stage)``
    exports an int8 artifact with only ``stage`` quantized (the three others kept float) and returns its path.

    Without ``calibration``, ``calibration_count`` images are loaded from ``calibration_source`` (a folder
    or "synthetic"). Bind the options with ``functools.partial`` to change them.
    """
    from ..model import load_checkpoint
    from .calibration import load_calibration_images

    input_size = (int(input_size[0]), int(input_size[1]))
    others = [s for s in STAGES if s != check_keep_float([stage])[0]]
    if calibration is None:
        calibration = load_calibration_images(calibration_source, calibration_count, input_size)
    result = export_int8(load_checkpoint(checkpoint), fmt, out_dir, input_size=input_size, calibration=calibration,
                         calibration_source=calibration_source, keep_float=others, checkpoint=checkpoint,
                         verify=False, progress=progress)
    return str(result.path)


def sensitivity_report(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, fmt: str = "onnx", *,
                       input_size=(512, 512), calibration: Sequence[np.ndarray], out_dir: str | os.PathLike,
                       calibration_source: str = "unknown", stages: Sequence[str] | None = None,
                       progress: Callable[[str], None] | None = None, **eval_kwargs) -> list[dict]:
    """Quantize one stage at a time (TPM, SASE, SIM, head) and report the mIoU drop each causes.

    One row per model (first the float checkpoint, then one per stage) as
    :func:`topformer_deploy.evaluate.evaluate_models` returns them, plus ``stage`` and ``miou_drop_points``.
    The per-stage artifacts are written to ``out_dir`` (named ``..._int8_logits_float-<others>.<fmt>``).
    """
    from ..evaluate import stage_sensitivity

    quantize_stage = functools.partial(stage_quantizer, fmt=fmt, out_dir=out_dir, input_size=input_size,
                                       calibration=calibration, calibration_source=calibration_source,
                                       progress=progress)
    return stage_sensitivity(str(checkpoint), data_dir, quantize_stage, stages=stages,
                             input_size=tuple(input_size), **eval_kwargs)
