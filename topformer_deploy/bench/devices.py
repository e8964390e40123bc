"""``--device SPEC`` -> an open transport: this machine, an ssh host, an adb device or a simulated Arm core."""
from __future__ import annotations

import os
import re

from ..errors import TopformerDeployError
from .transports import AdbTransport, LocalTransport, SshTransport, Transport

_SPEC = re.compile(r"ssh:(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?")


def open_transport(spec: str, adb_path: str | None = None, ssh_config: str | None = None,
                   progress=None) -> Transport:
    """``local`` | ``adb`` | ``adb:SERIAL`` | ``ssh:[USER@]HOST[:PORT]`` | ``sim:CORE`` -> a connected Transport.

    ``ssh_config`` (or ``$TOPFORMER_DEPLOY_SSH_CONFIG``) is passed to ssh as ``-F``; ``progress(message)``
    hears about one-time set-up (a simulated core's userland and plugin).
    """
    spec = spec.strip()
    if spec == "local":
        return LocalTransport()
    if spec.startswith("sim:") or spec == "sim":
        from .sim.transport import SimTransport

        return SimTransport(spec[4:] or "cortex-a72", progress=progress)
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        return AdbTransport(serial, adb_path)
    if spec.startswith("ssh:"):
        m = _SPEC.fullmatch(spec)
        if not m:
            raise TopformerDeployError(f"bad --device {spec!r}: use ssh:USER@HOST[:PORT]")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise TopformerDeployError(f"bad ssh port in {spec!r}")
        config = ssh_config or os.environ.get("TOPFORMER_DEPLOY_SSH_CONFIG") or None
        return SshTransport(m["host"], m["user"], port, config_file=config)
    raise TopformerDeployError(f"bad --device {spec!r}: use local, adb[:SERIAL], ssh:USER@HOST[:PORT] or sim:CORE")
