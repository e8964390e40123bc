"""An emulated Arm board: a Debian bookworm arm64 rootfs run under qemu-user, reached over sshd on loopback.

The rootfs (see :mod:`topformer_deploy.bench.sim.userland`) is the base of Raspberry Pi OS with a venv holding the same aarch64
wheels a Pi would use (numpy, ai-edge-litert, onnxruntime). Only timings are unrealistic (emulation);
everything else is the real ssh + device-runner path. Needs Linux, root (chroot, mount), binfmt_misc.

    build()  -> dict    debootstrap + venv, cached (bench.sim.userland.build)
    start()  -> Board   /proc and /dev mounted, sshd on a free 127.0.0.1 port with throwaway keys
    stop()              sshd killed by pid, processes left in the chroot ended, mounts undone
    running() -> Board | None

Command line: ``python -m topformer_deploy.testing.arm64_board build|start|stop|status|ssh-config``
(``scripts/arm64-board.sh`` wraps it).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bench.sim import cores
from ..bench.sim.userland import (BOARD_DIR, VENV, UserlandError, board_paths, build, built, host_problem,
                                  mount_system_dirs, mounts_under, pids_in, prepare_host, run_command, unmount_all)

__all__ = ["Board", "UserlandError", "build", "built", "host_problem", "prepare_host", "running", "start", "status",
           "stop"]

SSH_ALIAS = "arm64-board"
#: The board is a Raspberry Pi 4: its programs run as this qemu CPU model, with its CPU description.
BOARD_CORE = "cortex-a72"


@dataclass
class Board:
    """A running board: where to reach it and which interpreter on it has the runtimes."""

    port: int
    pid: int
    key: str
    known_hosts: str
    ssh_config: str
    python: str = f"{VENV}/bin/python"
    user: str = "root"
    host: str = "127.0.0.1"

    @property
    def target(self) -> str:
        """The ``--device`` spec of ``topformer-deploy bench``."""
        return f"ssh:{self.user}@{self.host}:{self.port}"

    def ssh_argv(self, argv: list[str]) -> list[str]:
        """A local ``ssh`` command running ``argv`` on the board."""
        return ["ssh", "-F", self.ssh_config, SSH_ALIAS, shlex.join(argv)]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _end(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


# ---------------------------------------------------------------- start / stop

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sshd_config(port: int) -> str:
    """sshd's config; every session runs its programs as a Cortex-A72 (qemu-user reads QEMU_CPU)."""
    path = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return "\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {BOARD_DIR}/ssh_host_ed25519_key",
        f"AuthorizedKeysFile {BOARD_DIR}/authorized_keys", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PidFile none", "MaxStartups 50", "MaxSessions 50", f"SetEnv PATH={path} QEMU_CPU={BOARD_CORE}",
        "Subsystem sftp /usr/lib/openssh/sftp-server", ""])


def _write_client_files(state: Path, port: int, host_pub: str) -> tuple[Path, Path, Path]:
    key = state / "id_ed25519"
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "topformer-arm64-board-user", "-f", str(key)])
    known = state / "known_hosts"
    known.write_text(f"{SSH_ALIAS} {host_pub}\n")
    config = state / "ssh_config"
    config.write_text(ssh_config_text(port, key, known))
    return key, known, config


