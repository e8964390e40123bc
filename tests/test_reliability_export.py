"""Faults and bad inputs on the export / eval / calibration side (issue 19), each produced for real: NaN and
overflowing checkpoints, full and read-only file systems (small tmpfs mounts), native crashes, SIGTERM,
decompression-bomb-sized and 16-bit images, out-of-range labels, a checkpoint that moved or changed.

Every test asserts the one line the user reads, the exit code, and what is (not) left on disk.
docs/reliability.md lists them.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from faults import fill, tmpfs
from topformer_deploy import CheckpointError, TopformerDeployError, build_model, load_checkpoint
from topformer_deploy.cli import main
from topformer_deploy.data import NUM_CLASSES, write_dataset
from topformer_deploy.eval.evaluate import evaluate_models
from topformer_deploy.export.calibration import load_calibration_images
from topformer_deploy.export.job import run_export_job
from topformer_deploy.export.verify import THRESHOLDS, compare, passes
from topformer_deploy.images import ImageTooLarge, read_rgb

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


# ------------------------------------------------------------------------------------------------ helpers
def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real command in its own process (signals, native crashes and exit codes are the process's)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "topformer_deploy", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_error_line(stderr: str) -> str:
    """The stderr of a failed command, which must be exactly one ``error:`` line (notes aside)."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def visible(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def png(path: Path, width: int, height: int, bit_depth: int = 8, rgb: bool = False, value: int = 0) -> Path:
    """A PNG written row by row (no image in memory): decompression-bomb sizes and 16-bit files."""
    channels = 3 if rgb else 1
    dtype = ">u2" if bit_depth == 16 else "u1"
    row = b"\0" + np.full(width * channels, value, dtype).tobytes()
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2 if rgb else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def checkpoint_with(path: Path, source: Path, value: float) -> Path:
    """``source`` with every value of the classifier's weight set to ``value`` (NaN, or an overflowing one)."""
    state = torch.load(source, weights_only=True)
    inner = state["state_dict"]
    inner["decode_head.conv_seg.weight"] = torch.full_like(inner["decode_head.conv_seg.weight"].float(), value)
    torch.save(state, path)
    return path


# ------------------------------------------------------------------------- 1. NaN never compares as good
@pytest.mark.parametrize("ref_nan", [False, True])
def test_a_nan_output_never_passes_any_threshold(ref_nan):
    ref = np.random.default_rng(0).standard_normal((1, 150, 8, 8)).astype(np.float32)
    out = np.full_like(ref, np.nan)
    if ref_nan:
        ref = out.copy()  # both all-NaN: argmax of NaN logits "agrees" everywhere
    figures = compare([ref], [out])
    assert figures["nonfinite_artifact"] == ref.size and figures["argmax_agreement"] == 0.0
    assert figures["rel_l2_error"] != figures["rel_l2_error"]  # NaN, not a skipped None
    for thresholds in (*THRESHOLDS.values(), {"argmax_agreement": 0.0}, {"rel_l2_error": None}):
        assert passes(figures, thresholds) is False
    assert passes({"argmax_agreement": None, "rel_l2_error": None}, THRESHOLDS["fp32"]) is False  # nothing measured


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_nan_checkpoint_is_refused_before_converting(fmt, tiny_checkpoint, tmp_path):
    nan = checkpoint_with(tmp_path / "nan.pth", tiny_checkpoint, float("nan"))
    out = tmp_path / "out"
    result = run_cli("export", "--checkpoint", nan, "--to", fmt, "--input-size", SIZE, "--out", out, "--json")
    assert result.returncode == 2 and result.stdout == ""
    line = one_error_line(result.stderr)
    assert "the weights are not finite" in line and "decode_head.conv_seg.weight" in line
    assert visible(out) == []


@pytest.mark.parametrize("args", [["--to", "onnx"], ["--to", "tflite"],
                                  ["--to", "tflite", "--precision", "int8", "--calib-count", "1"]])
