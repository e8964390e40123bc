"""Run commands and move files on a bench target: this machine, an ssh host or an adb device.

One small interface (:class:`Transport`) with three implementations. Remote commands are always built
with :func:`shlex.join`; local subprocesses never use a shell; every call has a timeout. Failures of the
link itself (unreachable host, offline device, dropped connection, timeout) raise :class:`DeviceError`.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import TopformerDeployError

#: where temporary directories go on an Android device (the only world-writable place without root)
ADB_TMP_ROOT = "/data/local/tmp"
#: marker appended to every adb shell command: old adb drops the remote exit code, so we echo it
_RC_MARKER = "__tfd_rc="
_SAFE_REMOTE_PATH = re.compile(r"[A-Za-z0-9_./+-]+")
_SSH_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SSH_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]")
_ADB_SERIAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
#: what OpenSSH 9's scp (SFTP by default) says to a server without an SFTP subsystem
_NO_SFTP = re.compile(r"Connection closed|subsystem request failed")


class DeviceError(TopformerDeployError):
    """The device or the link to it failed: unreachable, offline, unauthorized, dropped, timed out."""

    exit_code = 3


@dataclass
class RunResult:
    """What a command left behind: its exit code and its decoded output."""

    returncode: int
    stdout: str
    stderr: str


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_local(argv: list[str], timeout: float, stdin: bytes | None = None, what: str = "",
          env: dict[str, str] | None = None) -> RunResult:
    """Run ``argv`` here (no shell), with a timeout; a missing program or a timeout is a DeviceError.
    ``env`` is the whole environment of the program (None: this process's)."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=env,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{what or argv[0]}: no answer within {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise DeviceError(f"{argv[0]}: program not found") from exc
    except PermissionError as exc:
        raise DeviceError(f"{argv[0]}: not executable") from exc
    return RunResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                     proc.stderr.decode("utf-8", "replace"))


def _adb_program(adb_path: str | None) -> str:
    """The adb to use: ``--adb PATH``, else ``$ADB``, else ``adb`` on PATH; a clear error if there is none."""
    adb = adb_path or os.environ.get("ADB") or "adb"
    if shutil.which(adb) is None:
        raise DeviceError(f"adb not found ({adb!r}): install Android platform-tools, or pass --adb PATH / set $ADB")
    return adb


def check_ssh_destination(host: str, user: str | None) -> None:
    """Refuse an ssh host or user that could be read as an option or a shell word."""
    if not _SSH_HOST.fullmatch(host):
        raise TopformerDeployError(f"bad ssh host {host!r}")
    if user is not None and not _SSH_USER.fullmatch(user):
        raise TopformerDeployError(f"bad ssh user {user!r}")


def check_adb_serial(serial: str | None) -> None:
    """Refuse an adb serial (None: the only device) that could be read as an option or a shell word."""
    if serial is not None and not _ADB_SERIAL.fullmatch(serial):
        raise TopformerDeployError(f"refusing adb serial {serial!r}: only letters, digits and ._:- are allowed")


def _check_remote_path(path: str) -> str:
    if not _SAFE_REMOTE_PATH.fullmatch(path) or path.startswith("-"):
        raise DeviceError(f"refusing remote path {path!r}: only letters, digits and ._/+- are allowed")
    return path


