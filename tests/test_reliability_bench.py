"""Faults and bad inputs on the bench / gate / devices side (issue 19), each produced for real: output paths under
a file, a full disk when the results are written, edited and damaged manifests, runners that hang over the real
sshd and the fake adb (timeout, Ctrl-C, the connection killed), an sshd without SFTP, a device user's home.

Every test asserts the line the user reads, the exit code, and what is (not) left behind: locally, in the device's
temp area, among the device's processes. docs/reliability.md lists them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import one_line_error, run_cli
from faults import fill, tmpfs
from sshd import start_sshd
from test_bench import cli, device_tmp, env, leftovers, sshd  # noqa: F401 - the same devices as test_bench
from test_gate import make_result, samples
from topformer_deploy.artifact import declared_inputs, inputs_mismatch, manifest_path, read_manifest
from topformer_deploy.bench.harness import RUNNER

HUNG = ["--runs", "100000000", "--warmup", "0"]     # a runner that would run for hours: hung, as far as a user sees


# ------------------------------------------------------------------------------------------------ helpers
def processes_naming(*areas: Path) -> list[str]:
    """Command lines of the processes that name one of ``areas`` (a device's temp area)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(str(area) in line for area in areas):
                found.append(f"{proc.name}: {line[:160]}")
    return found


def left_running(*areas: Path, within: float = 15) -> list[str]:
    """The processes naming ``areas`` still there after ``within`` seconds (ending takes a moment)."""
    deadline = time.monotonic() + within
    while (found := processes_naming(*areas)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def copy_artifact(artifact: Path, folder: Path) -> Path:
    """The artifact and its manifest, copied into ``folder`` (to be edited there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact, folder / artifact.name)
    shutil.copy(manifest_path(artifact), manifest_path(folder / artifact.name))
    return folder / artifact.name


# -------------------------------------------------------------- 2. outputs checked first, results never lost
@pytest.mark.parametrize("option, target, reason", [
    ("--json", "a-file/result.json", "a-file is a file, not a directory"),
    ("--json", "a-dir", "it is a directory"),
    ("--save-output", "a-file/out.npy", "a-file is a file, not a directory"),
    ("--save-baseline", "a-file/sub/base.json", "a-file is a file, not a directory"),
    ("--profile-dir", "a-file/profile", "a-file is a file, not a directory"),
])
def test_bench_refuses_an_unwritable_output_before_measuring(option, target, reason, artifacts, env, tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    proc = cli(["--model", str(artifacts["onnx"]), "--device", "adb", "--python", sys.executable,
                option, str(tmp_path / target)], env)
    one_line_error(proc, 2, f"^error: cannot write {option} {tmp_path / target}: {reason}$")
    assert not Path(env["FAKE_ADB_LOG"]).exists()                  # the device was never even asked


def test_bench_reads_its_baselines_before_measuring(artifacts, env, tmp_path):
    single = write(tmp_path / "one-result.json", make_result(samples()))
    for args, pattern in ((["--baseline", str(tmp_path / "missing.json")], "missing.json: no such file"),
                          (["--save-baseline", single], "is a single bench result, not a baseline file")):
        proc = cli(["--model", str(artifacts["onnx"]), "--device", "adb", *args], env)
        one_line_error(proc, 2, pattern)
    assert not Path(env["FAKE_ADB_LOG"]).exists()


def test_a_full_disk_when_the_results_are_written_loses_no_result(artifacts, env, tmp_path):
    """The paths pass the check (an empty file fits), the disk is full when the files are written (a real ENOSPC):
    the table is printed first, each file that failed is one error line, and no partial file is left."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk)
        proc = cli(["--model", str(artifacts["onnx"]), "--device", "adb", "--python", sys.executable, "--runs", "3",
                    "--warmup", "0", "--json", str(disk / "r.json"), "--save-output", str(disk / "out.npy")], env)
        assert proc.returncode == 2, proc.stderr
        assert "p50 ms" in proc.stdout and "tiny/onnx/fp32/t1/64x64/logits" in proc.stdout    # the results
        assert errors(proc.stderr) == [f"error: cannot write --save-output {disk}/out.npy: No space left on device",
                                       f"error: cannot write --json {disk}/r.json: No space left on device"]
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    assert leftovers(env) == []


def test_gate_refuses_unwritable_outputs_before_its_verdict(tmp_path, env):
    base = write(tmp_path / "base.json", make_result(samples(seed=1)))
    (tmp_path / "a-file").write_text("x")
    for option, target, pattern in (("--chart", "gate.gif", "gate.gif: use a .png, .svg or .pdf file name"),
                                    ("--summary-md", "a-file/s.md", "a-file is a file, not a directory"),
                                    ("--github-benchmark", "a-file/gh.json", "a-file is a file, not a directory")):
        proc = run_cli("gate", ["--baseline", base, "--candidate", base, option, str(tmp_path / target)], env)
        one_line_error(proc, 2, f"^error: (cannot write )?{option} .*{pattern}$")    # 2: unusable input, as documented
        assert proc.stdout == ""


@pytest.mark.parametrize("slower, code, status", [(1.2, 1, "REGRESSION"), (1.0, 0, "PASS")])
def test_gate_outputs_that_cannot_be_written_never_change_the_verdict(slower, code, status, tmp_path, env):
    """A full disk under every output: the verdict is printed, each output is one error line, and the exit code
    is the verdict's (a pass stays 0, a regression stays 1: never a false regression, never a false pass)."""
    base = write(tmp_path / "base.json", make_result(samples(seed=1)))
    cand = write(tmp_path / "cand.json", make_result(samples(seed=2) * slower))
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "step-summary.md").write_text("earlier step\n")
        fill(disk)
        outputs = {"--chart": disk / "gate.png", "--summary-md": disk / "s.md", "--github-benchmark": disk / "gh.json"}
        proc = run_cli("gate", ["--baseline", base, "--candidate", cand,
                                *[str(x) for item in outputs.items() for x in item]],
                       {**env, "GITHUB_STEP_SUMMARY": str(disk / "step-summary.md")})
        assert proc.returncode == code, proc.stderr
        assert f"-> {status}" in proc.stdout
        # which small writes still find a free page on a full tmpfs varies (an append to the step summary's
        # page does): every failed one is one error line, none is a traceback, none changes the exit code
        failed = errors(proc.stderr)
        assert failed and "Traceback" not in proc.stderr
        names = {**{option: path for option, path in outputs.items()}, "$GITHUB_STEP_SUMMARY": disk / "step-summary.md"}
        for line in failed:
            option = line.split()[3]
            assert line == f"error: cannot write {option} {names[option]}: No space left on device"
        assert (disk / "step-summary.md").read_text().startswith("earlier step\n")
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "step-summary.md"]