def test_overflowing_checkpoint_fails_verification(args, tiny_checkpoint, tmp_path):
    """Finite weights whose logits overflow float32 (int8 TFLite on such ranges died of a double free)."""
    huge = checkpoint_with(tmp_path / "huge.pth", tiny_checkpoint, 1e38)
    out = tmp_path / "out"
    result = run_cli("export", "--checkpoint", huge, *args, "--input-size", SIZE, "--out", out)
    assert result.returncode == 4
    line = one_error_line(result.stderr)
    assert "verification failed" in line and "NaN/Inf values" in line and "nothing was exported" in line
    assert visible(out) == []


def test_an_artifact_with_nan_outputs_fails_verification(tmp_path):
    """A real ONNX artifact (log of its input: NaN for negative values) against a finite reference."""
    from topformer_deploy.export.onnx import convert_onnx
    from topformer_deploy.export.verify import verify_artifact

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)

    class LogAbs(torch.nn.Module):
        def forward(self, x):
            return torch.log(x.abs() + 1)

    path = convert_onnx(Log(), (torch.ones(1, 3, 8, 8),), tmp_path / "log.onnx", ["x"], ["y"], simplify=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    figures = verify_artifact(path, LogAbs(), [x], "fp32")
    assert figures["passed"] is False and figures["nonfinite_artifact"] == int((x < 0).sum()) > 0


# -------------------------------------------------------------------------------------- 3. full disk
def test_full_disk_while_converting_onnx_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        result = run_cli("export", "--variant", "tiny", "--to", "onnx", "--input-size", SIZE, "--out", disk, "--json")
        assert result.returncode == 2 and result.stdout == ""
        line = one_error_line(result.stderr)
        assert line.startswith(f"error: cannot write {disk}/topformer_tiny_64x64_fp32_logits.onnx: "
                               "No space left on device (")
        assert line.endswith("; nothing was written")
        assert visible(disk) == []


@pytest.mark.slow
def test_full_disk_while_converting_tflite_is_one_line_not_a_native_abort(tmp_path):
    """litert's own writer died with 'LLVM ERROR: IO failure on output stream' and left a hidden partial file."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        result = run_cli("export", "--variant", "tiny", "--to", "tflite", "--input-size", SIZE, "--out", disk)
        assert result.returncode == 2
        line = one_error_line(result.stderr)
        assert line.startswith(f"error: cannot write {disk}/topformer_tiny_64x64_fp32_logits.tflite: "
                               "No space left on device")
        assert visible(disk) == []


def test_full_disk_when_only_the_artifact_fits_keeps_the_previous_export(tmp_path):
    """The disk fills up after the converter wrote the artifact: the manifest write fails (a real ENOSPC)."""
    from topformer_deploy.export.onnx import convert_onnx

    with tmpfs(tmp_path / "disk", "4m") as disk:
        target = disk / "model.onnx"
        old_artifact, old_manifest = b"previous artifact", b'{"previous": "manifest"}'
        target.write_bytes(old_artifact)
        target.with_name("model.onnx.json").write_bytes(old_manifest)

        def make(staged, work):
            convert_onnx(torch.nn.Conv2d(3, 8, 3), (torch.zeros(1, 3, 16, 16),), staged, ["x"], ["y"])
            fill(disk)  # the artifact fits, nothing more

        def describe(staged, info, verification):
            return {"artifact": staged.name, "notes": "x" * 100_000}

        with pytest.raises(TopformerDeployError) as failure:
            run_export_job(target, make, describe)
        assert str(failure.value) == (f"cannot write {target}: No space left on device (0.0 MB free there); "
                                      "nothing was written")
        (disk / "filler").unlink()
        assert visible(disk) == ["model.onnx", "model.onnx.json"]  # no staging folder, no temp file
        assert target.read_bytes() == old_artifact and target.with_name("model.onnx.json").read_bytes() == old_manifest


def test_a_converter_exception_is_one_line_with_what_native_code_said(tmp_path):
    def make(staged, work):
        staged.write_bytes(b"partial")
        os.write(2, b"E0000 00:00:1700000000.1 42 convert.cc:61] error: 'tfl.conv_2d' op is not legal\n")
        raise RuntimeError("Conversion failed.\nsee the log above")

    with pytest.raises(TopformerDeployError) as failure:
        run_export_job(tmp_path / "out" / "m.tflite", make, lambda *a: {})
    assert str(failure.value) == ("exporting m.tflite failed at 'convert': RuntimeError: Conversion failed. "
                                  "(native output: error: 'tfl.conv_2d' op is not legal); nothing was written")
    assert visible(tmp_path / "out") == []


# ------------------------------------------------------------------------ 3. native crash, watchdog
_CRASHING_JOB = """
import os, sys, time
from pathlib import Path
from topformer_deploy.export.job import run_export_job

target = Path(sys.argv[1])
def make(staged, work):
    staged.write_bytes(b"half an artifact")
    print("converter banner")                     # Python-level output, silenced
    os.write(2, b"fatal: the converter gave up\\n")  # what native code prints before it dies
    if sys.argv[2] == "abort":
        os.abort()
    Path(sys.argv[3]).touch()                      # tells the test the job is under way
    time.sleep(600)
run_export_job(target, make, lambda *a: {})
"""


@pytest.mark.parametrize("death", ["abort", "kill"])
def test_native_death_is_one_line_and_leaves_nothing(death, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.bin.json").write_text("{}")  # an orphaned manifest of this target: removed too
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_JOB, str(out / "model.bin"), death, str(ready)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if death == "kill":  # SIGKILL (the OOM killer's signal) once the job is under way
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert any(name.endswith(".partial") for name in visible(out))
        proc.kill()
    stdout, stderr = proc.communicate(timeout=60)  # stderr ends when the watchdog has finished too
    assert proc.returncode == (-signal.SIGABRT if death == "abort" else -signal.SIGKILL)
    assert "converter banner" not in stdout + stderr
    assert stderr.strip().splitlines()[-1] == ("error: the process died while exporting model.bin: fatal: the "
                                               "converter gave up; removed its partial files")
    assert visible(out) == []


@pytest.mark.slow
def test_litert_native_write_on_a_full_disk_is_reported_and_cleaned(tmp_path):
    """The real native failure: litert's writer on a full tmpfs ends the process (LLVM ERROR, exit 1)."""
    job = textwrap.dedent("""
        import sys, torch, litert_torch
        from pathlib import Path
        from topformer_deploy.export.job import run_export_job

        def make(staged, work):
            module = torch.nn.Conv2d(512, 512, 3).eval()  # 9 MB of weights
            litert_torch.convert(module, (torch.zeros(1, 512, 8, 8),)).export(str(staged))  # native write
        run_export_job(Path(sys.argv[1]), make, lambda *a: {})
    """)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", job, str(disk / "conv.tflite")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: the process died while exporting conv.tflite: LLVM ERROR: IO failure on output stream: "
            "No space left on device; removed its partial files")
        assert visible(disk) == []


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "topformer_deploy", "export", "--variant", "tiny", "--to", "tflite",
                             "--input-size", str(SIZE), "--out", str(out), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(name.endswith(".partial") for name in visible(out)):  # converting in the staging folder
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and stdout == ""
    assert stderr.strip().splitlines()[-1] == "terminated"
    assert visible(out) == []


