"""``--device SPEC`` -> an open transport: this machine, an ssh host, an adb device or a simulated Arm core."""
from __future__ import annotations

import os
import re

from ..errors import TopformerDeployError
from .transports import (AdbTransport, LocalTransport, SshTransport, Transport, check_adb_serial,
                         check_ssh_destination)

_SPEC = re.compile(r"ssh:(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?")


def parse_device(spec: str) -> dict:
    """``--device SPEC`` checked without connecting to anything (so that a bad one is refused before any work):
    ``{"kind": "local"}``, ``{"kind": "sim", "core"}``, ``{"kind": "adb", "serial"}`` (None: the only device) or
    ``{"kind": "ssh", "host", "user", "port"}``."""
    spec = spec.strip()
    if spec == "local":
        return {"kind": "local"}
    if spec.startswith("sim:") or spec == "sim":
        from .sim.transport import check_core

        return {"kind": "sim", "core": check_core(spec[4:] or "cortex-a72")}
    if spec == "adb" or spec.startswith("adb:"):
        check_adb_serial(spec[4:] or None)
        return {"kind": "adb", "serial": spec[4:] or None}
    if spec.startswith("ssh:"):
        m = _SPEC.fullmatch(spec)
        if not m:
            raise TopformerDeployError(f"bad --device {spec!r}: use ssh:USER@HOST[:PORT]")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise TopformerDeployError(f"bad ssh port in {spec!r}")
        check_ssh_destination(m["host"], m["user"])
        return {"kind": "ssh", "host": m["host"], "user": m["user"], "port": port}
    raise TopformerDeployError(f"bad --device {spec!r}: use local, adb[:SERIAL], ssh:USER@HOST[:PORT] or sim:CORE")


def open_transport(spec: str, adb_path: str | None = None, ssh_config: str | None = None,
                   progress=None) -> Transport:
    """``local`` | ``adb`` | ``adb:SERIAL`` | ``ssh:[USER@]HOST[:PORT]`` | ``sim:CORE`` -> a connected Transport.

    ``ssh_config`` (or ``$TOPFORMER_DEPLOY_SSH_CONFIG``) is passed to ssh as ``-F``; ``progress(message)``
    hears about one-time set-up (a simulated core's userland and plugin).
    """
    device = parse_device(spec)
    if device["kind"] == "local":
        return LocalTransport()
    if device["kind"] == "sim":
        from .sim.transport import SimTransport

        return SimTransport(device["core"], progress=progress)
    if device["kind"] == "adb":
        return AdbTransport(device["serial"], adb_path)
    config = ssh_config or os.environ.get("TOPFORMER_DEPLOY_SSH_CONFIG") or None
    return SshTransport(device["host"], device["user"], device["port"], config_file=config)