def ssh_config_text(port: int, key: Path, known_hosts: Path) -> str:
    """An ssh_config for the board: ``ssh -F FILE arm64-board`` or bench's ``--ssh-config FILE``."""
    return (f"Host {SSH_ALIAS} 127.0.0.1\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n  HostKeyAlias {SSH_ALIAS}\n"
            f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 20\n  LogLevel ERROR\n")


def describe_cpu(root: Path, state: Path, core: str = BOARD_CORE) -> None:
    """Give the chroot a Pi 4's CPU description: its /proc/cpuinfo (bind-mounted over the host's, which
    the mounted /proc shows) and /sys/devices/system/cpu as plain files. Without them LiteRT's CPU detection
    fails (no /sys/devices/system/cpu/possible, an x86 cpuinfo) and XNNPACK is never created."""
    cpuinfo = state / "cpuinfo"
    cpuinfo.write_text(cores.proc_cpuinfo(core))
    run_command(["mount", "--bind", str(cpuinfo), str(root / "proc/cpuinfo")], timeout=30)
    cpu_dir = root / "sys/devices/system/cpu"
    shutil.rmtree(cpu_dir, ignore_errors=True)
    for rel, text in cores.sysfs_files(core).items():
        (cpu_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (cpu_dir / rel).write_text(text)


def running(cache: Path | None = None) -> Board | None:
    """The running board, if its sshd (started by us, chrooted into the rootfs) is alive."""
    p = board_paths(cache)
    try:
        data = json.loads(p["board"].read_text())
        if os.readlink(f"/proc/{data['pid']}/root") == str(p["root"].resolve()):
            return Board(**data)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def start(cache: Path | None = None, timeout: float = 120, say=print) -> Board:
    """Start the board's sshd on a free loopback port; returns once a real ssh login answers ``aarch64``."""
    p = board_paths(cache)
    if not built(cache):
        raise UserlandError("the arm64 board is not built: run scripts/arm64-board.sh build")
    if (board := running(cache)) is not None:
        return board
    prepare_host(install=False)
    root, state = p["root"], p["state"]
    stop(cache)                                   # leftovers of a crashed run
    state.mkdir(parents=True, exist_ok=True)
    board_dir = root / BOARD_DIR.lstrip("/")
    try:
        mount_system_dirs(root)
        describe_cpu(root, state)
        (root / "run/sshd").mkdir(parents=True, exist_ok=True)
        port = _free_port()
        host_pub = (board_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        key, known, config = _write_client_files(state, port, " ".join(host_pub))
        shutil.copyfile(key.with_suffix(".pub"), board_dir / "authorized_keys")
        (board_dir / "sshd_config").write_text(_sshd_config(port))
        log = open(state / "sshd.log", "wb")
        began = time.monotonic()
        proc = subprocess.Popen(_sshd_argv(root), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "QEMU_CPU": BOARD_CORE})
        log.close()
        board = Board(port=port, pid=proc.pid, key=str(key), known_hosts=str(known), ssh_config=str(config))
        p["board"].write_text(json.dumps(asdict(board)))
        _wait_until_ready(board, proc, state / "sshd.log", timeout)
        say(f"arm64 board up on 127.0.0.1:{port} in {time.monotonic() - began:.1f} s (sshd pid {proc.pid})")
        return board
    except BaseException:
        stop(cache)
        raise


def _sshd_argv(root: Path) -> list[str]:
    """sshd in the chroot, in a UTS namespace of its own so that the board's hostname (and so the bench
    result's device id) is ``arm64-board``, not the host's; every step execs, so the pid is sshd's."""
    sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", f"{BOARD_DIR}/sshd_config"]
    if shutil.which("unshare") is None:
        return ["chroot", str(root), *sshd]
    return ["unshare", "--uts", "chroot", str(root), "/bin/sh", "-c",
            f"hostname {SSH_ALIAS} && exec {shlex.join(sshd)}"]


def _wait_until_ready(board: Board, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserlandError(f"sshd exited with {proc.returncode}: {log.read_text(errors='replace').strip()[-300:]}")
        try:
            res = subprocess.run(board.ssh_argv(["uname", "-m"]), capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            last = "ssh login timed out"
            continue
        if res.returncode == 0 and res.stdout.strip() == "aarch64":
            return
        last = (res.stdout + res.stderr).strip()
        time.sleep(0.5)
    raise UserlandError(f"the board's sshd did not answer within {timeout:.0f} s: {last[-300:]}")


def stop(cache: Path | None = None) -> bool:
    """Stop the board (sshd by pid, then what is left inside the chroot), undo mounts. True if it was running."""
    p = board_paths(cache)
    root = p["root"]
    was_running = False
    if (board := running(cache)) is not None:
        was_running = True
        _end([board.pid])
    if root.exists():
        _end(pids_in(root))
        unmount_all(root)
        (root / BOARD_DIR.lstrip("/") / "authorized_keys").unlink(missing_ok=True)
    p["board"].unlink(missing_ok=True)
    return was_running


def status(cache: Path | None = None) -> dict:
    p = board_paths(cache)
    board = running(cache)
    return {"cache": str(p["base"]), "built": built(cache), "running": asdict(board) if board else None,
            "target": board.target if board else None, "mounts": mounts_under(p["root"]) if p["root"].exists() else [],
            "host": platform.machine()}


# ---------------------------------------------------------------- command line

def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="arm64-board", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["build", "start", "stop", "status", "ssh-config"])
    parser.add_argument("--force", action="store_true", help="build: rebuild even if a complete rootfs exists")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.action == "build":
            print(json.dumps(build(force=args.force), indent=2))
        elif args.action == "start":
            board = start()
            print(f"device: {board.target}   python on the board: {board.python}\n"
                  f"ssh:    ssh -F {board.ssh_config} {SSH_ALIAS}")
        elif args.action == "stop":
            print("stopped" if stop() else "not running (mounts checked)")
        elif args.action == "status":
            print(json.dumps(status(), indent=2))
        else:
            board = running()
            if board is None:
                raise UserlandError("the board is not running (scripts/arm64-board.sh start)")
            print(Path(board.ssh_config).read_text(), end="")
    except UserlandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.action in ("build", "start"):
            stop()
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