@pytest.mark.parametrize("args, pattern", [
    (["--device", "usb:1"], "bad --device 'usb:1'"),
    (["--device", "sim:cortex-z9"], "unknown simulated core 'cortex-z9'"),
    (["--device", "ssh:pi@host;id"], "bad ssh host"),
    (["--chart", "chart.gif"], "--chart chart.gif: use a .png"),
    (["--json", "a-file/b.json"], "cannot write --json a-file/b.json: a-file is a file"),
])
def test_breakdown_refuses_bad_input_before_exporting_anything(args, pattern, tmp_path, env):
    (tmp_path / "a-file").write_text("x")
    proc = run_cli("breakdown", ["--engine", "python", "--input-size", "64", "--out", "stages", *args], env,
                   cwd=tmp_path)
    one_line_error(proc, 2, pattern)
    assert not (tmp_path / "stages").exists()


# ---------------------------------------------------------------- 4. the artifact checked against its manifest
def _edit(manifest: dict, how: str) -> None:
    if how == "size":                 # claims 256x256; the file is 64x64
        manifest["input_size"] = [256, 256]
    elif how == "shapes":             # the whole lie: size and input shapes
        manifest["input_size"] = [256, 256]
        for entry in (manifest["input"], *manifest["inputs"]):
            entry["shape"] = [1, 3, 256, 256]
    elif how == "sha256":
        manifest["sha256"] = "0" * 64


