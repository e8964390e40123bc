"""Shared fixtures: paths to the team's shared conformance data."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "fixtures" / "official"
DEVICE_OUTPUTS = SHARED / "fixtures" / "device-outputs"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not OFFICIAL.is_dir():
        pytest.fail(f"shared fixtures missing: {OFFICIAL} (clone the project beside ../shared)")
    return OFFICIAL


@pytest.fixture(scope="session")
def device_outputs() -> Path:
    if not DEVICE_OUTPUTS.is_dir():
        pytest.fail(f"shared fixtures missing: {DEVICE_OUTPUTS}")
    return DEVICE_OUTPUTS


@pytest.fixture(scope="session")
def tiny_checkpoint(official_dir) -> Path:
    return official_dir / "official_topformer_tiny_seed0.pth"
