"""int8 export: real onnxruntime / ai-edge-quantizer quantization of TopFormer-Tiny at 64x64, calibrated on a
folder of images, checked in the artifacts themselves (QDQ + per-channel axes, int8 TFLite tensors/ops)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from topformer_deploy.artifact import artifact_name, dequantize_array, quantize_array, read_manifest
from topformer_deploy.data import generate_sample
from topformer_deploy.export.calibration import load_calibration_images
from topformer_deploy.export.int8_common import QuantizationError, check_keep_float
from topformer_deploy.export.int8_onnx import onnx_stage_nodes
from topformer_deploy.export.quantize import TFLITE_ROUTE, export_int8
from topformer_deploy.export.verify import ArtifactRunner
from topformer_deploy.model import load_checkpoint

SIZE = (64, 64)


@pytest.fixture(scope="session")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def calibration(tmp_path_factory):
    """Calibration from a folder of 6 synthetic photos (jpg/png, other sizes) plus a corrupt file."""
    folder = tmp_path_factory.mktemp("calib")
    for index in range(6):
        rgb, _ = generate_sample(0, "train", index, (96, 80))
        Image.fromarray(rgb).save(folder / f"img{index}.{'jpg' if index % 2 else 'png'}")
    (folder / "corrupt.jpg").write_bytes(b"not an image")
    said = []
    images = load_calibration_images(folder, 16, SIZE, warn=said.append)
    assert len(said) == 2 and "corrupt.jpg" in said[0] and "only 6 usable" in said[1] and len(images) == 6
    return images


@pytest.fixture(scope="session")
def onnx_int8(model, calibration, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_int8")
    return export_int8(model, "onnx", out, input_size=SIZE, calibration=calibration, calibration_source="folder",
                       checkpoint=tiny_checkpoint)


@pytest.fixture(scope="session")
def tflite_int8(model, calibration, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite_int8")
    return export_int8(model, "tflite", out, input_size=SIZE, calibration=calibration,
                       calibration_source="folder", checkpoint=tiny_checkpoint)


def _reference_logits(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------------------------------------- ONNX
def test_onnx_int8_is_qdq_with_per_channel_int8_weights(onnx_int8):
    graph = onnx.load(str(onnx_int8.path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 40
    inits = {t.name: t for t in graph.initializer}
    producers = {n.output[0]: n for n in graph.node}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    per_channel = 0
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear", f"{conv.name} weight is not dequantized int8"
        weight, scale = (numpy_helper.to_array(inits[name]) for name in dq.input[:2])
        assert weight.dtype == np.int8
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        if scale.ndim == 1 and scale.size == weight.shape[0] > 1:
            assert axis == 0
            per_channel += 1
    assert per_channel == len([c for c in convs if numpy_helper.to_array(
        inits[producers[c.input[1]].input[0]]).shape[0] > 1])


def test_onnx_int8_manifest_and_verification(onnx_int8):
    manifest = read_manifest(onnx_int8.path)
    assert manifest["precision"] == "int8" and manifest["format"] == "onnx"
    assert manifest["input"]["dtype"] == "float32" and manifest["output"]["dtype"] == "float32"
    q = manifest["quantization"]
    assert q["per_channel"] and q["activation_dtype"] == q["weight_dtype"] == "int8"
    assert q["calibration"] == {"source": "folder", "count": 6} and q["keep_float"] == [] and not q["int8_io"]
    v = manifest["verification"]
    assert v["passed"] and v["argmax_agreement"] >= 0.9 and 0 < v["rel_l2_error"] < 0.2
    ranges = onnx_int8.path.with_name(q["calibration_ranges"])
    assert ranges.is_file() and "/backbone/tpm" in ranges.read_text()
    assert sorted(p.name for p in onnx_int8.path.parent.iterdir()) == sorted(
        [onnx_int8.path.name, onnx_int8.manifest_path.name, ranges.name])  # no temp folder left


def test_onnx_keep_float_leaves_the_stage_float(model, calibration, tmp_path):
    result = export_int8(model, "onnx", tmp_path, input_size=SIZE, calibration=calibration, keep_float=["sase"],
                         weights="random", int8_io=True)
    assert result.path.name == artifact_name("tiny", SIZE, "int8", "logits", "onnx", ("sase",))
    graph = onnx.load(str(result.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name for t in graph.initializer}
    trans_convs = [n for n in graph.node if n.op_type == "Conv" and "/backbone/trans/" in n.name]
    tpm_convs = [n for n in graph.node if n.op_type == "Conv" and "/backbone/tpm/" in n.name]
    assert trans_convs and tpm_convs
    assert all(c.input[1] in inits for c in trans_convs), "SASE convs must keep float weights"
    assert all(producers[c.input[1]].op_type == "DequantizeLinear" for c in tpm_convs)
    assert set(onnx_stage_nodes(result.path, ["sase"])) >= {c.name for c in trans_convs}
    # int8 boundary: the graph takes and returns int8, scales in the manifest
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    manifest = result.manifest
    assert manifest["input"]["dtype"] == manifest["output"]["dtype"] == "int8"
    x = calibration[0]
    q_in, q_out = manifest["input"]["quantization"], manifest["output"]["quantization"]
    out = ArtifactRunner(result.path).run([quantize_array(x, **q_in)])[0]
    assert out.dtype == np.int8
    logits = dequantize_array(out, **q_out)
    ref = _reference_logits(model, x)
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_bad_keep_float_and_missing_calibration(model, tmp_path):
    with pytest.raises(QuantizationError, match="unknown stage 'neck'"):
        check_keep_float(["neck"])
    with pytest.raises(QuantizationError, match="nothing would be quantized"):
        check_keep_float(["tpm", "sase", "sim", "head"])
    with pytest.raises(QuantizationError, match="calibration"):
        export_int8(model, "onnx", tmp_path, input_size=SIZE, calibration=[], weights="random")
    with pytest.raises(QuantizationError, match="NCHW"):
        export_int8(model, "onnx", tmp_path, input_size=SIZE, calibration=[np.zeros((1, 3, 32, 32), np.float32)],
                    weights="random")
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_leaves_nothing(model, calibration, tiny_checkpoint, tmp_path):
    from topformer_deploy.export import VerificationError

    with pytest.raises(VerificationError, match="agreement"):
        export_int8(model, "onnx", tmp_path, input_size=SIZE, calibration=calibration[:2],
                    checkpoint=tiny_checkpoint, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_random_weights_record_but_do_not_enforce_the_threshold(model, calibration, tmp_path):
    result = export_int8(model, "onnx", tmp_path, input_size=SIZE, calibration=calibration[:2], weights="random",
                         min_agreement=1.01)
    v = result.manifest["verification"]
    assert not v["passed"] and not v["enforced"] and v["argmax_agreement"] is not None
    assert result.path.is_file()


# ---------------------------------------------------------------------------------------------- TFLite
def _tflite_tensor_types(path):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        tensors = [graph.Tensors(op.Inputs(j)) for j in range(op.InputsLength()) if op.Inputs(j) >= 0]
        result.append((name, [(t.Name().decode(), names[t.Type()]) for t in tensors]))
    return result


@pytest.mark.slow
def test_tflite_int8_has_int8_convs_and_float_boundary(tflite_int8):
    ops = _tflite_tensor_types(tflite_int8.path)
    convs = [inputs for name, inputs in ops if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) > 40
    assert all(inputs[0][1] == "INT8" and inputs[1][1] == "INT8" for inputs in convs)
    names = [name for name, _ in ops]
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    # the residual / injection adds run int8 too (no DEQUANTIZE -> float ADD -> QUANTIZE islands around them);
    # only h_sigmoid's scalar "+ 3" adds stay float
    adds = [inputs for name, inputs in ops if name == "ADD"]
    int8_adds = [a for a in adds if a[0][1] == a[1][1] == "INT8"]
    # 18 tensor+tensor adds: 5 TPM residuals, 8 in the transformer blocks, 3 in SIM, 2 in the head
    assert len(int8_adds) >= 18 and len(adds) - len(int8_adds) <= 3, adds
    manifest = read_manifest(tflite_int8.path)
    assert manifest["precision"] == "int8" and manifest["quantization"]["route"] == TFLITE_ROUTE
    assert manifest["input"]["dtype"] == "float32" and manifest["input"]["shape"] == [1, *SIZE, 3]
    v = manifest["verification"]
    assert v["passed"] and v["argmax_agreement"] >= 0.9


@pytest.mark.slow
def test_tflite_keep_float_and_int8_io(model, calibration, tiny_checkpoint, tmp_path):
    """keep_float=["head"]: the classifier convs stay float, the TPM convs are int8; int8_io: int8 boundary."""
    result = export_int8(model, "tflite", tmp_path, input_size=SIZE, calibration=calibration, keep_float=["head"],
                         int8_io=True, checkpoint=tiny_checkpoint)
    convs = [inputs for name, inputs in _tflite_tensor_types(result.path) if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs[0][1][1] == "INT8", "the stem conv (TPM) must be int8"
    assert convs[-1][1][1] == "FLOAT32", "the last conv (head's conv_seg) must keep float weights"
    floats = [c for c in convs if c[1][1] == "FLOAT32"]
    assert 2 <= len(floats) <= 4  # the head: linear_fuse + conv_seg (the rest of the net is int8)
    manifest = result.manifest
    assert manifest["quantization"]["keep_float"] == ["head"]
    assert manifest["input"]["dtype"] == "int8" and manifest["input"]["quantization"]["scale"] > 0
    runner = ArtifactRunner(result.path)
    assert runner.inputs()[0]["dtype"] == "int8"
    assert manifest["verification"]["passed"] and manifest["verification"]["enforced"]


# ---------------------------------------------------------------------------------------------- sensitivity
def test_sensitivity_quantizes_one_stage_and_reports_the_drop(calibration, tmp_path):
    from topformer_deploy.data import NUM_CLASSES, write_dataset
    from topformer_deploy.model import random_live_model
    from topformer_deploy.eval.sensitivity import sensitivity_report

    checkpoint = tmp_path / "live.pth"
    torch.save({"state_dict": random_live_model("tiny", NUM_CLASSES, seed=1).state_dict()}, checkpoint)
    data = write_dataset(tmp_path / "val", count=2, size=SIZE, split="val")
    rows = sensitivity_report(checkpoint, data, "onnx", input_size=SIZE, calibration=calibration[:3],
                              out_dir=tmp_path / "stages", stages=["head"])
    assert [r["stage"] for r in rows] == ["none (float)", "head"]
    assert rows[0]["miou_drop_points"] == 0.0
    head = rows[1]
    assert head["precision"] == "int8" and head["name"].endswith("_float-tpm-sase-sim.onnx")
    assert head["miou_drop_points"] == pytest.approx(100 * (rows[0]["miou"] - head["miou"]))
    assert 0.5 <= head["agreement"] <= 1.0
    quantization = read_manifest(head["model"])["quantization"]
    assert quantization["keep_float"] == ["tpm", "sase", "sim"]


def test_stage_inputs_are_the_float_activations(model, calibration):
    """What a stage receives (the breakdown calibrates stage artifacts on these) chains to the whole model."""
    from topformer_deploy.model.stage_modules import stage_inputs

    x = torch.from_numpy(calibration[0])
    tensors = stage_inputs(model, x)
    assert torch.equal(tensors["tpm"][0], x)
    assert len(tensors["sase"]) == 4 and len(tensors["sim"]) == 4 and len(tensors["head"]) == 3
    with torch.no_grad():
        logits = model.eval()(x)
        from_head = model.head(list(tensors["head"]))
    torch.testing.assert_close(from_head, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(tensors["post"][0], logits, atol=1e-5, rtol=0)
    with pytest.raises(QuantizationError, match="unknown stage"):
        check_keep_float(["neck"])