@pytest.mark.parametrize("how, pattern", [
    ("size", "its input is 64x64, the manifest records an input size of 256x256; export it again"),
    ("shapes", r"its inputs are \[1, 3, 64, 64\] float32, the manifest records \[1, 3, 256, 256\] float32"),
    ("sha256", r"its sha256 is [0-9a-f]{16}\.\.\., the manifest records 0000000000000000\.\.\."),
    ("damaged", r"its sha256 is [0-9a-f]{16}\.\.\., the manifest records [0-9a-f]{16}\.\.\. \(the file or the "
                r"manifest changed after export\)"),
])
def test_bench_checks_the_artifact_against_its_manifest_before_timing(how, pattern, artifacts, env, tmp_path):
    artifact = copy_artifact(artifacts["onnx"], tmp_path / "edited")
    if how == "damaged":
        with open(artifact, "ab") as fh:
            fh.write(b"\0")
    else:
        manifest = json.loads(manifest_path(artifact).read_text())
        _edit(manifest, how)
        manifest_path(artifact).write_text(json.dumps(manifest))
    out = tmp_path / "result.json"
    proc = cli(["--model", str(artifact), "--device", "adb", "--python", sys.executable, "--json", str(out)], env)
    one_line_error(proc, 2, f"^error: {artifact} does not match its manifest {artifact.name}.json: {pattern}")
    assert not out.exists()
    log = Path(env["FAKE_ADB_LOG"]).read_text()
    assert '"push"' not in log and "device_runner" not in log       # nothing pushed, nothing timed
    assert leftovers(env) == []


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_the_file_and_the_runtime_report_the_inputs_the_manifest_records(fmt, artifacts):
    """What bench compares before timing (the file's inputs) and after the first run (the runtime's, which the
    runner reports) agree with an honest manifest, names aside, and both catch an edited one."""
    artifact = artifacts[fmt]
    manifest = read_manifest(artifact)
    run = subprocess.run([sys.executable, str(RUNNER), "--model", str(artifact), "--runs", "1", "--warmup", "0"],
                         capture_output=True, text=True, timeout=300)
    runtime = json.loads(run.stdout)["model"]["inputs"]
    declared = declared_inputs(artifact)
    assert [(i["shape"], i["dtype"]) for i in declared] == [(i["shape"], i["dtype"]) for i in runtime]
    assert inputs_mismatch(manifest, declared) is None and inputs_mismatch(manifest, runtime) is None
    _edit(manifest, "size")
    assert inputs_mismatch(manifest, runtime) == "its input is 64x64, the manifest records an input size of 256x256"


# -------------------------------------------------------------------- 6. a hung runner never outlives its bench
def test_the_runner_dies_when_its_output_is_no_longer_read(artifacts, tmp_path):
    """The runner's watchdog: the reader of its stdout (sshd, adbd) is gone -> it is killed, and the watchdog ends."""
    model = copy_artifact(artifacts["onnx"], tmp_path / "unique")
    proc = subprocess.Popen([sys.executable, str(RUNNER), "--model", str(model), *HUNG], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    while len(processes_naming(model)) < 2:               # the runner and its watchdog
        assert proc.poll() is None
        time.sleep(0.1)
    proc.stdout.close()                                   # the connection closes
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert left_running(model) == []


def test_the_runner_ends_itself_at_its_time_limit(artifacts, tmp_path):
    model = copy_artifact(artifacts["onnx"], tmp_path / "unique")
    proc = subprocess.run([sys.executable, str(RUNNER), "--model", str(model), *HUNG, "--time-limit", "5"],
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and proc.stdout == b""
    assert left_running(model) == []


@pytest.mark.parametrize("kind", ["ssh", pytest.param("adb", marks=pytest.mark.slow)])
def test_a_hung_runner_is_ended_on_the_device_at_timeout(kind, artifacts, sshd, env):  # noqa: F811
    proc = cli(["--model", str(artifacts["onnx"]), "--device", {"ssh": sshd.device, "adb": "adb"}[kind],
                "--python", sys.executable, *HUNG, "--timeout", "10"], env)
    one_line_error(proc, 3, r"no answer within 10 s$")
    assert left_running(device_tmp(env), sshd.tmpdir) == []
    assert leftovers(env) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind, sig", [("ssh", signal.SIGINT), ("adb", signal.SIGINT), ("ssh", signal.SIGKILL),
                                       ("adb", signal.SIGKILL)])