# ------------------------------------------------------------------------------ 8. read-only --out
def test_read_only_out_is_one_line_before_the_model_loads(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path / "missing.pth"), "--to", "onnx",
                                           "--out", str(ro)])
        assert result.exit_code == 2
        assert result.stderr == f"error: cannot write to output directory {ro}: Read-only file system\n"


def test_missing_calibration_folder_is_said_before_the_model_loads(tmp_path):
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path / "missing.pth"), "--to", "onnx",
                                       "--precision", "int8", "--calib", str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr == f"error: calibration folder not found: {tmp_path / 'nope'}\n"


# ------------------------------------------------------------------------------- 8. checkpoints
def test_random_bytes_are_not_called_a_pickle_and_get_no_weights_only_advice(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    numpy_inside = tmp_path / "numpy.pth"
    torch.save({"w": torch.zeros(2), "n": np.zeros(2)}, numpy_inside)
    with pytest.raises(CheckpointError) as corrupt:
        load_checkpoint(junk)
    assert str(corrupt.value) == (f"cannot read checkpoint {junk}: file is corrupt or not a PyTorch checkpoint "
                                  "(no torch.save weights in it)")
    with pytest.raises(CheckpointError) as objects:
        load_checkpoint(numpy_inside)
    assert str(objects.value).startswith(f"refusing to load {numpy_inside}: besides tensors it holds Python objects ")
    for message in (str(corrupt.value), str(objects.value)):
        assert "weights_only" not in message and "\n" not in message


def test_an_old_pickle_protocol_raises_no_torch_warning(tmp_path):
    plain = tmp_path / "plain.pth"
    plain.write_bytes(b"\x80\x04" + np.random.default_rng(1).bytes(100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(plain)


def test_one_wrong_shaped_tensor_is_named_without_variant(tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    name = "backbone.trans.transformer_blocks.0.attn.to_q.c.weight"
    state["state_dict"][name] = torch.zeros(66, 208, 1, 1)
    path = tmp_path / "one_wrong.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as failure:
        load_checkpoint(path)
    assert str(failure.value) == (f"{path} does not fit TopFormer-tiny with 150 classes (no variant fits; this is "
                                  f"the closest); 1 shape conflicts ({name}: checkpoint (66, 208, 1, 1) vs model "
                                  "(64, 208, 1, 1)); backbone.trans...attn.to_q has 66 outputs: not a multiple of "
                                  "key_dim 16 (assumed, as in every official config)")


# ------------------------------------------------------------------------ 7/8. images and calibration
def test_decompression_bomb_png_is_refused_from_its_header(tmp_path):
    bomb = png(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 400_000  # a small file claiming 169 megapixels
    with pytest.raises(ImageTooLarge, match="13000x13000 is 169 megapixels, over the 100-megapixel limit"):
        read_rgb(bomb)
    said = []
    Image.fromarray(np.full((80, 80, 3), 90, np.uint8)).save(tmp_path / "fine.png")
    images = load_calibration_images(tmp_path, 32, (SIZE, SIZE), warn=said.append)
    assert len(images) == 1
    assert said == [f"skipping calibration image {bomb}: 13000x13000 is 169 megapixels, over the 100-megapixel "
                    "limit for input images",
                    f"only 1 usable calibration image in {tmp_path} (32 asked for): int8 ranges from so few may "
                    "not fit real inputs"]


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_a_much_larger_image_is_decoded_with_reduction(kind, tmp_path):
    path = tmp_path / f"large.{kind}"
    Image.new("RGB", (4096, 3072), (200, 100, 50)).save(path, quality=95)
    rgb = read_rgb(path, at_least=(SIZE, SIZE))
    assert rgb.dtype == np.uint8 and 2 * SIZE <= min(rgb.shape[:2]) < 4 * SIZE and rgb.shape[2] == 3
    assert np.abs(rgb.astype(int) - (200, 100, 50)).max() <= 2
    assert read_rgb(path).shape == (3072, 4096, 3)  # without at_least: every pixel


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    grey = read_rgb(png(tmp_path / "grey16.png", 20, 10, bit_depth=16, value=30000))
    colour = read_rgb(png(tmp_path / "rgb16.png", 20, 10, bit_depth=16, rgb=True, value=30000))
    for rgb in (grey, colour):
        assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8
        assert np.all(np.abs(rgb.astype(int) - round(30000 / 257)) <= 1)  # 117, not 255


# ------------------------------------------------------------------------------------------- 5. eval
@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "demo.pth"
    torch.save({"state_dict": build_model("tiny", NUM_CLASSES).state_dict()}, path)
    return path


@pytest.fixture()
def data(tmp_path):
    return write_dataset(tmp_path / "val", count=2, size=(SIZE, SIZE), seed=7, split="val")


def _label(data: Path, index: int = 0) -> Path:
    return sorted((data / "annotations").glob("*.png"))[index]


def test_out_of_range_labels_are_an_error_or_counted(demo_checkpoint, data):
    label = _label(data)
    values = np.asarray(Image.open(label)).copy()
    values[: SIZE // 2] = 200  # neither a class (0..10) nor the ignore index 255
    Image.fromarray(values).save(label)
    result = CliRunner().invoke(main, ["eval", "--model", str(demo_checkpoint), "--data", str(data), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {label}: {SIZE * SIZE // 2} pixels have label values outside the models' "
                           f"{NUM_CLASSES} classes") and "raw values 200;" in line and "--skip-out-of-range" in line
    result = CliRunner().invoke(main, ["eval", "--model", str(demo_checkpoint), "--data", str(data), "--json",
                                       "--skip-out-of-range-labels"])
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert row["out_of_range_pixels"] == SIZE * SIZE // 2 and row["pixels"] == 2 * SIZE * SIZE - SIZE * SIZE // 2
    assert result.stderr.startswith(f"warning: {SIZE * SIZE // 2} labelled pixels (25.0%) had values outside")


def test_labels_that_are_all_ignored_are_an_error(demo_checkpoint, data):
    for label in (data / "annotations").glob("*.png"):
        Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(label)
    with pytest.raises(TopformerDeployError, match="no pixel to score: every label value is the ignore index 255"):
        evaluate_models([str(demo_checkpoint)], data)


def test_eval_refuses_a_nan_checkpoint_and_a_bomb_image(demo_checkpoint, data, tmp_path):
    state = torch.load(demo_checkpoint, weights_only=True)
    state["state_dict"]["decode_head.conv_seg.bias"][3] = float("inf")
    nan = tmp_path / "inf.pth"
    torch.save(state, nan)
    result = CliRunner().invoke(main, ["eval", "--model", str(nan), "--data", str(data)])
    assert result.exit_code == 2 and "the weights are not finite" in one_error_line(result.stderr)
    image = sorted((data / "images").glob("*"))[0]
    image.unlink()
    png(image.with_suffix(".png"), 13000, 13000)
    png(_label(data), 13000, 13000)
    result = CliRunner().invoke(main, ["eval", "--model", str(demo_checkpoint), "--data", str(data)])
    assert result.exit_code == 2 and "over the 100-megapixel limit" in one_error_line(result.stderr)


def test_the_recorded_checkpoint_is_absolute_and_checked_by_hash(demo_checkpoint, data, tmp_path, monkeypatch):
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "demo.pth").write_bytes(demo_checkpoint.read_bytes())
    result = run_cli("export", "--checkpoint", "demo.pth", "--to", "onnx", "--input-size", SIZE, "--out", "out",
                     "--json", cwd=export_dir)  # the path as typed: relative
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["checkpoint"]["path"] == str(export_dir / "demo.pth")
    artifact = manifest["path"] if os.path.isabs(manifest["path"]) else str(export_dir / manifest["path"])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (row,) = evaluate_models([artifact], data)
    assert row["reference"] == str(export_dir / "demo.pth") and row["agreement"] > 0.99
    # a different file under the recorded name: not used as the reference
    torch.manual_seed(1)
    torch.save({"state_dict": build_model("tiny", NUM_CLASSES).state_dict()}, export_dir / "demo.pth")
    result = CliRunner().invoke(main, ["eval", "--model", artifact, "--data", str(data), "--json"])
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert row["agreement"] is None and row["reference"] is None
    assert result.stderr == (f"warning: {export_dir / 'demo.pth'} is not the checkpoint "
                             f"{Path(artifact).name} was exported from (its sha256 differs): no agreement column "
                             "(pass --reference CHECKPOINT)\n")


# ------------------------------------------------------------------------------------ 8. file modes
def test_side_files_get_the_artifacts_permissions(tmp_path):
    from topformer_deploy.export.job import publish

    work = tmp_path / ".staging"
    work.mkdir()
    staged, side = work / "m.onnx", work / "side.json"
    for path in (staged, side):
        path.write_bytes(b"x")
        path.chmod(0o600)  # what tempfile and onnxruntime's calibration cache create
    result = publish(staged, tmp_path / "m.onnx", {"artifact": "m.onnx"}, {".calibration.json": side})
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (result.path, result.manifest_path,
                                                        tmp_path / "m.onnx.calibration.json")}
    assert set(modes.values()) == {0o666 & ~umask}, modes
