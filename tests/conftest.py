"""Shared test data: everything the suite needs lives in tests/data (device outputs, small official fixtures).

The larger official fixtures in ``../shared/fixtures/official`` are used when present, never required: a
test that needs one of them skips with the reason when it is missing.

Tiers (markers registered in pyproject.toml): ``slow`` (real TFLite conversions, emulation), ``board`` (the
emulated arm64 board: root, debootstrap, qemu-user-static) and ``sim`` (simulated Arm cores: qemu-user, a C
compiler). ``board`` and ``sim`` tests are ``slow`` too. Fast tier: ``pytest -m "not slow"``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
def device_outputs() -> Path:
    return DEVICE_OUTPUTS


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """An official-layout TopFormer-Tiny checkpoint (ADE20K, 150 classes, random weights)."""
    return OFFICIAL / "official_topformer_tiny_seed1.pth"