def test_a_hung_runner_dies_with_its_connection(kind, sig, artifacts, sshd, env):  # noqa: F811
    """Ctrl-C (SIGINT to the terminal's process group: the CLI and its ssh/adb client) cleans up as usual; SIGKILL
    of the whole group cleans up nothing, and still the runner does not outlive the connection."""
    areas = (device_tmp(env), sshd.tmpdir)
    argv = [sys.executable, "-m", "topformer_deploy", "bench", "--model", str(artifacts["onnx"]), "--device",
            {"ssh": sshd.device, "adb": "adb"}[kind], "--python", sys.executable, *HUNG]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not any("device_runner.py" in line for line in processes_naming(*areas)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "no runner"
        time.sleep(0.2)
    time.sleep(1)                                          # timing, in the middle of its runs
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert left_running(*areas) == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted"
        assert leftovers(env) == []
    else:                                                  # nothing ran after the kill: only the temp dir is left
        assert proc.returncode == -signal.SIGKILL
        left = [p for area in areas for p in area.iterdir()]
        assert len(left) == 1 and left[0].name.startswith("topformer-deploy.")
        shutil.rmtree(left[0])


@pytest.mark.slow
def test_a_hung_benchmark_model_is_ended_on_the_device_at_timeout(artifacts, env, stand_in):
    """The native engine has no watchdog of its own: its pid, recorded on the device, is killed after the timeout."""
    proc = cli(["--model", str(artifacts["tflite"]), "--device", "adb", "--engine", "benchmark_model",
                "--benchmark-binary", str(stand_in()), *HUNG, "--timeout", "15"], env)
    one_line_error(proc, 3, r"no answer within 15 s$")
    assert left_running(device_tmp(env)) == []
    assert leftovers(env) == []


# ------------------------------------------------------------------------------ 8. what the device is and says
@pytest.fixture(scope="module")
def minimal_sshd(tmp_path_factory):
    """An sshd like dropbear's or a minimal image's: no SFTP subsystem; its sessions' $HOME is checkable."""
    work = tmp_path_factory.mktemp("minimal-sshd")
    (work / "home").mkdir()
    server = start_sshd(work / "sshd", sftp=False, home=work / "home")
    server.home = work / "home"
    yield server
    server.stop()


def test_a_board_without_sftp_and_nothing_left_in_the_users_home(artifacts, minimal_sshd, env, tmp_path):
    """scp falls back to its own protocol (-O); the runner's HOME is its temp dir, so onnxruntime's telemetry
    (~/.cache/Microsoft/DeveloperTools/.onnxruntime: deviceid, onnxruntime.db, written on import) goes with it."""
    out = tmp_path / "r.json"
    proc = cli(["--model", str(artifacts["onnx"]), "--device", minimal_sshd.device, "--python", sys.executable,
                "--runs", "2", "--warmup", "0", "--save-output", str(tmp_path / "out.npy"), "--json", str(out)],
               {**env, "TOPFORMER_DEPLOY_SSH_CONFIG": str(minimal_sshd.config)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["runtime"]["name"] == "onnxruntime" and (tmp_path / "out.npy").is_file()
    assert list(minimal_sshd.home.iterdir()) == []
    assert list(minimal_sshd.tmpdir.iterdir()) == []


def test_device_errors_name_the_users_files_not_the_devices_temp_paths(artifacts, env, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")                      # no manifest: the runtime is the one to refuse it
    not_numpy = tmp_path / "image.npy"
    not_numpy.write_text("not a numpy file")
    for args, pattern, named in ((["--model", str(broken)], "cannot load", broken),
                                 (["--model", str(artifacts["onnx"]), "--input", str(not_numpy)], "cannot read --input",
                                  not_numpy)):
        proc = cli([*args, "--device", "adb", "--python", sys.executable, "--runs", "1"], env)
        line = one_line_error(proc, 2, pattern)
        assert str(named) in line and "/data/local/tmp" not in line and "<device temp dir>" not in line
    assert leftovers(env) == []
