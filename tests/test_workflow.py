"""The latency CI's pieces, fast: the workflow's job graph, every step one the test runner runs, the expression
evaluator, and the real scripts of scripts/ci on small inputs (pre-flight, side checkout, install, gate).
The whole workflow end to end, on the emulated board and the simulated cores: tests/test_ci_workflow.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from actions_runner import JobResult, Local, WorkflowRun, evaluate
from test_gate import compare_doc, make_result, samples
from topformer_deploy.bench.sim import userland

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "latency.yml"
CI = ROOT / "scripts" / "ci"
NO_TORCH = Path(__file__).resolve().parent / "fakes" / "no_torch"


def _run(script: str, *args: str, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CI / script), *args], env={**os.environ, **env}, cwd=cwd, text=True,
                          capture_output=True, timeout=300)


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# ---- the workflow

@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_old_single_job_workflow_is_gone():
    assert sorted(p.name for p in WORKFLOW.parent.iterdir()) == ["latency.yml"]


def test_jobs_each_do_one_thing_in_order(workflow):
    jobs = workflow["jobs"]
    needs = {name: job.get("needs") for name, job in jobs.items()}
    assert needs == {"export": None, "sim": "export", "gate-sim": "sim", "rpi4": "export", "gate-rpi4": "rpi4"}
    assert jobs["export"]["strategy"]["matrix"] == {"side": ["base", "head"]}
    assert jobs["rpi4"]["runs-on"] == ["self-hosted", "linux", "ARM64", "rpi4"]
    assert jobs["rpi4"]["if"] == "vars.RPI4_RUNNER == 'true'"          # teams without a Pi: skipped, not queued
    hosted = {name for name, job in jobs.items() if job["runs-on"] == "ubuntu-latest"}
    assert hosted == {"export", "sim", "gate-sim", "gate-rpi4"}
    assert jobs["sim"]["container"]["image"] == "debian:bookworm"      # the plugin-capable qemu 7.2 this is tested on
    uses = {name: [s.get("uses", "").split("@")[0] for s in job["steps"]] for name, job in jobs.items()}
    assert uses["export"][-1] == "./.github/actions/export"
    assert uses["sim"][-1] == "./.github/actions/bench-sim" and uses["rpi4"][-1] == "./.github/actions/bench-pi"
    assert uses["gate-sim"][-1] == uses["gate-rpi4"][-1] == "./.github/actions/gate"
    checkout = jobs["export"]["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0                        # the merge base needs the history


def test_every_step_is_one_the_test_runner_runs(tmp_path):
    run = WorkflowRun(WORKFLOW, ROOT, tmp_path, {"default": Local(tmp_path, {})}, event_name="pull_request",
                      event={}, sha="0" * 40)
    assert run.check(ROOT) == []


def test_every_script_parses():
    scripts = sorted(CI.glob("*.sh"))
    assert {s.name for s in scripts} >= {"common.sh", "side.sh", "export.sh", "install.sh", "preflight.sh",
                                         "bench.sh", "gate.sh", "userland.sh"}
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


@pytest.mark.parametrize("vars,export_result,expected", [
    ({}, "success", "skipped"),                                   # no Pi runner: the job is skipped, not queued
    ({"RPI4_RUNNER": "true"}, "failure", "skipped"),              # nothing exported: nothing to bench
])
def test_pi_jobs_are_skipped(tmp_path, vars, export_result, expected):
    run = WorkflowRun(WORKFLOW, ROOT, tmp_path, {"default": Local(tmp_path, {})}, event_name="pull_request",
                      event={}, sha="0" * 40, vars=vars)
    results = run.run(only=["rpi4", "gate-rpi4"], done={"export": [JobResult("export", {}, export_result)]})
    assert [r.result for job in ("rpi4", "gate-rpi4") for r in results[job]] == [expected, expected]


@pytest.mark.parametrize("expression,value", [
    ("github.event.pull_request.head.sha || github.sha", "abc"),
    ("github.event.pull_request.base.sha || inputs.base", "main"),
    ("inputs.flag == 'true' && steps.side.outputs.dir || ''", "/src"),
    ("inputs.other == 'true' && steps.side.outputs.dir || ''", ""),
    ("vars.RPI4_RUNNER == 'TRUE'", True),                        # GitHub compares strings case-insensitively
    ("format('{0}-reports', inputs.base)", "main-reports"),
    ("!(success() && vars.missing)", True),
])
def test_expressions(expression, value):
    contexts = {"github": {"sha": "abc", "event": {}}, "inputs": {"base": "main", "flag": "true", "other": "no"},
                "steps": {"side": {"outputs": {"dir": "/src"}}}, "vars": {"RPI4_RUNNER": "true"}}
    assert evaluate(expression, contexts) == value


# ---- what the device side needs

def _requirement_names(lines) -> dict[str, str]:
    reqs = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower(): r for r in reqs}


def test_device_requirements_are_pyproject_dependencies_without_torch():
    device = _requirement_names((ROOT / "requirements-device.txt").read_text().splitlines())
    project = _requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert set(device) == {"numpy", "ai-edge-litert", "click", "rich", "scipy"}
    assert all(project[name] == spec for name, spec in device.items())      # same specifiers
    # the emulated board's venv has all of it, so the Pi job's test runs offline
    assert set(device) <= set(userland.RUNTIME_PACKAGES) | set(userland.TOOL_PACKAGES)


@pytest.mark.slow
def test_install_device_reports_a_torch_free_python(tmp_path):
    out = tmp_path / "out"
    proc = _run("install.sh", "device", env={"GITHUB_OUTPUT": str(out), "PYTHON": sys.executable,
                                             "PIP_NO_INDEX": "1", "PYTHONPATH": str(NO_TORCH)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _outputs(out) == {"python": sys.executable, "torch": "absent"}
    proc = _run("install.sh", "device", env={"GITHUB_OUTPUT": str(out), "PYTHON": sys.executable, "PIP_NO_INDEX": "1"})
    assert _outputs(out)["torch"] == "present" and "::warning::" in proc.stdout     # this venv has torch


@pytest.mark.slow
def test_bench_local_and_compare_work_without_torch(tmp_path):
    """The device side's commands in an interpreter where torch and the converters cannot be imported."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["logits"])], "relu",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 16, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    save(model, tmp_path / "relu.onnx")
    env = {**os.environ, "PYTHONPATH": f"{NO_TORCH}{os.pathsep}{ROOT}"}
    for args in (["--model", "relu.onnx"], ["--compare", "relu.onnx", "relu.onnx", "--rounds", "2"]):
        proc = subprocess.run([sys.executable, "-m", "topformer_deploy", "bench", *args, "--device", "local",
                               "--runs", "5", "--warmup", "1", "--json", "out.json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads((tmp_path / "out.json").read_text())
        for result in (doc["a"], doc["b"]) if "a" in doc else (doc,):
            assert result["runtime"]["name"] == "onnxruntime" and len(result["latencies_ms"]) >= 5
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "blocked" in probe.stderr


# ---- pre-flight on the Pi

@pytest.mark.parametrize("throttled,temp_milli,ok,message", [
    ("0x0", 45000, True, "SoC temperature: 45 C"),
    ("0x50000", 45000, True, "happened since boot"),        # past only: warn, go on
    ("0x50005", 45000, False, "throttled or under-voltage right now"),
    ("0x80008", 45000, False, "right now"),                 # soft temperature limit active
    ("0x0", 61500, False, "too hot"),
    ("0x0", None, True, "cannot check the temperature"),   # no thermal zone: warn
])
def test_preflight(tmp_path, throttled, temp_milli, ok, message):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vcgencmd").write_text(f"#!/bin/sh\necho throttled={throttled}\n")
    (bin_dir / "vcgencmd").chmod(0o755)
    thermal = tmp_path / "temp"
    if temp_milli is not None:
        thermal.write_text(f"{temp_milli}\n")
    out = tmp_path / "out"
    proc = _run("preflight.sh", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                                     "THERMAL_FILE": str(thermal), "MAX_START_TEMP_C": "60",
                                     "GITHUB_OUTPUT": str(out)})
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    assert message in proc.stdout
    if ok:
        assert _outputs(out)["throttled"] == throttled


# ---- the two sides

def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def pull_request(tmp_path) -> dict:
    """main: base -> later; the pull request branches off base: head. Its merge base with main is base."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    shas = {}
    for name in ("base", "later"):
        (repo / "model.txt").write_text(name)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", name)
        shas[name] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "feature", shas["base"])
    (repo / "model.txt").write_text("head")
    _git(repo, "commit", "-q", "-am", "head")
    shas["head"] = _git(repo, "rev-parse", "HEAD")
    return {"repo": repo, **shas}


@pytest.mark.parametrize("side,base_ref,expected", [("head", "main", "head"), ("base", "main", "base"),
                                                     ("base", "", "base")])
def test_side_checks_out_the_head_or_its_merge_base(pull_request, tmp_path, side, base_ref, expected):
    out = tmp_path / "out"
    env = {"SIDE": side, "BASE_REF": base_ref, "GITHUB_WORKSPACE": str(pull_request["repo"]),
           "RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": str(out)}
    proc = _run("side.sh", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = _outputs(out)
    assert outputs["sha"] == pull_request[expected]            # the merge base, not main's newest commit
    assert (Path(outputs["dir"]) / "model.txt").read_text() == expected


def test_side_without_history_says_what_to_do(pull_request, tmp_path):
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{pull_request['repo']}", str(shallow)], check=True)
    proc = _run("side.sh", env={"SIDE": "base", "BASE_REF": "", "GITHUB_WORKSPACE": str(shallow),
                                "RUNNER_TEMP": str(tmp_path)})
    assert proc.returncode == 1 and "fetch-depth: 0" in proc.stdout


# ---- the gate

def _gate(tmp_path, docs: dict[str, dict], **env) -> tuple[subprocess.CompletedProcess, Path, dict]:
    results, out = tmp_path / "results", tmp_path / "reports"
    (results / "rpi4").mkdir(parents=True)      # a fresh tmp_path per call
    (results / "sides.txt").write_text(f"base {'a' * 40}\nhead {'b' * 40}\n")
    for slot, doc in docs.items():
        (results / "rpi4" / f"{slot}.json").write_text(json.dumps(doc))
    files = {"GITHUB_OUTPUT": tmp_path / "output", "GITHUB_STEP_SUMMARY": tmp_path / "summary"}
    for f in files.values():
        f.write_text("")
    proc = _run("gate.sh", env={"RESULTS": str(results), "OUT": str(out), "PYTHON": sys.executable,
                                **{k: str(v) for k, v in files.items()}, **env})
    return proc, out, {"outputs": _outputs(files["GITHUB_OUTPUT"]), "summary": files["GITHUB_STEP_SUMMARY"].read_text()}


@pytest.mark.slow
def test_gate_script_regression_and_its_reports(tmp_path):
    docs = {"tiny-fp32": compare_doc(samples(seed=1), samples(seed=2)),
            "small-fp32": compare_doc(samples(seed=3), samples(seed=4) * 1.3, variant="small")}
    proc, out, files = _gate(tmp_path, docs)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert files["outputs"] == {"rpi4": "regression", "status": "regression"}
    report = json.loads((out / "rpi4.json").read_text())
    verdicts = {row["config_key"].split(" -> ")[-1].split("/")[0]: row["verdict"] for row in report["configurations"]}
    assert verdicts == {"tiny": "same", "small": "regression"}
    assert "head `bbbbbbbbbbbb` against its merge base `aaaaaaaaaaaa`" in files["summary"]
    assert "| `tiny/tflite/fp32/t1/512x512/logits -> small/tflite/fp32/t1/512x512/logits` |" in files["summary"]
    assert (out / "rpi4.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "rpi4-benchmark.json").read_text())) == 2
    assert len(json.loads((out / "rpi4-head-baseline.json").read_text())["entries"]) == 2
    assert "::error::rpi4: latency regression" in proc.stdout


@pytest.mark.slow
def test_gate_script_pass_with_a_trend_baseline_that_never_gates(tmp_path):
    trend = tmp_path / "trend.json"
    trend.write_text(json.dumps({"schema": "topformer-deploy/baseline", "schema_version": 1,
                                 "entries": {"tiny/tflite/fp32/t1/512x512/logits": make_result(samples(seed=5) / 2)}}))
    proc, out, files = _gate(tmp_path, {"tiny-fp32": compare_doc(samples(seed=1), samples(seed=2))},
                             TREND_BASELINE=str(trend))
    assert proc.returncode == 0, proc.stdout + proc.stderr            # twice the stored figure: still a pass
    assert files["outputs"]["status"] == "pass"
    assert "(trend, not gating)" in files["summary"] and "regression" in (out / "rpi4-trend.md").read_text()


@pytest.mark.slow
def test_gate_script_fails_on_inconclusive_unless_told(tmp_path):
    doc = compare_doc(samples(n=5, seed=1), samples(n=5, seed=2))         # too few runs
    proc, _, files = _gate(tmp_path / "failing", {"tiny-fp32": doc})
    assert proc.returncode == 1 and files["outputs"]["status"] == "inconclusive"
    assert "::warning::rpi4: inconclusive" in proc.stdout
    proc, _, files = _gate(tmp_path / "told", {"tiny-fp32": doc}, FAIL_ON_INCONCLUSIVE="false")
    assert proc.returncode == 0 and files["outputs"]["status"] == "inconclusive"
