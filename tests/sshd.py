"""A real OpenSSH server on 127.0.0.1 for the tests: throwaway host and user keys, its own ssh_config.

``start_sshd(workdir)`` returns an :class:`Sshd` whose ``config`` file lets ``ssh``/``scp`` (and so
``--device ssh:USER@127.0.0.1:PORT`` with ``TOPFORMER_DEPLOY_SSH_CONFIG``) log in without a password;
``stop()`` kills exactly that sshd by its pid. ``require_sshd()`` skips with the reason when OpenSSH is
not installed, but fails under ``CI=true`` (CI installs it, so a skip there would hide a broken setup).
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)


def require_sshd() -> str:
    """Path of sshd; skip (or fail under CI=true) when sshd, ssh, scp or ssh-keygen is missing."""
    missing = [n for n, p in (("sshd", SSHD), ("ssh", shutil.which("ssh")), ("scp", shutil.which("scp")),
                              ("ssh-keygen", shutil.which("ssh-keygen"))) if not p]
    if missing:
        reason = f"OpenSSH not installed ({', '.join(missing)} missing): apt-get install openssh-server openssh-client"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return SSHD


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    user: str
    config: Path          # client ssh_config (pass as ssh -F, or TOPFORMER_DEPLOY_SSH_CONFIG)
    process: subprocess.Popen
    log: Path
    tmpdir: Path          # $TMPDIR of the ssh sessions: the "device's" temp area, checkable for leftovers

    @property
    def device(self) -> str:
        return f"ssh:{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)


def start_sshd(workdir: Path, timeout: float = 15, sftp: bool = True, home: Path | None = None) -> Sshd:
    """Start sshd on a free loopback port; everything it needs lives under ``workdir``. ``sftp=False``: no SFTP
    subsystem (as dropbear and minimal images), so OpenSSH 9's scp fails unless it falls back to its own
    protocol. ``home``: the sessions' $HOME (checkable for files left in the device user's home)."""
    sshd = require_sshd()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    host_key, user_key = workdir / "host_ed25519", workdir / "user_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    (workdir / "authorized_keys").write_text((workdir / "user_ed25519.pub").read_text())
    os.chmod(workdir / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on as root
    port, user = free_port(), getpass.getuser()
    tmpdir = workdir / "device-tmp"
    tmpdir.mkdir()
    (workdir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir}/sshd.pid\n"
        f"AuthorizedKeysFile {workdir}/authorized_keys\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nLogLevel ERROR\n" + ("Subsystem sftp internal-sftp\n" if sftp else "") +
        f"SetEnv TMPDIR={tmpdir}" + (f" HOME={home}" if home else "") + "\n")
    host_pub = (workdir / "host_ed25519.pub").read_text().split()
    (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = workdir / "ssh_config"
    config.write_text(
        f"Host 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {user_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {workdir}/known_hosts\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
    log = workdir / "sshd.log"
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(workdir / "sshd_config")],
                               stdout=subprocess.DEVNULL, stderr=open(log, "wb"), stdin=subprocess.DEVNULL)
    server = Sshd(port, user, config, process, log, tmpdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited ({process.returncode}): {log.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")
