"""A per-device lock: a second ``bench`` on the same device waits instead of spoiling both measurements.

The lock is an ``fcntl.flock`` on ``~/.cache/topformer-deploy/locks/<device>.lock`` (``$XDG_CACHE_HOME``
honoured), so it is released by the kernel even when the holder is killed.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

from ..files import cache_root
from .transports import DeviceError


def lock_dir() -> Path:
    """Directory holding the lock files."""
    return cache_root() / "locks"


def lock_path(device: str) -> Path:
    """Lock file of ``device`` (a transport name such as ``ssh:pi@host:22``)."""
    return lock_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


@contextlib.contextmanager
def device_lock(device: str, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None, poll: float = 0.2) -> Iterator[Path]:
    """Hold the lock of ``device``; wait for it (calling ``on_wait(holder)`` once) up to ``timeout`` s."""
    path = lock_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait(path.read_text(errors="replace").strip() or "another process")
                    told = True
                if timeout is not None and time.monotonic() - start > timeout:
                    raise DeviceError(f"{device} is busy: another bench holds {path} "
                                      f"(waited {timeout:g} s)") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
