"""The emulated arm64 board (Debian bookworm under qemu-user, a real sshd on loopback) as a bench target.

`topformer-deploy bench --device ssh:root@127.0.0.1:PORT --engine python` runs a TFLite fp32, a TFLite
int8 and an ONNX artifact (64x64) on aarch64; the result must record an aarch64 device and the output
pulled back from the board must equal the one the same runner gives on this x86 host.

Needs Linux + root + binfmt_misc; skipped with the reason elsewhere, but under CI=true it fails instead.
The first run builds the rootfs (~4 min, cached under ~/.cache/topformer-deploy/arm64-bookworm).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from topformer_deploy.cli import main
from topformer_deploy.bench import device_runner
from topformer_deploy.bench.sim import userland
from topformer_deploy.testing import arm64_board

SIZE = (64, 64)
NUM_CLASSES = 8
RUNTIMES = {"tflite": "ai_edge_litert", "onnx": "onnxruntime"}
TOLERANCE = 1e-5      # float outputs: max |arm - x86| relative to max |x86|
INT8_MEAN_STEPS = 6   # int8 outputs: mean difference in quantization steps (PT2E route: 0.96 observed)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Random-weight Tiny (8 classes) at 64x64: TFLite fp32, TFLite int8, ONNX fp32, each with a manifest."""
    from topformer_deploy.export.calibration import load_calibration_images
    from topformer_deploy.export.pipeline import export_model
    from topformer_deploy.export.quantize import export_int8
    from topformer_deploy.model import build_model

    import torch

    out = tmp_path_factory.mktemp("arm64-artifacts")
    torch.manual_seed(0)                      # the same weights every run: the int8 figures are repeatable
    model = build_model("tiny", num_classes=NUM_CLASSES)
    made = {}
    for key, fmt, precision in (("tflite-fp32", "tflite", "fp32"), ("onnx-fp32", "onnx", "fp32")):
        made[key] = export_model(model, fmt, out, input_size=SIZE, precision=precision, weights="random",
                                 verify=False).path
    # the exporter's own int8 route (PT2E), with an int8 boundary so the outputs compare in quantization steps
    made["tflite-int8"] = export_int8(model, "tflite", out, input_size=SIZE, weights="random", int8_io=True,
                                      calibration=load_calibration_images("synthetic", 4, SIZE, seed=0),
                                      verify=False).path
    return made


def _bench(*args: str) -> dict:
    """Run ``topformer-deploy bench ... --json OUT`` and return the result document."""
    result = CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = args[args.index("--json") + 1]
    return json.loads(Path(out).read_text())


