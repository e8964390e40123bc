"""Shared test data: everything the suite needs lives in tests/data (device outputs, small official fixtures).

The larger official fixtures in ``../shared/fixtures/official`` are used when present, never required: a
test that needs one of them skips with the reason when it is missing.

Tiers (markers registered in pyproject.toml): ``slow`` (real TFLite conversions, emulation), ``board`` (the
emulated arm64 board: root, debootstrap, qemu-user-static) and ``sim`` (simulated Arm cores: qemu-user, a C
compiler). ``board`` and ``sim`` tests are ``slow`` too. Fast tier: ``pytest -m "not slow"``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from topformer_deploy.bench.sim import userland
from topformer_deploy.testing import arm64_board
from topformer_deploy.testing.arm64_board import UserlandError

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
DEVICE_OUTPUTS = DATA / "device-outputs"
OFFICIAL = DATA / "official"
SHARED_OFFICIAL = TESTS.parent.parent / "shared" / "fixtures" / "official"


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("board") or item.get_closest_marker("sim"):
            item.add_marker(pytest.mark.slow)


def official_fixture(name: str) -> Path:
    """An official-code fixture file: from tests/data, else from ../shared when it is there (else skip)."""
    for folder in (OFFICIAL, SHARED_OFFICIAL):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is only in ../shared/fixtures/official, which is not beside this checkout")


def unavailable(reason: str):
    """Skip for a missing system tool; under CI=true (which installs them all) fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def board():
    """The emulated arm64 board, running: reuses one started by scripts/arm64-board.sh, else starts (and at the
    end stops) its own. Its build (cached) is where the board's venv gets its packages (network)."""
    problem = arm64_board.host_problem()
    if problem:
        unavailable(f"the arm64 board cannot run here: {problem}")
    try:
        arm64_board.prepare_host(install=True)
    except UserlandError as exc:
        unavailable(f"the arm64 board cannot run here: {exc}")
    arm64_board.build()
    existing = arm64_board.running()
    board = existing or arm64_board.start()
    yield board
    if existing is None:
        arm64_board.stop()
        root = Path(arm64_board.built()["root"])
        assert userland.mounts_under(root) == [], "mounts left under the rootfs"
        assert userland.pids_in(root) == [], "processes left in the chroot"
        assert arm64_board.running() is None


@pytest.fixture(scope="session")
def sim_ready():
    """qemu-user, a C compiler and the userland (built on first use, as for a user)."""
    for tool, package in (("qemu-aarch64", "qemu-user"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            unavailable(f"{tool} not found: apt-get install {package}")
    if userland.built() is None and userland.host_problem():
        unavailable(f"the aarch64 userland cannot be built here: {userland.host_problem()}")


@pytest.fixture(scope="session")
def device_outputs() -> Path:
    return DEVICE_OUTPUTS


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """An official-layout TopFormer-Tiny checkpoint (ADE20K, 150 classes, random weights)."""
    return OFFICIAL / "official_topformer_tiny_seed1.pth"


class LazyArtifacts(dict):
    """A small TFLite and ONNX TopFormer-Tiny (64x64, 8 classes) with manifests, each exported on first use
    (so a test that only needs ONNX never pays for a TFLite conversion)."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def __missing__(self, fmt: str) -> Path:
        from topformer_deploy.export import export_model
        from topformer_deploy.model import random_live_model

        path = self.out / f"topformer_tiny_64x64_fp32_logits.{fmt}"
        if not (path.is_file() and path.with_name(path.name + ".json").is_file()):
            model = random_live_model("tiny", num_classes=8)
            path = Path(export_model(model, fmt, self.out, input_size=(64, 64), verify=False, weights="random").path)
        self[fmt] = path
        return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> LazyArtifacts:
    # TOPFORMER_DEPLOY_TEST_ARTIFACTS=DIR keeps them between local runs (a TFLite conversion takes ~20 s)
    keep = os.environ.get("TOPFORMER_DEPLOY_TEST_ARTIFACTS")
    return LazyArtifacts(Path(keep) if keep else tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory):
    """``stand_in(tool)``: the benchmark_model stand-in as a static ELF of this machine, playing ``tool`` (tflite,
    litert, litert-2025-06); skipped (failed under CI=true) without a C compiler and a static libc."""
    from fakes.binaries import build_stand_in

    built = {}

    def make(tool: str = "tflite") -> Path:
        if tool not in built:
            built[tool] = build_stand_in(tmp_path_factory.mktemp(f"stand-in-{tool}"), tool)
        if built[tool] is None:
            unavailable("no C compiler with a static libc to build the stand-in's ELF wrapper")
        return built[tool]

    return make
