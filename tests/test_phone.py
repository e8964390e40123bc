"""Phones as the design says: ``bench --device adb:SERIAL`` and ``breakdown --device adb:SERIAL``, nothing else.

The fake adb device runs this machine's programs, so its ABI is this machine's; like a phone it has no Python
(``FAKE_ADB_PYTHON=none``). The benchmark_model stand-in (tests/fakes/benchmark_model, wrapped in a static ELF
of this machine by tests/fakes/exec_wrapper.c) takes the real tools' flags, really runs the model with the
LiteRT interpreter and prints the real formats, so the adb path, the breakdown over adb and the
operator-to-stage attribution run on real numbers. Phones built from the fixtures (Pixel 6 / Snapdragon 865
cpuinfo and thermal dumps) stand in for ``devices``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import one_line_error, run_cli
from fakes.binaries import STAND_IN, fake_elf
from topformer_deploy.bench.benchmark_model import identify_tool
from topformer_deploy.bench.binaries import (ABI_ELF, ENV_VAR, BenchmarkBinary, Target, cached_binary, check_binary,
                                             find_binary, read_elf, remember)
from topformer_deploy.bench.conditions import UNAME_ABIS
from topformer_deploy.bench.result import load_result
from topformer_deploy.errors import TopformerDeployError

FAKE_ADB = Path(__file__).parent / "fakes" / "adb"
SERIAL = "emulator-5554"
HOST_ABI = UNAME_ABIS[platform.machine()]
HOST_ELF = ABI_ELF[HOST_ABI]
OTHER_ABI = "x86_64" if HOST_ABI == "arm64-v8a" else "arm64-v8a"

#: Phones for `devices`: cpuinfo and thermalservice dumps from the fixtures; the cpufreq maxima (not in any
#: sourced fixture) are the SoCs' published clocks; the properties are what such a phone reports.
PHONES = {
    "pixel6": {"cpuinfo": "android_proc_cpuinfo_google_tensor_g1_pixel6.txt",
               "thermal": "android_dumpsys_thermalservice_tensor_pixel6_class_bcl_values.txt",
               "props": {"ro.product.model": "Pixel 6", "ro.product.manufacturer": "Google", "ro.soc.model": "GS101",
                         "ro.board.platform": "gs101", "ro.product.cpu.abi": "arm64-v8a",
                         "ro.build.version.release": "14", "ro.build.version.sdk": "34"},
               "max_khz": [1803000] * 4 + [2253000] * 2 + [2802000] * 2,
               "clusters": [("Cortex-A55", [0, 1, 2, 3], 1803000), ("Cortex-A76", [4, 5], 2253000),
                            ("Cortex-X1", [6, 7], 2802000)],
               "soc": "GS101", "temp_c": 27.000002},   # the hottest CPU sensor of the dump's current values
    "sd865": {"cpuinfo": "android_proc_cpuinfo_snapdragon865_sm8250.txt",
              "thermal": "android_dumpsys_thermalservice_snapdragon730_pixel_class.txt",
              "props": {"ro.product.model": "Mi 10", "ro.product.manufacturer": "Xiaomi", "ro.board.platform": "kona",
                        "ro.product.cpu.abi": "arm64-v8a", "ro.build.version.release": "13",
                        "ro.build.version.sdk": "33"},
              "max_khz": [1804800] * 4 + [2419200] * 3 + [2841600],
              "clusters": [("Kryo 4xx Silver (Cortex-A55)", [0, 1, 2, 3], 1804800),
                           ("Cortex-A77", [4, 5, 6], 2419200), ("Cortex-A77", [7], 2841600)],
              "soc": "kona", "temp_c": 44.1},
}


@pytest.fixture
def phone(tmp_path) -> dict:
    """Environment of a CLI run against the fake phone: no Python on it, a private cache, no binary known."""
    sandbox = tmp_path / "device"
    (sandbox / "data" / "local" / "tmp").mkdir(parents=True)
    (tmp_path / "local-tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_ADB_") and k != ENV_VAR}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), ADB=str(FAKE_ADB), FAKE_ADB_SANDBOX=str(sandbox),
               FAKE_ADB_LOG=str(tmp_path / "adb.log"), FAKE_ADB_PYTHON="none", TMPDIR=str(tmp_path / "local-tmp"))
    return env


def left_on_device(env) -> list[str]:
    return [p.name for p in (Path(env["FAKE_ADB_SANDBOX"]) / "data" / "local" / "tmp").iterdir()]


def adb_calls(env) -> list[list[str]]:
    log = Path(env["FAKE_ADB_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def fixture_phone(tmp_path, env, name, device_outputs) -> dict:
    """Make the fake device the phone ``name``: its /proc/cpuinfo, cpufreq, (no) thermal zones, dumpsys, props."""
    spec = PHONES[name]
    root = tmp_path / f"{name}-root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text((device_outputs / spec["cpuinfo"]).read_text())
    (root / "sys" / "class" / "thermal").mkdir(parents=True)  # no readable zone, as on most phones without root
    for cpu, khz in enumerate(spec["max_khz"]):
        folder = root / "sys" / "devices" / "system" / "cpu" / f"cpu{cpu}"
        (folder / "cpufreq").mkdir(parents=True)
        (folder / "online").write_text("1\n")
        for file, value in (("cpuinfo_max_freq", khz), ("scaling_cur_freq", khz // 2),
                            ("scaling_governor", "schedutil")):
            (folder / "cpufreq" / file).write_text(f"{value}\n")
    env.update(FAKE_ADB_ROOT=str(root), FAKE_ADB_THERMALSERVICE=str(device_outputs / spec["thermal"]),
               FAKE_ADB_PROPS=json.dumps(spec["props"]))
    return spec


# ------------------------------------------------------------------------------------------------ the binary
def test_elf_check_reads_the_headers_and_refuses_what_cannot_run(tmp_path, stand_in):
    android_arm64 = Target("arm64-v8a", "android")
    static = read_elf(stand_in())
    assert (static.abi, static.platform) == (HOST_ABI, "static")
    assert read_elf(Path(sys.executable).resolve()).platform in ("linux", "static")
    phone_binary = fake_elf(tmp_path / "bm-android", 64, 183, "/system/bin/linker64")
    assert (read_elf(phone_binary).abi, read_elf(phone_binary).platform) == ("arm64-v8a", "android")
    assert check_binary(phone_binary, android_arm64, "adb:phone") == phone_binary
    assert read_elf(fake_elf(tmp_path / "arm32", 32, 40, "/system/bin/linker")).abi == "armeabi-v7a"
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    assert read_elf(script) is None
    refusals = [(script, android_arm64, "is not an ELF executable"),
                (fake_elf(tmp_path / "x86", 64, 62), android_arm64, "is built for x86_64, but adb:phone is arm64-v8a"),
                (fake_elf(tmp_path / "glibc", 64, 183, "/lib/ld-linux-aarch64.so.1"), android_arm64,
                 r"linked for Linux \(/lib/ld-linux-aarch64.so.1\), but adb:phone runs Android"),
                (phone_binary, Target("arm64-v8a", "linux"), "linked for Android"),
                (tmp_path / "missing", android_arm64, "no such benchmark binary")]
    for path, target, message in refusals:
        with pytest.raises(TopformerDeployError, match=message):
            check_binary(path, target, "adb:phone")
    with pytest.raises(TopformerDeployError, match="storage.googleapis.com/litert/binaries/latest/android_arm64"):
        check_binary(fake_elf(tmp_path / "x86b", 64, 62), android_arm64, "adb:phone")


@pytest.mark.parametrize("tool, flavor, threads", [("tflite", "tflite", True), ("litert", "litert", True),
                                                   ("litert-2025-06", "litert", False)])
def test_the_tool_is_identified_from_its_help(tool, flavor, threads):
    proc = subprocess.run([sys.executable, str(STAND_IN), "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FAKE_BENCHMARK_MODEL_TOOL": tool})
    assert proc.returncode == 1 and "usage:" in proc.stderr
    assert identify_tool(proc.stdout + proc.stderr) == {"flavor": flavor, "threads": threads}
    assert identify_tool("usage: ./run_model --graph=x\n\t--iterations=1\tint32\toptional") == \
        {"flavor": None, "threads": False}


def test_binary_lookup_order_and_the_per_abi_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    target = Target("arm64-v8a", "android")
    given, from_env, on_path = (fake_elf(tmp_path / name, 64, 183) for name in ("given", "env", "on-path"))
    assert find_binary(target, "adb:phone") is None
    (tmp_path / "bin").mkdir()
    os.symlink(on_path, tmp_path / "bin" / "benchmark_model")
    assert find_binary(target, "adb:phone").source == "PATH"
    remember(BenchmarkBinary(given, "option", target), {"flavor": "tflite", "threads": True})
    remembered = find_binary(target, "adb:phone")
    assert remembered.source == "cache" and remembered.path.read_bytes() == given.read_bytes()
    assert find_binary(Target("x86_64", "android"), "adb:other") is None      # remembered for its ABI only
    monkeypatch.setenv(ENV_VAR, str(from_env))
    assert find_binary(target, "adb:phone").source == "env"
    assert find_binary(target, "adb:phone", str(given)).source == "option"
    monkeypatch.setenv(ENV_VAR, str(fake_elf(tmp_path / "x86", 64, 62)))
    with pytest.raises(TopformerDeployError, match=rf"\${ENV_VAR}\) is built for x86_64"):
        find_binary(target, "adb:phone")
    monkeypatch.delenv(ENV_VAR)
    remembered.path.write_bytes(b"\x7fELF half a copy")                       # a damaged cache entry is not used
    assert cached_binary(target) is None and find_binary(target, "adb:phone").source == "PATH"


# ------------------------------------------------------------------------------------------------ devices
@pytest.mark.parametrize("name", list(PHONES))
def test_devices_reports_a_fixture_phone(name, phone, tmp_path, device_outputs):
    spec = fixture_phone(tmp_path, phone, name, device_outputs)
    proc = run_cli("devices", ["--json"], phone)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (device,) = report["devices"]
    assert (device["serial"], device["state"], device["model"], device["soc"], device["abi"]) == \
        (SERIAL, "device", spec["props"]["ro.product.model"], spec["soc"], "arm64-v8a")
    assert device["android"] == {"release": spec["props"]["ro.build.version.release"],
                                 "sdk": spec["props"]["ro.build.version.sdk"]}
    assert [(c["name"], c["cpus"], c["max_khz"]) for c in device["clusters"]] == spec["clusters"]
    assert device["governors"] == ["schedutil"]
    assert device["temp_c"] == pytest.approx(spec["temp_c"]) and device["android_thermal_status"] == 0
    assert device["python"]["error"] and not device["python"]["numpy"]
    assert device["benchmark_binary"] is None and device["engine"]["auto"] is None
    assert "no benchmark_model for android-arm64-v8a" in device["engine"]["reason"]
    assert "android_aarch64_benchmark_model" in device["engine"]["reason"]              # where to get one
    assert set(report["simulated"]) >= {"cores", "qemu", "cc", "userland", "ready"}
    assert "cortex-a76" in report["simulated"]["cores"]
    assert left_on_device(phone) == [] and not any(call[2:3] == ["push"] for call in adb_calls(phone))

    phone[ENV_VAR] = str(fake_elf(tmp_path / "bm", 64, 183, "/system/bin/linker64"))  # a binary handed over
    proc = run_cli("devices", [], phone)
    assert proc.returncode == 0, proc.stderr
    for text in (spec["props"]["ro.product.model"], "arm64-v8a", f"{len(spec['clusters'][0][1])}x "
                 f"{spec['clusters'][0][0]} @ {spec['clusters'][0][2] / 1e6:.2f} GHz", "benchmark_model: ",
                 "simulated cores (--device sim:CORE)"):
        assert text in proc.stdout, text
    device = json.loads(run_cli("devices", ["--json"], phone).stdout)["devices"][0]
    assert device["engine"]["auto"] == "benchmark_model" and device["benchmark_binary"]["source"] == "env"


# ------------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("case, pattern", [
    ("wrong-abi", rf"is built for {OTHER_ABI}, but adb:{SERIAL} is {HOST_ABI}"),
    ("glibc", r"is linked for Linux \(/lib/ld-linux.so.2\), but adb:emulator-5554 runs Android"),
    ("script", "is not an ELF executable"),
    ("missing", rf"no usable python3 .*; no benchmark_model for android-{HOST_ABI} is known: .*"
                r"--benchmark-binary PATH"),
    ("litert-2025-06", "LiteRT's CompiledModel benchmark_model built before 2025-10.*thread count cannot be set"),
])
def test_a_binary_that_cannot_serve_is_one_line_and_leaves_nothing(case, pattern, phone, tmp_path, stand_in):
    model = tmp_path / "m.tflite"  # never reaches the device: every refusal comes first
    model.write_bytes(b"\0" * 64)
    binary = {"wrong-abi": lambda: fake_elf(tmp_path / "bm", *ABI_ELF[OTHER_ABI]),
              "glibc": lambda: fake_elf(tmp_path / "bm", *HOST_ELF, "/lib/ld-linux.so.2"),
              "script": lambda: STAND_IN, "missing": lambda: None,
              "litert-2025-06": lambda: stand_in("litert-2025-06")}[case]()
    args = ["--model", str(model), "--device", f"adb:{SERIAL}"]
    args += ["--benchmark-binary", str(binary)] if binary else []
    one_line_error(run_cli("bench", args, phone), 2, pattern)
    assert left_on_device(phone) == []
    pushed = [call[-1] for call in adb_calls(phone) if call[2:3] == ["push"]]
    assert pushed == ([] if case != "litert-2025-06" else [pushed[0]])  # only the tool itself, to ask its --help
    assert not (Path(phone["XDG_CACHE_HOME"]) / "topformer-deploy" / "benchmark_model").exists()  # not remembered


def test_onnx_on_a_phone_without_python_says_what_it_needs(phone, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0" * 64)
    one_line_error(run_cli("bench", ["--model", str(model), "--device", "adb"], phone), 3,
                   "cannot run the python runner: no usable python3 .*benchmark_model runs .tflite only")
    assert left_on_device(phone) == []


# ------------------------------------------------------------------------------------------------ runs
@pytest.mark.slow
def test_a_binary_given_once_is_remembered_and_runs_real_numbers(phone, tmp_path, artifacts, stand_in):
    out = tmp_path / "first.json"
    proc = run_cli("bench", ["--model", str(artifacts["tflite"]), "--device", "adb", "--benchmark-binary",
                             str(stand_in()), "--runs", "20", "--warmup", "2", "--repeat", "2", "--json", str(out)],
                   phone)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    tool = doc["runner"]["benchmark_model"]["tool"]
    assert (doc["config"]["engine"], doc["config"]["engine_requested"]) == ("benchmark_model", "auto")
    assert "--benchmark-binary given" in doc["config"]["engine_reason"]
    assert tool["flavor"] == "tflite" and tool["threads"] and tool.get("remembered") and tool["abi"] == HOST_ABI
    assert doc["runtime"] == {"name": "TFLite benchmark_model", "version": f"sha256:{tool['sha256'][:12]}"}
    assert len(doc["latencies_ms"]) == 2 and all(x > 0 for x in doc["latencies_ms"])  # one median per invocation
    assert doc["runner"]["benchmark_model"]["inference"]["count"] == 20
    assert doc["device"]["abi"] == HOST_ABI and doc["conditions"]["taskset"]
    argv = next(c for c in adb_calls(phone) if c[2:3] == ["shell"] and "--graph=" in c[-1])[-1]
    for flag in ("--num_threads=1", "--warmup_runs=2", "--num_runs=20", "--min_secs=0", "--use_xnnpack=true"):
        assert flag in argv
    assert left_on_device(phone) == []

    out = tmp_path / "again.json"  # nothing but the device: auto finds the remembered binary
    proc = run_cli("bench", ["--model", str(artifacts["tflite"]), "--device", f"adb:{SERIAL}", "--runs", "5",
                             "--warmup", "1", "--json", str(out)], phone)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert doc["runner"]["benchmark_model"]["tool"]["source"] == "cache"
    assert "no usable python3" in doc["config"]["engine_reason"] and "remembered" in doc["config"]["engine_reason"]
    assert "engine: benchmark_model (--engine auto: no usable python3" in " ".join(proc.stderr.split())
    assert left_on_device(phone) == []


@pytest.mark.slow
def test_litert_tool_with_threads_and_its_profiler(phone, tmp_path, artifacts, stand_in):
    out = tmp_path / "litert.json"
    proc = run_cli("bench", ["--model", str(artifacts["tflite"]), "--device", "adb", "--benchmark-binary",
                             str(stand_in("litert")), "--threads", "2", "--runs", "5", "--warmup", "1",
                             "--op-profiling", "--json", str(out)], phone)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    bm = doc["runner"]["benchmark_model"]
    assert doc["runtime"]["name"] == "LiteRT benchmark_model (CompiledModel)" and doc["config"]["threads"] == 2
    assert bm["inference"]["count"] == 5 and bm["delegate"]["name"] == "TfLiteXNNPackDelegate"
    assert any(r["name"].startswith("Delegate/Convolution (NHWC, F32)") for r in bm["ops"])
    argv = next(c for c in adb_calls(phone) if c[2:3] == ["shell"] and "--graph=" in c[-1])[-1]
    assert "--use_profiler=true" in argv and "--num_threads=2" in argv and "--use_xnnpack" not in argv
    assert left_on_device(phone) == []


@pytest.mark.slow
def test_the_literal_command_measures_tiny_512_and_reuses_its_export(phone, tmp_path, stand_in, monkeypatch):
    """`topformer-deploy bench --device adb:SERIAL`, nothing else, once the binary is known (here: remembered)."""
    monkeypatch.setenv("XDG_CACHE_HOME", phone["XDG_CACHE_HOME"])
    remember(BenchmarkBinary(stand_in(), "option", Target(HOST_ABI, "android")), {"flavor": "tflite"})  # as a run does
    phone_cache = Path(phone["XDG_CACHE_HOME"])
    proc = run_cli("bench", ["--device", f"adb:{SERIAL}"], phone, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "tiny/tflite/fp32/t1/512x512/logits" in proc.stdout and "benchmark_model / 1" in proc.stdout
    assert "engine: benchmark_model (--engine auto: no usable python3" in " ".join(proc.stderr.split())
    exported = sorted((phone_cache / "topformer-deploy" / "artifacts").glob("tiny_512x512_tflite_fp32-*/*.tflite"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    out = tmp_path / "again.json"
    proc = run_cli("bench", ["--device", f"adb:{SERIAL}", "--runs", "3", "--json", str(out)], phone, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert Path(doc["model"]["path"]) == exported[0] and exported[0].stat().st_mtime_ns == stamp  # not exported again
    assert doc["model"]["manifest"]["weights"] == "random" and doc["config"]["engine"] == "benchmark_model"
    assert left_on_device(phone) == []


@pytest.mark.slow
def test_breakdown_over_adb_reconciles_and_attributes_the_operators(phone, tmp_path, stand_in):
    phone[ENV_VAR] = str(stand_in())
    out = tmp_path / "breakdown.json"
    proc = run_cli("breakdown", ["--device", f"adb:{SERIAL}", "--input-size", "64", "--runs", "50",
                                 "--out", str(tmp_path / "stages"), "--json", str(out)], phone, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["engine"] == "benchmark_model" and "no usable python3" in doc["config"]["engine_reason"]
    assert doc["reconciled"], (doc["reconciliation"], doc["reconciliation_rounds"])
    view = doc["operator_view"]
    assert view["available"] and view["source"].startswith("benchmark_model")
    check = view["reconciliation"]
    assert check["attributed_share"] >= 0.95, view["unattributed"]
    assert set(check["stages"]) == {"tpm", "sase", "sim", "head"}
    # the operators' sum against the stage artifacts' own times: the same order of magnitude (benchmark_model gives
    # per-operator means, which on a shared machine carry preemption spikes; a unit or per-call slip is 10x-1000x)
    assert 0.4 <= check["ratio"] <= 3.0, check
    assert left_on_device(phone) == []
