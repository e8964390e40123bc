"""Real faults for the reliability tests: small tmpfs mounts (a full or a read-only file system)."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A small tmpfs at ``path`` (a real full or read-only file system); skip when mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte (unbuffered: nothing is left to fail at close)."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        for block in (b"\0" * 65536, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(block)