class Transport:
    """A bench target. Subclasses implement :meth:`run`, :meth:`push`, :meth:`pull`."""

    name = "transport"
    kind = "transport"
    #: The interpreter that runs the device runner when the user names none.
    default_python = "python3"
    #: Whether pinning a run to cores (taskset) means anything on this target.
    pinning = True
    #: Whether commands run on another machine, where a local timeout or Ctrl-C ends only the ssh/adb client.
    remote = False

    def run(self, argv: list[str], timeout: float = 60, check: bool = True,
            stdin: bytes | None = None, env: dict[str, str] | None = None) -> RunResult:
        """Run the program ``argv`` on the target with ``env`` added to its environment; ``check`` raises
        DeviceError on a non-zero exit."""
        raise NotImplementedError

    def shell(self, script: str, timeout: float = 60, check: bool = True) -> RunResult:
        """Run a POSIX sh snippet on the target (the caller quotes what goes into it)."""
        return self.run(["sh", "-c", script], timeout=timeout, check=check)

    def probe(self, script: str, timeout: float = 60) -> str:
        """What the conditions probe (a sh snippet printing ``@@section`` blocks) prints on the target."""
        return self.shell(script, timeout=timeout, check=False).stdout

    def description(self) -> dict | None:
        """Facts about the target that its conditions do not show (a simulated core's model), or None."""
        return None

    def check_options(self, options) -> None:
        """Refuse bench options this target cannot honour (one clear TopformerDeployError)."""

    def push(self, local: Path, remote: str, timeout: float = 300) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path, timeout: float = 300) -> None:
        raise NotImplementedError

    def remove(self, remote: str) -> None:
        """``rm -rf remote``; never raises (it runs in cleanup paths)."""
        try:
            self.run(["rm", "-rf", "--", remote], timeout=30, check=False)
        except DeviceError:
            pass

    def temp_root(self) -> str | None:
        """Directory under which :meth:`temp_dir` creates its directory (None: the target's default)."""
        return None

    @contextlib.contextmanager
    def temp_dir(self) -> Iterator[str]:
        """A fresh directory on the target, removed on exit, on error and on Ctrl-C."""
        root = self.temp_root()
        template = f"{root}/topformer-deploy.XXXXXX" if root else None
        argv = ["mktemp", "-d", template] if template else ["mktemp", "-d", "-t", "topformer-deploy.XXXXXX"]
        path = self.run(argv, timeout=30).stdout.strip()
        if not path.startswith("/"):
            raise DeviceError(f"{self.name}: mktemp gave no directory ({path!r})")
        try:
            yield path
        finally:
            self.remove(path)

    def close(self) -> None:
        """Release the connection (nothing to do for most transports)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _checked(self, result: RunResult, command: list[str] | str, check: bool) -> RunResult:
        if check and result.returncode != 0:
            text = command if isinstance(command, str) else shlex.join(command)
            detail = last_line(result.stderr) or last_line(result.stdout) or "no output"
            raise DeviceError(f"{self.name}: `{text[:120]}` failed (exit {result.returncode}): {detail}")
        return result


def _env_prefix(env: dict[str, str] | None) -> list[str]:
    """``env K=V ...`` in front of a remote command (quoted later with the rest of the argv)."""
    return ["env", *(f"{k}={v}" for k, v in env.items())] if env else []


class LocalTransport(Transport):
    """This machine: subprocesses without a shell, files copied."""

    name = kind = "local"
    default_python = sys.executable

    def run(self, argv, timeout=60, check=True, stdin=None, env=None):
        full_env = {**os.environ, **env} if env else None
        return self._checked(run_local(list(argv), timeout, stdin, env=full_env), argv, check)

    def push(self, local, remote, timeout=300):
        shutil.copy2(local, remote)

    def pull(self, remote, local, timeout=300):
        shutil.copy2(remote, local)

    def remove(self, remote):
        shutil.rmtree(remote, ignore_errors=True)

    @contextlib.contextmanager
    def temp_dir(self):
        path = tempfile.mkdtemp(prefix="topformer-deploy.")
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class SshTransport(Transport):
    """An ssh host through the system OpenSSH client (so ~/.ssh/config, keys, ProxyJump all apply).

    BatchMode means no password prompt can hang a run; ConnectTimeout makes an unreachable host fail
    within seconds; ServerAlive* notice a link that died mid-run.
    """

    kind = "ssh"
    remote = True

    def __init__(self, host: str, user: str | None = None, port: int | None = None,
                 config_file: str | None = None, connect_timeout: int = 10):
        check_ssh_destination(host, user)
        self.host, self.user, self.port = host, user, port
        self.destination = f"{user}@{host}" if user else host
        self.legacy_scp = False          # scp -O: the server has no SFTP subsystem
        self.name = f"ssh:{self.destination}" + (f":{port}" if port else "")
        self.options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if config_file:
            self.options = ["-F", str(config_file), *self.options]
        # one connection for all the calls of a bench (a handshake costs ~1 s on a Pi); close() ends it.
        # The socket path must stay under ~104 bytes, so it lives in /tmp, not in a long $TMPDIR.
        short = "/tmp" if os.path.isdir("/tmp") else None
        self._control_dir = tempfile.mkdtemp(prefix="tfd-ssh.", dir=short)
        if len(self._control_dir) + 42 < 100:
            self.options += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                             "-o", "ControlPersist=120"]

    def _ssh(self, remote_command: str, timeout: float, stdin: bytes | None) -> RunResult:
        port = ["-p", str(self.port)] if self.port else []
        argv = ["ssh", *self.options, *port, "-T", self.destination, "--", remote_command]
        result = run_local(argv, timeout, stdin, what=self.name)
        if result.returncode == 255:  # ssh's own failure: the link, not the command
            raise DeviceError(f"{self.name}: {last_line(result.stderr) or 'ssh failed'}")
        return result

    def run(self, argv, timeout=60, check=True, stdin=None, env=None):
        argv = [*_env_prefix(env), *argv]
        return self._checked(self._ssh(shlex.join(argv), timeout, stdin), argv, check)

    def shell(self, script, timeout=60, check=True):
        argv = ["sh", "-c", script]
        return self._checked(self._ssh(shlex.join(argv), timeout, None), argv, check)

    def _scp(self, source: str, target: str, timeout: float) -> None:
        """Copy with scp: over SFTP (OpenSSH 9's default), else - a server without an SFTP subsystem (dropbear,
        minimal images), where scp says only "Connection closed" - with scp's own protocol (``-O``), from then on."""
        port = ["-P", str(self.port)] if self.port else []
        legacy = ["-O"] if self.legacy_scp else []
        result = run_local(["scp", "-q", *legacy, *self.options, *port, source, target], timeout,
                           what=f"{self.name} scp")
        if result.returncode != 0 and not self.legacy_scp and _NO_SFTP.search(result.stderr):
            self.legacy_scp = True
            return self._scp(source, target, timeout)
        if result.returncode != 0:
            raise DeviceError(f"{self.name}: copy failed: {last_line(result.stderr) or 'scp failed'}"
                              + (" (with scp -O, as the server has no SFTP subsystem)" if legacy else ""))
        return None

    def push(self, local, remote, timeout=300):
        self._scp(str(local), f"{self.destination}:{_check_remote_path(remote)}", timeout)

    def pull(self, remote, local, timeout=300):
        self._scp(f"{self.destination}:{_check_remote_path(remote)}", str(local), timeout)

    def close(self):
        if self._control_dir and os.path.isdir(self._control_dir):
            port = ["-p", str(self.port)] if self.port else []
            try:
                run_local(["ssh", *self.options, *port, "-O", "exit", self.destination], 10)
            except DeviceError:
                pass
            shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def __del__(self):
        try:
            if getattr(self, "_control_dir", None):
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class AdbTransport(Transport):
    """An Android device through the ``adb`` command line (``$ADB``, ``--adb PATH`` or ``adb`` on PATH).

    Every shell command gets ``; echo __tfd_rc=$?`` appended: adb before 7.0 (and some vendor builds)
    always exits 0, so the device's exit code is recovered from the output. No marker means the
    connection dropped before the command finished.
    """

    kind = "adb"
    remote = True

    def __init__(self, serial: str | None = None, adb_path: str | None = None, state_timeout: float = 10):
        check_adb_serial(serial)
        self.adb = _adb_program(adb_path)
        self.serial = serial or self._single_device(state_timeout)
        self.name = f"adb:{self.serial}"
        self._check_state(state_timeout)

    def _adb(self, args: list[str], timeout: float, stdin: bytes | None = None) -> RunResult:
        return run_local([self.adb, "-s", self.serial, *args], timeout, stdin, what=self.name)

    def _single_device(self, timeout: float) -> str:
        from .conditions import parse_adb_devices

        result = run_local([self.adb, "devices", "-l"], timeout, what="adb devices")
        if result.returncode != 0:
            raise DeviceError(f"adb devices failed: {last_line(result.stderr) or last_line(result.stdout)}")
        devices = parse_adb_devices(result.stdout)
        ready = [d["serial"] for d in devices if d["state"] == "device"]
        if len(ready) == 1:
            return ready[0]
        if not devices:
            raise DeviceError("no adb device attached (see `topformer-deploy devices`)")
        if not ready:
            states = ", ".join(f"{d['serial']} {d['state']}" for d in devices)
            raise DeviceError(f"no adb device ready: {states}")
        raise DeviceError(f"several adb devices attached ({', '.join(ready)}): choose one with --device adb:SERIAL")

    def _check_state(self, timeout: float) -> None:
        result = self._adb(["get-state"], timeout)
        state = result.stdout.strip()
        if result.returncode == 0 and state == "device":
            return
        errors = [ln.strip() for ln in result.stderr.splitlines() if ln.strip().startswith("error:")]
        detail = (errors[0] if errors else last_line(result.stderr)) or state or "unknown state"
        hint = {"unauthorized": " (accept the USB debugging prompt on the phone)",
                "offline": " (reconnect the cable or run `adb reconnect`)"}
        extra = next((h for key, h in hint.items() if key in detail), "")
        raise DeviceError(f"{self.name} is not ready: {detail.removeprefix('error: ')}{extra}")

    def _shell(self, command: str, argv_text: str, timeout: float, check: bool) -> RunResult:
        result = self._adb(["shell", f"{command}; echo {_RC_MARKER}$?"], timeout)
        out = result.stdout.replace("\r\n", "\n")
        cut = out.rfind(_RC_MARKER)
        if cut < 0:
            detail = last_line(result.stderr) or last_line(out) or f"adb exit {result.returncode}"
            raise DeviceError(f"{self.name}: connection lost during `{argv_text[:120]}`: {detail}")
        rc_text = out[cut + len(_RC_MARKER):].strip()
        stdout = out[:cut]
        returncode = int(rc_text) if rc_text.isdigit() else 255
        return self._checked(RunResult(returncode, stdout, result.stderr.replace("\r\n", "\n")), argv_text, check)

    def run(self, argv, timeout=60, check=True, stdin=None, env=None):
        if stdin is not None:
            raise DeviceError("adb transport cannot feed stdin to a command; push a file instead")
        text = shlex.join([*_env_prefix(env), *argv])
        return self._shell(text, text, timeout, check)

    def shell(self, script, timeout=60, check=True):
        return self._shell(f"( {script}\n)", script, timeout, check)

    def _transfer(self, args: list[str], timeout: float) -> None:
        result = self._adb(args, timeout)
        text = (result.stdout + result.stderr).replace("\r\n", "\n")
        if result.returncode != 0 or re.search(r"^(adb: )?error:", text, re.M):
            raise DeviceError(f"{self.name}: adb {args[0]} failed: {last_line(result.stderr) or last_line(text)}")

    def push(self, local, remote, timeout=300):
        self._transfer(["push", str(local), _check_remote_path(remote)], timeout)

    def pull(self, remote, local, timeout=300):
        self._transfer(["pull", _check_remote_path(remote), str(local)], timeout)

    def temp_root(self):
        return ADB_TMP_ROOT


def list_adb_devices(adb_path: str | None = None, timeout: float = 10) -> list[dict]:
    """``adb devices -l`` with, for the ready ones, ``getprop`` model / board platform / SoC model."""
    from .conditions import parse_adb_devices

    adb = _adb_program(adb_path)
    result = run_local([adb, "devices", "-l"], timeout, what="adb devices")
    if result.returncode != 0:
        raise DeviceError(f"adb devices failed: {last_line(result.stderr) or last_line(result.stdout)}")
    found = parse_adb_devices(result.stdout)
    for d in found:
        d.update(model=d.get("model"), platform=None, soc=None)
        if d["state"] != "device" or not _ADB_SERIAL.fullmatch(d["serial"]):
            continue
        try:
            props = AdbTransport(d["serial"], adb, state_timeout=timeout).shell(
                "getprop ro.product.model; getprop ro.board.platform; getprop ro.soc.model", timeout=timeout)
        except DeviceError as exc:
            d["error"] = str(exc)
            continue
        lines = [ln.strip() for ln in props.stdout.splitlines()] + ["", "", ""]
        d["model"] = lines[0] or d.get("model")
        d["platform"], d["soc"] = lines[1] or None, lines[2] or None
    return found
