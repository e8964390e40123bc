"""The latency workflow end to end: the jobs of .github/workflows/latency.yml, run as GitHub runs them
(tests/actions_runner.py: the very composite actions and scripts, GITHUB_OUTPUT/GITHUB_STEP_SUMMARY files,
artifacts and caches as folders), for two pull requests of a scratch copy of this repository:

  same code    the head changes only the README                          -> both gates pass (verdict same)
  slower head  the head's TopFormer-Tiny has Small's layers (a bigger net) -> both gates say regression

export, sim and the gates run on this machine (sim and the gates without torch: tests/fakes/no_torch); the rpi4
job runs on the emulated arm64 board (Debian arm64 under qemu-user with a Pi 4's CPU description, over sshd)
with a fake vcgencmd and thermal zone, in the board's venv: numpy, ai-edge-litert, click, rich, scipy - no torch.

Kept affordable: Tiny only, fp32, 64x64; the Pi job 4 rounds x 5 runs. Emulated timings on a shared machine
drift far more than a Pi's, so the Pi gate's threshold is 50% here (5% on a real Pi); Small-for-Tiny is about
+100% under emulation, so the regression is still unmistakable. The instruction gate keeps its 0.1%.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actions_runner import BoardExecutor, Local, WorkflowRun
from conftest import OFFICIAL
from topformer_deploy.testing import arm64_board

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = Path(__file__).resolve().parent / "fakes" / "no_torch"
SETTINGS = {"MODELS": "tiny", "PRECISIONS": "fp32", "INPUT_SIZE": "64", "RPI4_ROUNDS": "4", "RPI4_RUNS": "5",
            "RPI4_WARMUP": "1", "MAX_SLOWDOWN": "50%"}
SLOWER = '\nVARIANTS["tiny"] = VARIANTS["small"]   # the test\'s deliberately slower head\n'
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOARD_RUNNER = "/tmp/actions-runner"      # the board runner's folder, inside the board


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "ci test", "GIT_AUTHOR_EMAIL": "ci@test", "GIT_COMMITTER_NAME": "ci test",
           "GIT_COMMITTER_EMAIL": "ci@test"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> dict:
    """A copy of this repository's files (as in a clone) with a base commit and the two pull requests' heads."""
    repo = tmp_path_factory.mktemp("repository")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    shas = {"base": _git(repo, "rev-parse", "HEAD")}
    for branch, path, text in (("same", "README.md", "\nA line that changes no code.\n"),
                               ("slower", "topformer_deploy/model/topformer.py", SLOWER)):
        _git(repo, "checkout", "-q", "-b", branch, shas["base"])
        with open(repo / path, "a") as fh:
            fh.write(text)
        _git(repo, "commit", "-q", "-am", f"{branch} head")
        shas[branch] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    return {"path": repo, **shas}


def _machine_env(**extra: str) -> dict[str, str]:
    env = {"PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}", "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8", "PIP_NO_INDEX": "1",      # no network in tests: pip may only find what is installed
           **extra}
    for name in ("TOPFORMER_ARM64_BOARD_DIR", "XDG_CACHE_HOME", "TMPDIR"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


@pytest.fixture(scope="module")
def board_runner(board):
    """The board as a self-hosted runner: a fake vcgencmd (not throttled) and thermal zone (45 C), and
    TOPFORMER_DEVICE_VENV naming the board's venv (a runner's .env would)."""
    rootfs = Path(arm64_board.built()["root"])
    fakes = rootfs / BOARD_RUNNER.lstrip("/") / "fakes"
    shutil.rmtree(fakes.parent, ignore_errors=True)
    fakes.mkdir(parents=True)
    (fakes / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x0\n")
    (fakes / "vcgencmd").chmod(0o755)
    (fakes / "thermal").write_text("45000\n")
    env = {"PATH": f"{BOARD_RUNNER}/fakes:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "PIP_NO_INDEX": "1", "TOPFORMER_DEVICE_VENV": board.python.rsplit("/bin/", 1)[0],
           "THERMAL_FILE": f"{BOARD_RUNNER}/fakes/thermal"}
    yield BoardExecutor(board, rootfs, env, root=f"{BOARD_RUNNER}/jobs")
    shutil.rmtree(fakes.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(repository, board_runner, sim_ready, tmp_path_factory) -> dict:
    """The whole workflow for each pull request: {scenario: (run, {job: [JobResult]})}."""
    machine = tmp_path_factory.mktemp("machine")
    caches = tmp_path_factory.mktemp("caches")         # shared by the runs, as a repository's caches are
    torch_free = Local(machine, _machine_env(PYTHONPATH=str(NO_TORCH)))
    executors = {"default": Local(machine, _machine_env()), "sim": torch_free, "gate-sim": torch_free,
                 "gate-rpi4": torch_free, "rpi4": board_runner}
    repo = repository["path"]
    done = {}
    for scenario in ("same", "slower"):
        head, base = repository[scenario], repository["base"]
        event = {"pull_request": {"head": {"sha": head}, "base": {"sha": base}}}
        run = WorkflowRun(repo / ".github/workflows/latency.yml", repo, tmp_path_factory.mktemp(scenario), executors,
                          event_name="pull_request", event=event, sha=head, vars={"RPI4_RUNNER": "true"},
                          env=SETTINGS, caches=caches)
        done[scenario] = (run, run.run())
    return done


def _job(runs, scenario: str, job: str, side: str | None = None):
    results = runs[scenario][1][job]
    return next(r for r in results if side is None or r.matrix.get("side") == side)


def _artifact(runs, scenario: str, name: str) -> Path:
    return runs[scenario][0].store / "artifacts" / name


def _report(runs, scenario: str, label: str, artifact: str) -> dict:
    return json.loads((_artifact(runs, scenario, artifact) / f"{label}.json").read_text())


def _explain(runs, scenario: str, *jobs: str) -> str:
    return "\n".join(f"===== {scenario} {r.job} {r.matrix} {r.result}\n{r.log[-6000:]}"
                     for job in jobs for r in runs[scenario][1].get(job, []))


@pytest.mark.board
@pytest.mark.sim
@pytest.mark.parametrize("scenario", ["same", "slower"])
def test_export_job_builds_both_sides_with_their_own_code(runs, repository, scenario):
    for side, sha in (("base", repository["base"]), ("head", repository[scenario])):
        job = _job(runs, scenario, "export", side)
        assert job.result == "success", _explain(runs, scenario, "export")
        folder = _artifact(runs, scenario, f"models-{side}") / side
        assert (folder / "COMMIT").read_text().strip() == sha
        (manifest,) = (folder / "tiny-fp32").glob("*.tflite.json")
        assert manifest.with_suffix("").is_file()
    macs = {side: json.loads(next((_artifact(runs, scenario, f"models-{side}") / side / "tiny-fp32")
                                  .glob("*.json")).read_text())["macs"]["full"] for side in ("base", "head")}
    # the head was exported by the head's code: Small's layers under the name tiny in the slower head
    assert (macs["head"] > 1.5 * macs["base"]) if scenario == "slower" else (macs["head"] == macs["base"])


@pytest.mark.board
@pytest.mark.sim
def test_pi_job_runs_on_the_board_without_torch(runs, board):
    job = _job(runs, "same", "rpi4")
    assert job.result == "success", _explain(runs, "same", "rpi4")
    preflight = job.step("Pre-flight")
    assert preflight.outputs == {"throttled": "0x0", "temp_c": "45"}, preflight.log
    device_env = job.step("Device environment")
    assert device_env.outputs["torch"] == "absent", device_env.log
    assert device_env.outputs["python"] == board.python
    probe = subprocess.run(board.ssh_argv([board.python, "-c", "import torch"]), capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    doc = json.loads((_artifact(runs, "same", "results-rpi4") / "rpi4" / "tiny-fp32.json").read_text())
    for side in ("a", "b"):
        assert doc[side]["device"]["arch"] == "aarch64" and doc[side]["device"]["id"] == "arm64-board"
        assert doc[side]["runtime"]["name"] == "ai_edge_litert"
        assert len(doc[side]["latencies_ms"]) == 20          # 4 rounds x 5 runs, interleaved
    assert doc["interleave"] == {"rounds": 4, "runs_per_round": 5, "order": "ABBA"}


@pytest.mark.board
@pytest.mark.sim
@pytest.mark.parametrize("scenario,status", [("same", "pass"), ("slower", "regression")])
def test_pi_gate_verdicts(runs, repository, scenario, status):
    gate = _job(runs, scenario, "gate-rpi4")
    assert gate.step("Gate").outputs.get("status") == status, _explain(runs, scenario, "rpi4", "gate-rpi4")
    assert gate.result == ("success" if status == "pass" else "failure")
    (row,) = _report(runs, scenario, "rpi4", "results-rpi4-reports")["configurations"]
    if scenario == "same":
        assert row["verdict"] == "same", row["reason"]
    else:
        assert row["verdict"] == "regression" and row["change"] > 0.5, row["reason"]
        assert "::error::rpi4: latency regression (see the job summary)" in gate.annotations
    assert f"head `{repository[scenario][:12]}` against its merge base `{repository['base'][:12]}`" in gate.summary
    assert f"**{row['verdict']}**" in gate.summary and "Latency gate" in gate.summary
    reports = _artifact(runs, scenario, "results-rpi4-reports")
    assert (reports / "rpi4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (entry,) = json.loads((reports / "rpi4-benchmark.json").read_text())
    assert entry["unit"] == "ms" and entry["value"] == pytest.approx(row["cand_median"], rel=1e-3)
    trend = json.loads((reports / "rpi4-head-baseline.json").read_text())
    assert list(trend["entries"]) == ["tiny/tflite/fp32/t1/64x64/logits"]


@pytest.mark.board
@pytest.mark.sim
@pytest.mark.parametrize("scenario,status", [("same", "pass"), ("slower", "regression")])
def test_sim_gate_verdicts_on_both_cores(runs, scenario, status):
    sim = _job(runs, scenario, "sim")
    assert sim.result == "success", _explain(runs, scenario, "sim")
    assert sim.step("host's Python side").outputs["torch"] == "absent"
    gate = _job(runs, scenario, "gate-sim")
    outputs = gate.step("Gate").outputs
    assert outputs == {"sim-cortex-a72": status, "sim-cortex-a76": status, "status": status}, \
        _explain(runs, scenario, "gate-sim")
    assert gate.result == ("success" if status == "pass" else "failure")
    for core in ("cortex-a72", "cortex-a76"):
        (row,) = _report(runs, scenario, f"sim-{core}", "results-sim-reports")["configurations"]
        assert row["unit"] == "instructions"
        if scenario == "same":
            assert row["verdict"] == "same" and abs(row["change"]) <= 0.001, row["reason"]
        else:
            assert row["verdict"] == "regression" and row["change"] > 0.5, row["reason"]
        (entry,) = json.loads((_artifact(runs, scenario, "results-sim-reports") / f"sim-{core}-benchmark.json")
                              .read_text())
        assert entry["unit"] == "instructions" and entry["value"] == pytest.approx(row["cand_median"], rel=1e-6)
    assert "Instruction gate" in gate.summary


@pytest.mark.board
@pytest.mark.sim
def test_userland_cache_is_saved_once_and_hit_by_the_next_run(runs):
    steps = [_job(runs, scenario, "sim").step("Cache the aarch64 userland") for scenario in ("same", "slower")]
    assert [s.outputs["cache-hit"] for s in steps] == ["false", "true"], [s.log for s in steps]


@pytest.fixture(scope="module")
def user_run(repository, sim_ready, tmp_path_factory):
    """docs/latency-template.yml in a user's repository (a checkpoint, models/topformer_tiny.pth), for a pull
    request that changes only the README; topformer-deploy's actions come from the scratch copy's main."""
    repo = tmp_path_factory.mktemp("user-repository")
    (repo / ".github/workflows").mkdir(parents=True)
    shutil.copy2(ROOT / "docs/latency-template.yml", repo / ".github/workflows/latency.yml")
    (repo / "models").mkdir()
    shutil.copy2(OFFICIAL / "official_topformer_tiny_seed1.pth", repo / "models/topformer_tiny.pth")
    (repo / "README.md").write_text("our segmentation model\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("our segmentation model, documented\n")
    _git(repo, "commit", "-q", "-am", "head")
    head = _git(repo, "rev-parse", "HEAD")
    machine = tmp_path_factory.mktemp("user-machine")
    torch_free = Local(machine, _machine_env(PYTHONPATH=str(NO_TORCH)))
    run = WorkflowRun(repo / ".github/workflows/latency.yml", repo, tmp_path_factory.mktemp("user-run"),
                      {"default": Local(machine, _machine_env()), "sim": torch_free, "gate-sim": torch_free},
                      event_name="pull_request", event={"pull_request": {"head": {"sha": head}, "base": {"sha": base}}},
                      sha=head, env={"PRECISIONS": "fp32", "INPUT_SIZE": "64", "SIM_CORES": "cortex-a72"},
                      actions={"OWNER/topformer-deploy": repository["path"]})
    assert run.check(repo) == []
    return run, run.run(), repo


@pytest.mark.sim
def test_template_gates_a_users_checkpoint(user_run):
    run, results, repo = user_run
    explain = "\n".join(f"===== {r.job} {r.matrix} {r.result}\n{r.log[-6000:]}" for rs in results.values() for r in rs)
    assert [r.result for r in results["export"]] == ["success", "success"], explain
    (manifest,) = (run.store / "artifacts/models-head/head/topformer_tiny-fp32").glob("*.json")
    checkpoint = json.loads(manifest.read_text())["checkpoint"]
    assert checkpoint["path"].endswith("models/topformer_tiny.pth")        # the user's model, not random weights
    gate = results["gate-sim"][0]
    assert gate.result == "success" and gate.step("Gate").outputs["status"] == "pass", explain
    (row,) = json.loads((run.store / "artifacts/results-sim-reports/sim-cortex-a72.json").read_text())["configurations"]
    assert row["verdict"] == "same" and row["unit"] == "instructions"
    assert [r.result for job in ("rpi4", "gate-rpi4") for r in results[job]] == ["skipped", "skipped"]  # no Pi
