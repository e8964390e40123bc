"""``topformer-deploy bench`` end to end: local, ssh to a real sshd, adb through the fake adb.

The python engine runs a real TFLite and a real ONNX artifact (Tiny, 64x64, 8 classes) through each
transport; every failure must be one clear line on stderr, the right exit code, and nothing left
behind in the device's temp area.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pytest

from clitools import one_line_error, run_cli
from sshd import free_port, start_sshd
from topformer_deploy.artifact import sha256_file
from topformer_deploy.bench.lock import device_lock
from topformer_deploy.bench.result import load_result

FAKE_ADB = Path(__file__).parent / "fakes" / "adb"
RUNS = 3


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> str:
    """A Python without numpy or any runtime: a device that cannot run the python engine."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.create(root, with_pip=False, system_site_packages=False)
    return str(root / "bin" / "python")


@pytest.fixture
def env(tmp_path, sshd) -> dict:
    """Environment of a CLI run: private lock/cache dir, the test sshd's config, the fake adb device."""
    sandbox = tmp_path / "device"
    (sandbox / "data" / "local" / "tmp").mkdir(parents=True)
    e = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_ADB_")}
    e.update(XDG_CACHE_HOME=str(tmp_path / "cache"), TOPFORMER_DEPLOY_SSH_CONFIG=str(sshd.config),
             ADB=str(FAKE_ADB), FAKE_ADB_SANDBOX=str(sandbox), FAKE_ADB_LOG=str(tmp_path / "adb.log"),
             SSH_DEST=sshd.device.removeprefix("ssh:"), SSHD_TMPDIR=str(sshd.tmpdir),
             TMPDIR=str(tmp_path / "local-tmp"))
    (tmp_path / "local-tmp").mkdir()
    return e


def device_tmp(env) -> Path:
    return Path(env["FAKE_ADB_SANDBOX"]) / "data" / "local" / "tmp"


def leftovers(env) -> list[str]:
    """Whatever is left in the temp areas of the three devices (all must be empty after a bench)."""
    areas = (device_tmp(env), Path(env["SSHD_TMPDIR"]), Path(env["TMPDIR"]))
    return [str(p) for area in areas for p in area.iterdir()]


def cli(args, env, timeout=300, **kwargs):
    return run_cli("bench", args, env, timeout, **kwargs)


def device_spec(kind: str, sshd) -> str:
    return {"local": "local", "ssh": sshd.device, "adb": "adb", "adb-old": "adb:emulator-5554"}[kind]


@pytest.mark.parametrize("kind, fmt", [("local", "tflite"), ("local", "onnx"), ("ssh", "onnx"), ("adb", "onnx")]
                         + [pytest.param(k, "tflite", marks=pytest.mark.slow) for k in ("ssh", "adb", "adb-old")])
