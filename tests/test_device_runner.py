"""The device-side runner, run for real as a subprocess on small TFLite and ONNX models (64x64, 8 classes)."""
from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from topformer_deploy.bench import device_runner
from topformer_deploy.bench.benchmark_model import parse_onnxruntime_profile

RUNNER = Path(device_runner.__file__)
ALLOWED_IMPORTS = {"argparse", "copy", "hashlib", "io", "json", "os", "platform", "resource", "select", "signal", "sys",
                   "tempfile", "time", "numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime"}


class _SmallModels(dict):
    """Tiny TopFormer (BN folded, 8 classes) at 64x64 as .tflite (litert-torch) or .onnx (torch.onnx), each
    converted on first use."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def __missing__(self, fmt: str) -> Path:
        import torch

        from topformer_deploy.model import build_model
        from topformer_deploy.model.fold import fold_batchnorm

        torch.manual_seed(0)
        model = fold_batchnorm(build_model("tiny", num_classes=8)).eval()
        example = (torch.rand(1, 3, 64, 64) * 255,)
        path = self.out / f"tiny64.{fmt}"
        if fmt == "tflite":
            import litert_torch

            litert_torch.convert(model, example).export(str(path))
        else:
            torch.onnx.export(model, example, str(path), input_names=["image"], output_names=["logits"],
                              dynamo=False)
        self[fmt] = path
        return path


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> _SmallModels:
    return _SmallModels(tmp_path_factory.mktemp("runner-models"))


def run_runner(*args, cwd=None) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got {proc.stdout!r}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


def reference_output(path: Path, x: np.ndarray) -> np.ndarray:
    """The same model run in this process with the same runtime."""
    if path.suffix == ".onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


# ---------------------------------------------------------------------------- the file itself
def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(RUNNER.read_text(), feature_version=(3, 8))  # also: parses as Python 3.8
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no package-relative imports: the file runs on its own on the device"
            names.add(node.module.split(".")[0])
    assert names <= ALLOWED_IMPORTS, names - ALLOWED_IMPORTS
    assert {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"} <= names


def test_random_inputs_follow_the_tensor_dtype():
    rng = np.random.default_rng(0)
    i8 = device_runner.random_input({"name": "x", "shape": [1, 8, 8, 3], "dtype": "int8"}, rng)
    u8 = device_runner.random_input({"name": "x", "shape": [1, 8, 8, 3], "dtype": "uint8"}, rng)
    f32 = device_runner.random_input({"name": "x", "shape": [1, None, 4, 3], "dtype": "float32"}, rng)
    assert i8.dtype == np.int8 and i8.min() < -100 and i8.max() > 100
    assert u8.dtype == np.uint8 and u8.max() > 200
    assert f32.dtype == np.float32 and f32.shape == (1, 1, 4, 3) and 0 <= f32.min() and f32.max() <= 255


# ------------------------------------------------------------------------------- real runs
@pytest.mark.parametrize("fmt", [pytest.param("tflite", marks=pytest.mark.slow), "onnx"])
def test_runner_json_and_saved_output_match_in_process(small_models, fmt, tmp_path):
    model = small_models[fmt]
    x = np.random.default_rng(1).uniform(0, 255, size=(1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    code, doc, _ = run_runner("--model", model, "--runs", 7, "--warmup", 2, "--threads", 1,
                              "--input", tmp_path / "in.npy", "--save-output", tmp_path / "out.npy")
    assert code == 0 and doc["ok"] is True and doc["runner_version"] == 1
    assert doc["runtime"]["name"] == ("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    assert doc["model"]["format"] == fmt
    assert doc["model"]["inputs"][0]["shape"] == [1, 3, 64, 64] and doc["model"]["inputs"][0]["dtype"] == "float32"
    assert doc["model"]["outputs"][0]["shape"] == [1, 8, 8, 8]
    assert (doc["threads"], doc["warmup"], doc["runs"]) == (1, 2, 7)
    assert len(doc["latencies_ms"]) == 7 and all(t > 0 for t in doc["latencies_ms"])
    assert doc["load_ms"] > 0 and doc["first_ms"] > 0
    assert doc["python"] and doc["numpy"] == np.__version__ and doc["machine"] and doc["system"]
    saved = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(saved, reference_output(model, x), rtol=1e-5, atol=1e-5)
    assert doc["outputs_saved"] == str(tmp_path / "out.npy")
    assert doc["output_summary"]["shape"] == [1, 8, 8, 8]
    assert doc["output_summary"]["mean"] == pytest.approx(float(saved.astype(np.float64).mean()))
    assert not list(tmp_path.glob(".runner-*"))  # the temp file was moved into place


def test_post_processing_is_timed_on_the_device_apart_from_the_run(small_models, tmp_path):
    code, doc, _ = run_runner("--model", small_models["onnx"], "--runs", 4, "--warmup", 1,
                              "--post", "sparse,nearest,dense", "--save-output", tmp_path / "out.npy")
    assert code == 0, doc
    post = doc["post"]
    assert post["size"] == [64, 64] and post["layout"] == "NCHW" and post["arithmetic"] == "nchw-fma"
    assert list(post["methods"]) == ["sparse", "nearest", "dense"]
    for method, entry in post["methods"].items():
        assert len(entry["latencies_ms"]) == 4 and all(t > 0 for t in entry["latencies_ms"])
        assert entry["exact"] is (method != "nearest")
    assert 0 <= post["methods"]["sparse"]["blocks_refined"] <= 1 and post["methods"]["dense"]["blocks_refined"] is None
    assert len(doc["latencies_ms"]) == 4
    code, doc, _ = run_runner("--model", small_models["onnx"], "--runs", 1, "--warmup", 0, "--post", "nearest",
                              "--post-size", "40x24", "--post-layout", "NCHW")
    assert code == 0 and doc["post"]["size"] == [40, 24]
    assert run_runner("--model", small_models["onnx"], "--runs", 1, "--post")[1]["error_kind"] == "bad_input"


@pytest.mark.parametrize("args, message", [
    (["--post", "bicubic"], "choose from sparse"),
    (["--post", "sparse", "--post-size", "64"], "--post-size must be HxW"),
])
def test_bad_post_arguments(small_models, args, message):
    code, doc, _ = run_runner("--model", small_models["onnx"], "--runs", 1, *args)
    assert code == 2 and doc["error_kind"] == "bad_input" and message in doc["error"]


def test_random_inputs_are_seeded(small_models):
    _, a, _ = run_runner("--model", small_models["onnx"], "--runs", 1, "--warmup", 0, "--seed", 3)
    _, b, _ = run_runner("--model", small_models["onnx"], "--runs", 1, "--warmup", 0, "--seed", 3)
    _, c, _ = run_runner("--model", small_models["onnx"], "--runs", 1, "--warmup", 0, "--seed", 4)
    assert a["output_summary"]["sha256"] == b["output_summary"]["sha256"] != c["output_summary"]["sha256"]
    assert a["input_source"] == "random"


def test_onnx_profile_file_is_written_and_parses(small_models, tmp_path):
    code, doc, _ = run_runner("--model", small_models["onnx"], "--runs", 3, "--warmup", 1,
                              "--profile", tmp_path / "prof")
    assert code == 0 and doc["profile"]["kind"] == "onnxruntime"
    profile = Path(doc["profile"]["file"])
    assert profile.parent == tmp_path and profile.name.startswith("prof") and profile.suffix == ".json"
    rows = parse_onnxruntime_profile(profile.read_text())
    op_types = {r["op_type"] for r in rows}
    assert "Conv" in op_types and len(op_types) >= 4
    assert all(r["node"] and r["provider"] == "CPUExecutionProvider" for r in rows)
    assert len({r["node"] for r in rows if r["op_type"] == "Conv"}) > 10


@pytest.mark.slow
def test_tflite_profile_times_every_operator_as_a_one_op_model(small_models, tmp_path):
    from topformer_deploy.export.tflite import tflite_op_histogram

    code, doc, _ = run_runner("--model", small_models["tflite"], "--runs", 3, "--warmup", 1,
                              "--profile", tmp_path / "prof")
    assert code == 0 and doc["profile"]["kind"] == "tflite-one-op"
    profile = json.loads(Path(doc["profile"]["file"]).read_text())
    rows = profile["rows"]
    assert not [r for r in rows if "error" in r]
    # every operator of the graph is timed once: alone, or a PAD together with the conv it feeds
    histogram = tflite_op_histogram(small_models["tflite"])
    timed = [name for r in rows for name in r["name"].split("+")]
    assert sorted(timed) == sorted(name for name, n in histogram.items() for _ in range(n))
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    assert all(r["ms"] > 0 for r in rows) and profile["total_ms"] == pytest.approx(sum(r["ms"] for r in rows))
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"} <= set(timed)
    assert profile["runtime"]["name"] == doc["runtime"]["name"]


@pytest.mark.slow
def test_one_op_models_hold_only_their_own_weights(small_models):
    models = device_runner.one_op_models(str(small_models["tflite"]))
    size = small_models["tflite"].stat().st_size
    assert len(models) > 50
    # each model carries its own constants only: together about the size of the whole file, not N times it
    assert sum(len(content) for *_, content in models) < 3 * size
    index, name, shape, content = models[0]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()
    assert index == 0 and list(interp.get_output_details()[0]["shape"]) == shape


# --------------------------------------------------------------------------------- failures
def test_missing_model(tmp_path):
    code, doc, _ = run_runner("--model", tmp_path / "nope.tflite")
    assert code == 2 and doc == {"runner_version": 1, "ok": False, "error_kind": "bad_model",
                                 "error": f"model file not found: {tmp_path / 'nope.tflite'}"}


def test_corrupt_model(tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"this is not a flatbuffer")
    (tmp_path / "bad.onnx").write_bytes(b"nor a protobuf")
    for name in ("bad.tflite", "bad.onnx"):
        code, doc, _ = run_runner("--model", tmp_path / name)
        assert code == 2 and doc["ok"] is False and doc["error_kind"] == "bad_model", doc
        assert "\n" not in doc["error"]


@pytest.mark.slow
def test_forced_runtime_that_is_not_installed(small_models):
    try:
        import tflite_runtime  # noqa: F401
        pytest.skip("tflite_runtime is installed here")
    except ImportError:
        pass
    code, doc, _ = run_runner("--model", small_models["tflite"], "--runtime", "tflite_runtime")
    assert code == 2 and doc["error_kind"] == "no_runtime" and "tflite_runtime" in doc["error"]


@pytest.mark.slow
def test_runtime_that_cannot_read_the_format(small_models):
    code, doc, _ = run_runner("--model", small_models["tflite"], "--runtime", "onnxruntime")
    assert code == 2 and doc["error_kind"] == "bad_input"


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "--runs must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--warmup", "x"], "bad arguments"),
])
def test_bad_arguments(small_models, args, message):
    code, doc, _ = run_runner("--model", small_models["onnx"], *args)
    assert code == 2 and doc["error_kind"] == "bad_input" and message in doc["error"]


def test_output_and_profile_paths_in_missing_directories(small_models, tmp_path):
    for flag in ("--save-output", "--profile"):
        code, doc, _ = run_runner("--model", small_models["onnx"], flag, tmp_path / "missing" / "x")
        assert code == 2 and doc["error_kind"] == "bad_input" and "no such directory" in doc["error"]


def test_input_of_the_wrong_shape(small_models, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 32, 32), np.float32))
    code, doc, _ = run_runner("--model", small_models["onnx"], "--input", tmp_path / "in.npy")
    assert code == 2 and doc["error_kind"] == "bad_input" and "[1, 3, 32, 32]" in doc["error"]
    np.save(tmp_path / "complex.npy", np.zeros((1, 3, 64, 64), np.complex64))
    code, doc, _ = run_runner("--model", small_models["onnx"], "--input", tmp_path / "complex.npy")
    assert code == 2 and doc["error_kind"] == "bad_input" and "complex64" in doc["error"]
    np.save(tmp_path / "f64.npy", np.zeros((1, 3, 64, 64), np.float64))  # float64 -> float32 is cast
    code, doc, _ = run_runner("--model", small_models["onnx"], "--input", tmp_path / "f64.npy", "--runs", 1)
    assert code == 0 and doc["input_source"] == str(tmp_path / "f64.npy")


def test_ctrl_c_gives_json_and_exit_130(small_models):
    proc = subprocess.Popen([sys.executable, str(RUNNER), "--model", str(small_models["onnx"]),
                             "--runs", "1000000", "--warmup", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # imports done, the session loading or running
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = json.loads(out)
    assert proc.returncode == 130 and doc["ok"] is False and doc["error"] == "interrupted"


@pytest.fixture(scope="session")
def two_io_onnx(tmp_path_factory) -> Path:
    """A hand-made ONNX graph with an int8 and a float input and two outputs (no converter needed)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["codes"], ["codes_f"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["codes_f", "x"], ["sum"]),
         helper.make_node("Identity", ["codes"], ["codes_out"])],
        "two_io",
        [helper.make_tensor_value_info("codes", TensorProto.INT8, [1, 16]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("codes_out", TensorProto.INT8, [1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("two-io") / "two_io.onnx"
    onnx.save(model, str(path))
    return path


def test_int8_random_inputs_and_several_outputs(two_io_onnx, tmp_path):
    code, doc, _ = run_runner("--model", two_io_onnx, "--runs", 2, "--warmup", 0, "--save-output", tmp_path / "o.npy")
    assert code == 0, doc
    assert [(i["name"], i["dtype"]) for i in doc["model"]["inputs"]] == [("codes", "int8"), ("x", "float32")]
    with np.load(tmp_path / "o.npy") as saved:  # several outputs: .npz layout under the name asked for
        codes, total = saved["codes_out"], saved["sum"]
    assert codes.dtype == np.int8 and codes.min() < 0 < codes.max()  # the full int8 range, not 0..255
    assert [s["dtype"] for s in doc["output_summaries"]] == ["float32", "int8"]
    assert doc["output_summary"] == doc["output_summaries"][0]
    assert np.all(total >= codes.astype(np.float32))  # x was drawn from 0..255


def test_several_inputs_from_an_npz_by_name(two_io_onnx, tmp_path):
    codes = np.arange(-8, 8, dtype=np.int8).reshape(1, 16)
    x = np.full((1, 16), 0.5, np.float32)
    np.savez(tmp_path / "in.npz", x=x, codes=codes)
    code, doc, _ = run_runner("--model", two_io_onnx, "--runs", 1, "--warmup", 0, "--input", tmp_path / "in.npz",
                              "--save-output", tmp_path / "o.npz")
    assert code == 0, doc
    with np.load(tmp_path / "o.npz") as saved:
        np.testing.assert_array_equal(saved["sum"], codes.astype(np.float32) + 0.5)
    np.save(tmp_path / "one.npy", x)
    code, doc, _ = run_runner("--model", two_io_onnx, "--input", tmp_path / "one.npy")
    assert code == 2 and doc["error_kind"] == "bad_input" and "2 inputs" in doc["error"]
    np.savez(tmp_path / "partial.npz", x=x)
    code, doc, _ = run_runner("--model", two_io_onnx, "--input", tmp_path / "partial.npz")
    assert code == 2 and "lacks input(s) codes" in doc["error"]
