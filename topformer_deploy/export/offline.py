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