def test_python_engine_end_to_end(kind, fmt, artifacts, sshd, env, tmp_path):
    if kind == "adb-old":
        env["FAKE_ADB_OLD"] = "1"          # an adb that always exits 0, with CRLF and merged stderr
    out = tmp_path / "result.json"
    proc = cli(["--model", str(artifacts[fmt]), "--device", device_spec(kind, sshd), "--runs", str(RUNS),
                "--warmup", "1", "--python", sys.executable, "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert doc["stats"]["count"] == RUNS == len(doc["latencies_ms"])
    assert all(x > 0 for x in doc["latencies_ms"])
    assert doc["config_key"] == f"tiny/{fmt}/fp32/t1/64x64/logits"
    assert doc["config"]["engine"] == "python"
    assert doc["device"]["transport"] == kind.split("-")[0]
    assert doc["device"]["arch"] == os.uname().machine and doc["device"]["id"]
    assert doc["runtime"]["name"] == {"tflite": "ai_edge_litert", "onnx": "onnxruntime"}[fmt]
    assert doc["model"]["manifest"]["format"] == fmt and len(doc["model"]["sha256"]) == 64
    assert doc["runner"]["model"]["inputs"][0]["shape"] in ([1, 64, 64, 3], [1, 3, 64, 64])
    assert doc["conditions"]["temp_before_c"] is None or doc["conditions"]["temp_before_c"] > 0
    assert "p50 ms" in proc.stdout and doc["config_key"] in proc.stdout        # the human table
    if kind.startswith("adb"):
        assert doc["device"]["id"] == "emulator-5554" and doc["device"]["model"] == "Fake Phone 1"
    assert leftovers(env) == []


def test_missing_model_file(env, tmp_path):
    proc = cli(["--model", str(tmp_path / "nope.tflite")], env)
    one_line_error(proc, 2, "no such model file")


def test_unreachable_host_fails_within_seconds(artifacts, env):
    start = time.monotonic()
    proc = cli(["--model", str(artifacts["onnx"]), "--device", f"ssh:nobody@127.0.0.1:{free_port()}"], env)
    one_line_error(proc, 3, "Connection refused|connect to host")
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("kind", ["adb", "adb-old", "ssh"])
def test_device_without_runtime(kind, artifacts, bare_python, sshd, env):
    if kind == "adb-old":
        env["FAKE_ADB_OLD"] = "1"
    proc = cli(["--model", str(artifacts["onnx"]), "--device", device_spec(kind, sshd), "--runs", "2",
                "--python", bare_python], env)
    one_line_error(proc, 3, "numpy|runtime")
    assert leftovers(env) == []


def test_serial_with_shell_metacharacters_is_refused(artifacts, env, tmp_path):
    pwned = tmp_path / "pwned"
    proc = cli(["--model", str(artifacts["onnx"]), "--device", f"adb:a;touch {pwned}"], env)
    one_line_error(proc, 2, "refusing adb serial")
    assert not pwned.exists()
    assert not Path(env["FAKE_ADB_LOG"]).exists()                 # adb never ran


@pytest.mark.parametrize("state", ["offline", "unauthorized"])
def test_offline_or_unauthorized_device(state, artifacts, env):
    env["FAKE_ADB_STATE"] = state
    start = time.monotonic()
    proc = cli(["--model", str(artifacts["onnx"]), "--device", "adb"], env)
    one_line_error(proc, 3, state)
    assert time.monotonic() - start < 20
    assert leftovers(env) == []


def test_dropped_connection_mid_run(artifacts, env):
    env.update(FAKE_ADB_DROP_ON="device_runner.py --model", FAKE_ADB_DROP_AFTER="1")
    proc = cli(["--model", str(artifacts["onnx"]), "--device", "adb", "--runs", "5000",
                "--python", sys.executable], env)
    one_line_error(proc, 3, "connection lost")
    assert leftovers(env) == []                  # cleaned up after reconnecting


def test_hot_device_refused_unless_allowed(artifacts, env, tmp_path):
    env["FAKE_ADB_VCGENCMD"] = "85.0 0x50005"                      # hot and throttled right now
    args = ["--model", str(artifacts["onnx"]), "--device", "adb", "--runs", "2", "--python", sys.executable]
    one_line_error(cli(args, env), 3, "85.0 C is above --max-temp 80")
    out = tmp_path / "hot.json"
    proc = cli([*args, "--allow-hot", "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    cond = load_result(out)["conditions"]
    assert cond["hot"] is True and cond["allow_hot"] is True and cond["temp_before_c"] == 85.0
    assert cond["throttled"] == "0x50005" and "under-voltage-now" in cond["throttled_flags"]
    assert "hot or throttled" in proc.stderr
    assert leftovers(env) == []


def test_concurrent_bench_waits_for_the_device_lock(artifacts, env, tmp_path, monkeypatch):
    out = tmp_path / "waited.json"
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])      # the same lock directory as the CLI's
    with device_lock("local"):                                       # "the first bench" holds the device
        proc = subprocess.Popen([sys.executable, "-m", "topformer_deploy", "bench", "--model",
                                 str(artifacts["onnx"]), "--runs", "2", "--json", str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        assert proc.poll() is None and not out.exists()            # still waiting, nothing measured
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert load_result(out)["stats"]["count"] == 2


@pytest.mark.slow
def test_compare_interleaves_two_artifacts(artifacts, env, tmp_path):
    out = tmp_path / "ab.json"
    proc = cli(["--compare", str(artifacts["tflite"]), str(artifacts["onnx"]), "--runs", "3", "--rounds", "2",
                "--warmup", "1", "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert doc["schema"] == "topformer-deploy/bench-compare" and doc["interleave"]["rounds"] == 2
    assert len(doc["a"]["latencies_ms"]) == len(doc["b"]["latencies_ms"]) == 6
    assert (doc["a"]["config"]["format"], doc["b"]["config"]["format"]) == ("tflite", "onnx")
    assert "latency gate" in proc.stdout + proc.stderr


def test_save_baseline_then_gate(artifacts, env, tmp_path):
    base = tmp_path / "baselines" / "this-machine.json"
    args = ["--model", str(artifacts["onnx"]), "--runs", "12", "--warmup", "2"]
    proc = cli([*args, "--save-baseline", str(base)], env)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(base.read_text())
    assert list(saved["entries"]) == ["tiny/onnx/fp32/t1/64x64/logits"]
    proc = cli([*args, "--baseline", str(base), "--json", str(tmp_path / "cand.json")], env)
    assert proc.returncode in (0, 1, 2) and "latency gate" in proc.stdout, proc.stderr
    verdict = {0: "PASS", 1: "REGRESSION", 2: "INCONCLUSIVE"}[proc.returncode]
    assert verdict in proc.stdout


@pytest.mark.slow
def test_input_save_output_and_repeat(artifacts, env, tmp_path):
    """--input is pushed and used, --save-output comes back equal to an in-process run of the artifact."""
    from topformer_deploy.export import run_artifact

    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "in.npy", image)
    out, npy = tmp_path / "r.json", tmp_path / "out.npy"
    proc = cli(["--model", str(artifacts["tflite"]), "--device", "adb", "--python", sys.executable, "--runs", "2",
                "--warmup", "0", "--repeat", "2", "--cooldown", "0.2", "--input", str(tmp_path / "in.npy"),
                "--save-output", str(npy), "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert doc["stats"]["count"] == 4 and len(doc["repeats"]) == 2 and doc["runner"]["input_source"] != "random"
    np.testing.assert_allclose(np.load(npy), run_artifact(artifacts["tflite"], [image])[0], rtol=1e-5, atol=1e-5)
    assert leftovers(env) == []


def test_onnx_profile_is_pulled(artifacts, env, tmp_path):
    out, prof = tmp_path / "p.json", tmp_path / "profile"
    proc = cli(["--model", str(artifacts["onnx"]), "--device", "ssh:" + env["SSH_DEST"], "--python", sys.executable,
                "--runs", "2", "--warmup", "0", "--profile-dir", str(prof), "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    local = Path(load_result(out)["runner"]["profile"]["local_file"])
    assert local.parent == prof
    events = json.loads(local.read_text())
    assert any(e.get("cat") == "Node" for e in events)


def test_post_processing_timed_on_the_device(artifacts, env, tmp_path):
    """--post: each method timed by the runner on the device after every run, on a real photo by default;
    the result pools them per method beside network + post, and the table shows both."""
    out = tmp_path / "post.json"
    proc = cli(["--model", str(artifacts["onnx"]), "--device", "ssh:" + env["SSH_DEST"], "--python", sys.executable,
                "--runs", "3", "--warmup", "1", "--repeat", "2", "--post", "sparse", "--post", "nearest",
                "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    post = doc["post"]
    assert post["size"] == [64, 64] and post["layout"] == "NCHW" and list(post["methods"]) == ["sparse", "nearest"]
    for entry in post["methods"].values():
        assert len(entry["latencies_ms"]) == len(entry["total_ms"]) == 6 == entry["stats"]["count"]
        assert entry["total_stats"]["p50"] > doc["stats"]["p50"] * 0.5
    assert doc["runner"]["input_source"] != "random" and "post" not in doc["runner"]
    assert "post sparse p50 ms" in proc.stdout and "network + nearest p50 ms" in proc.stdout
    assert leftovers(env) == []
    proc = cli(["--model", str(artifacts["onnx"]), "--post", "sparse", "--engine", "benchmark_model",
                "--benchmark-binary", str(out)], env)
    one_line_error(proc, 2, "--post needs --engine python")


@pytest.mark.parametrize("args, pattern", [
    (["--model", "x.onnx", "--compare", "a", "b"], "either --model"),
    (["--model", "tiny.onnx", "--engine", "benchmark_model"], "tflite artifacts only"),
    (["--model", "resnet50"], "no such model file"),
    (["--model", "README.md"], "not a .tflite or .onnx"),
    (["--model", "tiny.onnx", "--device", "usb:1"], "bad --device"),
    (["--model", "tiny.onnx", "--cores", "banana"], "--cores"),
])
def test_bad_arguments_are_one_line(args, pattern, artifacts, env):
    args = [str(artifacts["onnx"]) if a == "tiny.onnx" else a for a in args]
    proc = cli(args, env, cwd=Path(__file__).resolve().parents[1])
    one_line_error(proc, 2, pattern)


def test_variant_name_is_exported_on_the_fly(env, tmp_path):
    out = tmp_path / "v.json"
    proc = cli(["--model", "tiny", "--format", "onnx", "--input-size", "64", "--runs", "2", "--warmup", "0",
                "--json", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert doc["config_key"] == "tiny/onnx/fp32/t1/64x64/logits"
    assert doc["model"]["manifest"]["weights"] == "random"
    assert Path(doc["model"]["path"]).parent.parent == Path(env["XDG_CACHE_HOME"]) / "topformer-deploy" / "artifacts"


@pytest.mark.slow
def test_on_the_fly_exports_are_keyed_by_content_and_a_corrupt_one_is_rebuilt(tmp_path, monkeypatch):
    from topformer_deploy.bench.cache import cache_key, resolve_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    key = cache_key("tiny", "onnx", (64, 64))
    assert key["versions"]["torch"] and key["versions"]["onnx"] and len(key["source"]) == 64
    assert cache_key("tiny", "onnx", (64, 96)) != key and cache_key("tiny", "tflite", (64, 64)) != key
    said = []
    first = resolve_model("tiny", "onnx", (64, 64), said.append)
    assert any("exporting tiny 64x64" in m for m in said)
    said.clear()
    assert resolve_model("tiny", "onnx", (64, 64), said.append) == first and said == []    # reused, not exported
    first.write_bytes(first.read_bytes() + b"\0")                                           # damaged in place
    again = resolve_model("tiny", "onnx", (64, 64), said.append)
    assert any("does not match its manifest's sha256" in m for m in said) and any("exporting" in m for m in said)
    manifest = json.loads(again.with_name(again.name + ".json").read_text())
    assert again == first and manifest["sha256"] == sha256_file(again)
    assert json.loads((again.parent / "key.json").read_text()) == key
