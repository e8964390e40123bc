"""Export to ONNX and TFLite: real converters, real runtimes, small inputs (conversions shared per session)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from topformer_deploy import TopformerDeployError, fold_batchnorm, load_checkpoint
from topformer_deploy.cli import main
from topformer_deploy.artifact import read_manifest, sha256_file
from topformer_deploy.export import THRESHOLDS, VerificationError, export_model, run_artifact, tflite_op_histogram
from topformer_deploy.export.onnx import onnx_op_histogram
from topformer_deploy.export.prepare import fold_for_export
from topformer_deploy.export.rewrite import rewrite_for_nhwc
from topformer_deploy.export.tflite import tflite_weight_dtypes
from topformer_deploy.model.weights import random_live_model

SIZE = (128, 128)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def onnx_export(tiny_model, tiny_checkpoint, tmp_path_factory):
    return export_model(tiny_model, "onnx", tmp_path_factory.mktemp("onnx"), input_size=SIZE,
                        checkpoint=tiny_checkpoint)


@pytest.fixture(scope="session")
def tflite_export(tiny_model, tiny_checkpoint, tmp_path_factory):
    return export_model(tiny_model, "tflite", tmp_path_factory.mktemp("tflite"), input_size=SIZE,
                        checkpoint=tiny_checkpoint)


@pytest.fixture(scope="session")
def fp16_export(tiny_model, tiny_checkpoint, tmp_path_factory):
    return export_model(tiny_model, "tflite", tmp_path_factory.mktemp("fp16"), input_size=SIZE,
                        precision="fp16", checkpoint=tiny_checkpoint)


@pytest.fixture(scope="session")
def cli_random_export(tmp_path_factory):
    """The README's first command (random weights) at 128x128 (a 2x2 attention grid), through the CLI."""
    out = tmp_path_factory.mktemp("cli")
    result = CliRunner().invoke(main, ["export", "--variant", "tiny", "--to", "tflite", "--input-size", "128",
                                       "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout), result.stderr


# --- the exported artifacts -------------------------------------------------------------------------

@pytest.mark.parametrize("export_fixture", ["onnx_export", pytest.param("tflite_export", marks=pytest.mark.slow)])
def test_fp32_artifacts_verify_against_pytorch(export_fixture, request):
    result = request.getfixturevalue(export_fixture)
    figures = result.manifest["verification"]
    assert result.path.is_file() and result.manifest_path.is_file()
    assert figures["passed"] is True
    assert figures["inputs"] >= 5  # random batches + bundled photos
    assert figures["rel_l2_error"] <= 1e-4
    assert figures["argmax_agreement"] >= 0.999
    assert 0 < figures["max_abs_error"] < 1e-2


def test_onnx_has_no_batchnorm_and_keeps_module_paths(onnx_export):
    import onnx

    graph = onnx.load(str(onnx_export.path)).graph
    assert onnx_op_histogram(onnx_export.path).get("BatchNormalization", 0) == 0
    names = [node.name for node in graph.node]
    assert any(name.startswith("/backbone/tpm/") for name in names)
    assert any(name.startswith("/backbone/trans/transformer_blocks.0/attn") for name in names)
    assert any(name.startswith("/decode_head/") for name in names)
    assert onnx_export.manifest["input"]["shape"] == [1, 3, *SIZE]


@pytest.mark.slow
def test_tflite_is_nhwc_with_the_attention_and_few_data_moves(tflite_export):
    manifest = tflite_export.manifest
    assert manifest["input"]["shape"] == [1, *SIZE, 3] and manifest["input"]["layout"] == "NHWC"
    assert manifest["output"]["shape"] == [1, SIZE[0] // 8, SIZE[1] // 8, 150]
    histogram = tflite_op_histogram(tflite_export.path)
    assert histogram == manifest["op_histogram"]
    assert histogram["BATCH_MATMUL"] >= 8 and histogram["SOFTMAX"] == 4  # attention not folded away
    assert manifest["transpose_count"] <= 8  # at most 2 per transformer block
    assert manifest["pad_count"] <= 5  # only the zero PADs of the 5 strided convs (XNNPACK fuses them)


@pytest.mark.slow
def test_tflite_runs_on_nhwc_input_like_pytorch(tflite_export, tiny_model):
    image = np.random.default_rng(3).standard_normal((1, 3, *SIZE), dtype=np.float32)
    (logits,) = run_artifact(tflite_export.path, [image.transpose(0, 2, 3, 1).copy()])
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(image)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_manifest_describes_the_artifact(tflite_export, tiny_checkpoint):
    manifest = read_manifest(tflite_export.path)
    assert manifest["schema"] == "topformer-deploy/manifest" and manifest["schema_version"] == 1
    assert manifest["artifact"] == "topformer_tiny_128x128_fp32_logits.tflite" == tflite_export.path.name
    assert (manifest["variant"], manifest["num_classes"], manifest["stage"]) == ("tiny", 150, "full")
    assert manifest["sha256"] == sha256_file(tflite_export.path)
    assert manifest["size_bytes"] == tflite_export.path.stat().st_size
    assert manifest["checkpoint"] == {"path": str(tiny_checkpoint), "sha256": sha256_file(tiny_checkpoint)}
    assert manifest["weights"] == "checkpoint"
    assert manifest["input"]["mean"] == [123.675, 116.28, 103.53] and manifest["input"]["color_order"] == "RGB"
    assert manifest["output"]["semantics"] == "logits" and manifest["output"]["scale"] == "1/8"
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["litert_torch"]
    assert manifest["export_seconds"] > 0


@pytest.mark.parametrize("export_fixture", ["onnx_export", pytest.param("tflite_export", marks=pytest.mark.slow)])
def test_no_temp_files_left_beside_artifacts(export_fixture, request):
    result = request.getfixturevalue(export_fixture)
    assert sorted(p.name for p in result.path.parent.iterdir()) == [result.path.name, result.manifest_path.name]


@pytest.mark.slow
def test_cli_random_weights_keep_the_attention(cli_random_export):
    manifest, stderr = cli_random_export
    assert "random weights" in stderr
    assert manifest["weights"] == "random" and manifest["checkpoint"] == "random"
    assert manifest["artifact"] == "topformer_tiny_128x128_fp32_logits.tflite"
    assert manifest["verification"]["passed"] and manifest["verification"]["rel_l2_error"] <= 1e-4
    histogram = manifest["op_histogram"]
    assert histogram.get("BATCH_MATMUL", 0) >= 8 and histogram.get("SOFTMAX", 0) == 4  # not folded away
    assert manifest["transpose_count"] <= 8


@pytest.mark.slow
def test_fp16_stores_float16_weights(fp16_export):
    manifest = fp16_export.manifest
    assert manifest["precision"] == "fp16" and fp16_export.path.name.endswith("_fp16_logits.tflite")
    assert manifest["verification"]["passed"] and manifest["verification"]["argmax_agreement"] >= 0.99
    dtypes = tflite_weight_dtypes(fp16_export.path)
    histogram = manifest["op_histogram"]
    convs = histogram["CONV_2D"] + histogram["DEPTHWISE_CONV_2D"]
    assert dtypes.get("FLOAT16", 0) >= convs  # every conv weight is stored as float16 (biases stay float32)
    assert histogram.get("DEQUANTIZE", 0) >= convs
    from topformer_deploy.export.tflite import FP16_HINT, tflite_metadata

    assert tflite_metadata(fp16_export.path)[FP16_HINT[0]] == FP16_HINT[1]   # XNNPACK may compute in FP16
    assert manifest["size_bytes"] < 4_000_000  # the fp32 artifact is ~5.6 MB


def test_onnx_fp16_computes_in_float16_with_float32_io(tiny_model, tiny_checkpoint, tmp_path):
    import onnx

    result = export_model(tiny_model, "onnx", tmp_path, input_size=SIZE, precision="fp16", checkpoint=tiny_checkpoint)
    manifest = result.manifest
    assert result.path.name.endswith("_fp16_logits.onnx") and manifest["precision"] == "fp16"
    assert manifest["verification"]["enforced"] and manifest["verification"]["passed"]
    assert manifest["verification"]["argmax_agreement"] >= 0.99
    graph = onnx.load(str(result.path)).graph
    float16 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(float16) >= 50  # conv weights and biases
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers feed float32 as for fp32
    assert manifest["input"]["dtype"] == "float32"


# --- refusing, failing cleanly ----------------------------------------------------------------------

def test_forced_verification_failure_leaves_no_artifact(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(THRESHOLDS, "fp32", {"rel_l2_error": 0.0, "argmax_agreement": 1.01})
    with pytest.raises(VerificationError, match="verification failed"):
        export_model(tiny_model, "onnx", tmp_path, input_size=(64, 64), weights="random")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size, message", [((16, 360), "too small"), ((9000, 640), "too large")])
def test_sizes_the_network_cannot_take_are_refused(tiny_model, tmp_path, size, message):
    with pytest.raises(TopformerDeployError, match=message):
        export_model(tiny_model, "onnx", tmp_path, input_size=size, weights="random")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--to", "tflite"], "give --variant"),
    (["--variant", "tiny", "--to", "tflite", "--input-size", "20000x360"], "at most 8192 per side"),
    (["--variant", "tiny", "--to", "onnx", "--precision", "int4"], "Invalid value"),
    (["--variant", "small", "--to", "onnx", "--checkpoint", "TINY"], "does not fit TopFormer-small"),
    (["--to", "onnx", "--checkpoint", "/nonexistent.pth"], "checkpoint not found"),
])
def test_cli_errors_are_one_line(args, message, tiny_checkpoint, tmp_path):
    args = [str(tiny_checkpoint) if a == "TINY" else a for a in args]
    result = CliRunner().invoke(main, ["export", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_errors(tmp_path):
    artifact = tmp_path / "model.tflite"
    with pytest.raises(TopformerDeployError, match="no manifest"):
        read_manifest(artifact)
    (tmp_path / "model.tflite.json").write_text("{not json")
    with pytest.raises(TopformerDeployError, match="cannot read manifest"):
        read_manifest(artifact)


# --- the export-time model rewrites (PyTorch only, fast) ---------------------------------------------

def test_random_live_weights_keep_the_attention_alive():
    model = random_live_model("tiny", seed=1)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(float(bn.weight.detach().abs().min()) > 0.1 for bn in batchnorms)
    attn = model.backbone.trans.transformer_blocks[0].attn
    x = torch.randn(2, attn.to_q.c.in_channels, 4, 4)
    with torch.no_grad():
        out = attn(x)
    assert float(out.std()) > 1e-2 and not torch.allclose(out[0], out[1])
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(logits).all() and float(logits.std()) > 1e-2


def test_nhwc_rewrite_is_numerically_the_official_model():
    folded = fold_for_export(random_live_model("tiny", seed=2))
    rewritten = rewrite_for_nhwc(folded)
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        expected, actual = folded(x), rewritten(x)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert not any(type(m).__name__ == "Attention" for m in rewritten.modules())
    assert any(type(m).__name__ == "Attention" for m in folded.modules())  # the original is untouched


def test_fold_for_export_leaves_the_input_model_alone(tiny_model):
    folded = fold_for_export(tiny_model, (480, 360))
    assert folded.backbone.ppa.levels is not None and tiny_model.backbone.ppa.levels is None
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(tiny_model).modules())


@pytest.mark.slow
def test_fp16_with_random_weights_records_but_does_not_enforce_agreement(tmp_path):
    result = export_model(random_live_model("tiny", num_classes=150), "tflite", tmp_path, input_size=SIZE,
                          precision="fp16", weights="random")
    verification = result.manifest["verification"]
    assert verification["enforced"] is False
    assert 0.5 < verification["argmax_agreement"] <= 1.0 and verification["rel_l2_error"] < 0.05
    assert result.path.exists()
