"""The Raspberry Pi 4 latency workflow: valid YAML, the documented labels and steps, working shell."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "pi4-latency.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> dict[str, dict]:
    return {s["name"]: s for s in workflow["jobs"]["latency"]["steps"]}


def triggers(workflow) -> dict:
    return workflow.get("on", workflow.get(True))   # YAML 1.1 reads a bare `on` key as True


def test_runs_on_the_pi4_labels(workflow):
    assert workflow["jobs"]["latency"]["runs-on"] == ["self-hosted", "linux", "ARM64", "rpi4"]


def test_triggers(workflow):
    on = triggers(workflow)
    assert {"workflow_dispatch", "pull_request", "schedule"} <= set(on)
    assert on["schedule"][0]["cron"].count(" ") == 4


def test_steps_in_order(steps):
    names = list(steps)
    expected = ["Checkout", "Check throttling and temperature", "Set up a venv with the system Python",
                "Export Tiny/Small/Base (fp32 and int8)", "Bench on the Pi (local, big cores, 1 thread)",
                "Gate against the committed baseline", "Upload results and charts",
                "Fail on a regression or an inconclusive gate"]
    assert names == expected


def test_step_contents(steps, workflow):
    assert steps["Checkout"]["uses"].startswith("actions/checkout@")
    assert "vcgencmd get_throttled" in steps["Check throttling and temperature"]["run"]
    setup = steps["Set up a venv with the system Python"]["run"]
    assert "python3 -m venv" in setup and "pip install -q -e . ai-edge-litert" in setup
    export = steps["Export Tiny/Small/Base (fp32 and int8)"]["run"]
    assert "for variant in tiny small base" in export
    assert "--precision fp32" in export and "--precision int8" in export
    bench = steps["Bench on the Pi (local, big cores, 1 thread)"]["run"]
    flags = ("--device local", "--cores big", "--threads 1", "--repeat", "--save-baseline")
    assert all(flag in bench for flag in flags)
    gate = steps["Gate against the committed baseline"]["run"]
    assert "$BASELINE" in gate and workflow["jobs"]["latency"]["env"]["BASELINE"] == "benchmarks/baselines/rpi4.json"
    assert "GITHUB_STEP_SUMMARY" in gate and "--github-benchmark" in gate and "--chart" in gate
    upload = steps["Upload results and charts"]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert steps["Fail on a regression or an inconclusive gate"]["if"] == "steps.gate.outputs.code != '0'"


def test_every_run_block_is_valid_bash(steps):
    for name, step in steps.items():
        if "run" in step:
            script = re.sub(r"\$\{\{[^}]*\}\}", "1", step["run"])
            proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
            assert proc.returncode == 0, f"{name}: {proc.stderr}"


@pytest.mark.parametrize("throttled,temp_milli,ok,message", [
    ("0x0", 45000, True, "SoC temperature: 45 C"),
    ("0x50000", 45000, True, "happened since boot"),        # past only: warn, go on
    ("0x50005", 45000, False, "throttled or under-voltage right now"),
    ("0x80008", 45000, False, "right now"),                 # soft temperature limit active
    ("0x0", 61500, False, "too hot"),
])
def test_preflight_check_runs(steps, tmp_path, throttled, temp_milli, ok, message):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vcgencmd"
    fake.write_text(f"#!/bin/sh\necho throttled={throttled}\n")
    fake.chmod(0o755)
    thermal = tmp_path / "temp"
    thermal.write_text(f"{temp_milli}\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "THERMAL_FILE": str(thermal),
           "MAX_START_TEMP_C": "60"}
    proc = subprocess.run([shutil.which("bash"), "-c", steps["Check throttling and temperature"]["run"]],
                          env=env, text=True, capture_output=True)
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    assert message in proc.stdout