@pytest.mark.board
def test_board_is_an_aarch64_debian_with_the_runtimes(board):
    probe = ("import json, platform, numpy, onnxruntime; from ai_edge_litert.interpreter import Interpreter; "
             "print(json.dumps([platform.machine(), platform.python_version(), numpy.__version__, "
             "onnxruntime.__version__]))")
    res = subprocess.run(board.ssh_argv([board.python, "-c", probe]), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    machine, python, numpy_version, ort_version = json.loads(res.stdout)
    assert machine == "aarch64"
    assert python.startswith("3.11")       # bookworm's, as on Raspberry Pi OS
    record = arm64_board.built()
    assert record["runtimes"]["numpy"] == numpy_version
    assert record["runtimes"]["onnxruntime"] == ort_version
    # `python3` in an ssh session is the venv's (sshd's SetEnv PATH), like a Pi with its runtime venv
    res = subprocess.run(board.ssh_argv(["sh", "-c", "command -v python3"]), capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.strip() == board.python.replace("/python", "/python3")


@pytest.mark.board
@pytest.mark.parametrize("kind", ["tflite-fp32", "tflite-int8", "onnx-fp32"])
def test_bench_on_aarch64_matches_x86(board, artifacts, kind, tmp_path):
    artifact = artifacts[kind]
    fmt, precision = kind.split("-")
    manifest = json.loads(artifact.with_name(artifact.name + ".json").read_text())
    rng = np.random.default_rng(0)
    shape = manifest["input"]["shape"]
    if manifest["input"]["dtype"] == "int8":
        image = rng.integers(-128, 128, shape).astype(np.int8)
    else:
        image = rng.uniform(0, 255, shape).astype(np.float32)
    np.save(tmp_path / "input.npy", image)

    arm = _bench("--model", str(artifact), "--input", str(tmp_path / "input.npy"), "--device", board.target,
                 "--ssh-config", board.ssh_config, "--python", board.python, "--warmup", "1", "--runs", "2",
                 "--save-output", str(tmp_path / "arm.npy"), "--json", str(tmp_path / "arm.json"))
    # the same runner on this host gives the x86 reference
    x86 = subprocess.run([sys.executable, device_runner.__file__, "--model", str(artifact), "--input",
                          str(tmp_path / "input.npy"), "--save-output", str(tmp_path / "x86.npy"), "--warmup", "0",
                          "--runs", "1"], capture_output=True, text=True, timeout=300)
    assert x86.returncode == 0, x86.stdout + x86.stderr
    assert json.loads(x86.stdout)["machine"] != "aarch64"

    assert arm["device"]["arch"] == "aarch64"
    assert "arm64-board" in (arm["device"].get("id"), arm["device"].get("hostname"))   # its own UTS namespace
    assert arm["device"]["transport"] == "ssh"
    assert arm["runtime"]["name"] == RUNTIMES[fmt]
    assert arm["config"]["format"] == fmt and arm["config"]["precision"] == precision
    assert len(arm["latencies_ms"]) == 2 and all(t > 0 for t in arm["latencies_ms"])
    reference, emulated = np.load(tmp_path / "x86.npy"), np.load(tmp_path / "arm.npy")
    assert emulated.shape == reference.shape == tuple(manifest["output"]["shape"])
    assert emulated.dtype == reference.dtype
    difference = float(np.max(np.abs(emulated.astype(np.float64) - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    agreement = float(np.mean(emulated.argmax(-1) == reference.argmax(-1)))
    print(f"{kind}: max |aarch64 - x86| = {difference:.3g} (relative {difference / scale:.3g}), "
          f"class agreement {agreement:.1%}, aarch64 p50 {arm['stats']['p50']:.1f} ms under qemu")
    if reference.dtype == np.int8:
        # LiteRT's int8 kernels requantize differently on x86 and Arm (also without XNNPACK): a few
        # steps per layer, which 1e-5 cannot describe. Random weights amplify it (PT2E route: 0.96 steps on
        # average, max 3; ai-edge-quantizer's route: 1.6-2.8, up to 15); a broken int8 path would be off by
        # tens of steps.
        steps = float(np.mean(np.abs(emulated.astype(np.int32) - reference.astype(np.int32))))
        print(f"{kind}: mean |aarch64 - x86| = {steps:.2f} quantization steps")
        assert steps <= INT8_MEAN_STEPS
    else:
        assert difference / scale <= TOLERANCE


@pytest.mark.board
def test_the_board_describes_a_pi4_cpu_so_xnnpack_runs(board, artifacts):
    """Like on a real Pi 4, LiteRT's CPU detection succeeds and the XNNPACK delegate is created."""
    probe = ("from ai_edge_litert.interpreter import Interpreter; import onnxruntime as ort; "
             f"Interpreter(model_path={str(artifacts['tflite-fp32'])!r}).allocate_tensors(); "
             f"ort.InferenceSession({str(artifacts['onnx-fp32'])!r}); print(open('/proc/cpuinfo').read())")
    subprocess.run(board.ssh_argv(["mkdir", "-p", str(artifacts["tflite-fp32"].parent)]), timeout=60)
    for name in ("tflite-fp32", "onnx-fp32"):
        copy = subprocess.run(["scp", "-q", "-F", board.ssh_config, str(artifacts[name]),
                               f"arm64-board:{artifacts[name]}"], capture_output=True, text=True, timeout=120)
        assert copy.returncode == 0, copy.stderr
    res = subprocess.run(board.ssh_argv([board.python, "-c", probe]), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Created TensorFlow Lite XNNPACK delegate for CPU" in res.stderr
    assert "CPU part\t: 0xd08" in res.stdout                       # Cortex-A72, as on a Raspberry Pi 4
    cpus = subprocess.run(board.ssh_argv(["cat", "/sys/devices/system/cpu/possible"]), capture_output=True,
                          text=True, timeout=60)
    assert cpus.stdout.strip() == "0-3"


@pytest.mark.board
def test_tflite_operator_profile_on_aarch64(board, artifacts, tmp_path):
    """The runner's one-op TFLite profile runs on the board and comes back through the harness."""
    doc = _bench("--model", str(artifacts["tflite-fp32"]), "--device", board.target, "--ssh-config",
                 board.ssh_config, "--python", board.python, "--warmup", "0", "--runs", "1",
                 "--profile-dir", str(tmp_path / "profile"), "--json", str(tmp_path / "arm.json"))
    assert doc["device"]["arch"] == "aarch64"
    profile = doc["runner"]["profile"]
    assert profile["kind"] == "tflite-one-op" and Path(profile["local_file"]).parent == tmp_path / "profile"
    rows = json.loads(Path(profile["local_file"]).read_text())["rows"]
    assert len(rows) > 50 and not [r for r in rows if "error" in r]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"} <= {n for r in rows for n in r["name"].split("+")}


@pytest.mark.parametrize("text, deb822, expected", [
    ("deb http://mirror.example/debian bookworm main\n# deb http://old/debian bookworm main\n"
     "deb-src http://src/debian bookworm main\ndeb [arch=amd64] http://other/x nodistro main\n", False,
     [("http://mirror.example/debian", ["bookworm"]), ("http://other/x", ["nodistro"])]),
    ("Types: deb\n# http://snapshot/archive\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
     "Components: main\n\nTypes: deb-src\nURIs: http://src/debian\nSuites: bookworm\n", True,
     [("http://mirror.example/debian", ["bookworm", "bookworm-updates"])]),
])
def test_apt_sources_are_read_in_both_formats(text, deb822, expected):
    assert userland.apt_entries(text, deb822) == expected
