"""Keep conversion offline: any attempt to open an internet socket fails loudly instead of downloading."""
from __future__ import annotations

import contextlib
import os
import socket

from ..errors import TopformerDeployError

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LITERT_TORCH_SHOW_PROGRESS": "n"}


class NetworkAccessError(TopformerDeployError):
    """A library tried to reach the network during export."""


@contextlib.contextmanager
def offline():
    """Within this block, connecting an AF_INET/AF_INET6 socket raises NetworkAccessError."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    saved_env = {key: os.environ.get(key) for key in _OFFLINE_ENV}

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkAccessError(f"a converter tried to reach the network ({address}); "
                                     "export runs offline - refusing")
        return original_connect(self, address, *args, **kwargs)

    def refuse_ex(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(self, address)
        return original_connect_ex(self, address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = refuse, refuse_ex
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet_native_output():
    """Send fds 1 and 2 and ``sys.stdout``/``sys.stderr`` to /dev/null: converter banners, absl logs, tqdm.

    Keeps ``--json`` output clean; Python exceptions are unaffected and reported by the caller.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield  # Python-level prints and progress bars too
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
