"""The project's aarch64 userland: a Debian bookworm arm64 rootfs with the runtimes a Raspberry Pi would use.

The simulated cores (``sim:CORE``) run the device runner on it under qemu-user, and the emulated board
(:mod:`topformer_deploy.testing.arm64_board`) serves it over sshd. ``build()`` prepares the host
(binfmt_misc, qemu-user-static, debootstrap), debootstraps (minbase + python3, venv, pip, ca-certificates,
openssh-server) into ``CACHE_DIR/rootfs`` from the host's own Debian mirror, then makes a venv with the
host's versions of numpy, ai-edge-litert and onnxruntime, and of click, rich and scipy (so that the command
line runs on the board as on a Pi set up with ``requirements-device.txt``: no torch). ``complete.json`` is
written last, so an interrupted build is redone, never used. Also the mount and process helpers the board uses.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ...errors import TopformerDeployError
from ...files import cache_root

CACHE_DIR = Path(os.environ.get("TOPFORMER_ARM64_BOARD_DIR") or cache_root() / "arm64-bookworm")
SUITE = "bookworm"
HOST_PACKAGES = ("qemu-user-static", "binfmt-support", "debootstrap")
ROOTFS_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "openssh-server")
RUNTIME_PACKAGES = ("numpy", "ai-edge-litert", "onnxruntime")
#: The command line's light dependencies (requirements-device.txt less the runtimes; scipy: the gate's U test).
#: Not part of the rebuild key (``host_runtimes``): a venv built without them only gets them added.
TOOL_PACKAGES = ("click", "rich", "scipy")
VENV = "/opt/topformer-venv"
BOARD_DIR = "/etc/ssh/topformer-board"          # inside the rootfs: host key, sshd_config, authorized_keys
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class UserlandError(TopformerDeployError):
    """The aarch64 userland cannot be built, or the emulated board cannot be started or stopped."""

    exit_code = 3


def board_paths(cache: Path | None = None) -> dict[str, Path]:
    base = Path(cache or CACHE_DIR)
    return {"base": base, "root": base / "rootfs", "state": base / "run", "log": base / "build.log",
            "debootstrapped": base / "debootstrap.done", "complete": base / "complete.json",
            "board": base / "run" / "board.json"}


def run_command(argv: list[str], timeout: float = 600, log: Path | None = None, env: dict | None = None) -> str:
    """Run a local command (never through a shell); raise UserlandError with its last output line on failure."""
    try:
        if log is not None:
            with open(log, "ab") as out:
                out.write(f"$ {shlex.join(argv)}\n".encode())
                out.flush()
                proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env,
                                      stdin=subprocess.DEVNULL)
            text = ""
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
            text = proc.stdout + proc.stderr
    except FileNotFoundError as exc:
        raise UserlandError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise UserlandError(f"{shlex.join(argv[:3])} ... timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        if log is not None:
            text = log.read_text(errors="replace")
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise UserlandError(f"{shlex.join(argv[:4])} ... failed (exit {proc.returncode}): {last[0].strip()}")
    return proc.stdout if log is None else ""


# ---------------------------------------------------------------- host preparation

def host_problem() -> str | None:
    """Why this host can never run the board (None when it may): not Linux, not root, no chroot."""
    if sys.platform != "linux":
        return "the emulated arm64 board needs Linux (binfmt_misc + qemu-user)"
    if os.geteuid() != 0:
        return "the emulated arm64 board needs root (chroot, mount); run as root or use scripts/arm64-board.sh with sudo"
    if shutil.which("chroot") is None or shutil.which("mount") is None:
        return "chroot/mount not found"
    return None


def _missing_host_packages() -> list[str]:
    missing = []
    for pkg in HOST_PACKAGES:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True,
                                 timeout=30).stdout
        except FileNotFoundError:
            return [] if shutil.which("debootstrap") and shutil.which("qemu-aarch64-static") else list(HOST_PACKAGES)
        if "install ok installed" not in out:
            missing.append(pkg)
    return missing


def prepare_host(install: bool = True) -> None:
    """Mount binfmt_misc, install qemu-user-static/binfmt-support/debootstrap, check qemu-aarch64 is registered."""
    problem = host_problem()
    if problem:
        raise UserlandError(problem)
    if not (BINFMT / "register").exists():
        try:
            run_command(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], timeout=30)
        except UserlandError as exc:
            raise UserlandError(f"cannot mount binfmt_misc (a container without privileges?): {exc}") from exc
    missing = _missing_host_packages()
    if missing:
        if not install:
            raise UserlandError(f"missing host packages: {' '.join(missing)} (run scripts/arm64-board.sh build)")
        if shutil.which("apt-get") is None:
            raise UserlandError(f"install {' '.join(missing)} (no apt-get here)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        try:
            run_command(argv, env=env)
        except UserlandError:
            run_command(["apt-get", "update", "-q"], env=env)
            run_command(argv, env=env)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        run_command(["update-binfmts", "--enable", "qemu-aarch64"], timeout=60)
    if not entry.exists():
        raise UserlandError("qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64)")
    text = entry.read_text()
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if not text.startswith("enabled") or "F" not in flags:
        raise UserlandError(f"qemu-aarch64 binfmt entry must be enabled with the F flag (flags: {flags or 'none'})")


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses ($TOPFORMER_ARM64_MIRROR overrides)."""
    if os.environ.get("TOPFORMER_ARM64_MIRROR"):
        return os.environ["TOPFORMER_ARM64_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for uri, suites in apt_entries(text, deb822=path.suffix == ".sources"):
            if SUITE in suites and uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise UserlandError("no Debian bookworm mirror in /etc/apt/sources.list*; set TOPFORMER_ARM64_MIRROR")


def apt_entries(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """(uri, suites) of the binary 'deb' entries of one apt sources file, one-line or deb822 format."""
    entries = []
    if deb822:
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []):
                entries += [(uri, fields.get("suites", [])) for uri in fields.get("uris", [])]
        return entries
    for line in text.splitlines():
        words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


# ---------------------------------------------------------------- mounts and processes

def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def mount_system_dirs(root: Path) -> None:
    """/proc and /dev for the chroot (sshd, python and pip need both).

    Not the host's /sys: its x86 CPU topology makes onnxruntime's cpuinfo crash under qemu-user (the board
    writes an Arm CPU description there as plain files instead).
    """
    mounted = set(mounts_under(root))
    for point, argv in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])):
        if str((root / point).resolve()) not in mounted:
            run_command(["mount", *argv, str(root / point)], timeout=30)


def unmount_all(root: Path) -> None:
    for point in mounts_under(root):
        for _ in range(10):
            if subprocess.run(["umount", point], capture_output=True).returncode == 0:
                break
            time.sleep(0.3)
        else:
            subprocess.run(["umount", "-l", point], capture_output=True)


def pids_in(root: Path) -> list[int]:
    """Processes whose root directory is the rootfs (the board's sshd and its sessions)."""
    target = str(root.resolve())
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root") == target:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


# ---------------------------------------------------------------- build

def host_runtime_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str | None]:
    """This host's installed version of each package (None where it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _chroot_env() -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
           "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                 "PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def _install_runtimes(root: Path, log: Path) -> dict[str, str]:
    """Venv with the host's versions of the runtimes where aarch64 wheels exist (newest wheel otherwise)."""
    shutil.rmtree(root / VENV.lstrip("/"), ignore_errors=True)
    run_command(["chroot", str(root), "/usr/bin/python3", "-m", "venv", VENV], log=log, env=_chroot_env())
    return _pip_install(root, log, RUNTIME_PACKAGES)


def _pip_install(root: Path, log: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Install the host's versions of ``names`` into the venv (one by one, unpinned, where a pin has no
    aarch64 wheel); return the versions installed."""
    env = _chroot_env()
    chroot = ["chroot", str(root)]
    pip = [*chroot, f"{VENV}/bin/pip", "install", "-q", "--only-binary=:all:"]
    pinned = [f"{n}=={v}" if v else n for n, v in host_runtime_versions(names).items()]
    try:
        run_command([*pip, *pinned], log=log, env=env, timeout=1800)
    except UserlandError:
        for spec in pinned:       # one by one: an unpinned fallback only where the pin has no aarch64 wheel
            try:
                run_command([*pip, spec], log=log, env=env, timeout=1800)
            except UserlandError:
                run_command([*pip, spec.split("==")[0]], log=log, env=env, timeout=1800)
    script = ("import json, importlib.metadata as m; "
              f"print(json.dumps({{n: m.version(n) for n in {list(names)!r}}}))")
    return json.loads(run_command([*chroot, f"{VENV}/bin/python", "-c", script], env=env, timeout=120))


def built(cache: Path | None = None) -> dict | None:
    """The build record of a complete rootfs, or None."""
    try:
        return json.loads(board_paths(cache)["complete"].read_text())
    except (OSError, ValueError):
        return None


def build(force: bool = False, cache: Path | None = None, say=print) -> dict:
    """Build (or reuse) the rootfs and its runtime venv; returns the build record (timings, versions).

    A complete build is reused while the host's numpy/ai-edge-litert/onnxruntime versions are the ones it
    pinned; when they change, only the venv is rebuilt. A build whose venv lacks the host's click/rich/scipy
    (an older build) only gets them installed.
    """
    p = board_paths(cache)
    record = built(cache)
    if not force and record and record.get("host_runtimes") == host_runtime_versions():
        if record.get("host_tools") == host_runtime_versions(TOOL_PACKAGES):
            return record
        return _add_tools(record, p, say)
    # else the host's runtime versions changed: only the venv is redone
    prepare_host(install=True)
    if p["root"].exists() and pids_in(p["root"]):
        raise UserlandError("the board is running; stop it before rebuilding")
    p["complete"].unlink(missing_ok=True)
    p["base"].mkdir(parents=True, exist_ok=True)
    root = p["root"]
    unmount_all(root)
    try:
        debootstrap_s = None
        if force or not p["debootstrapped"].exists():
            p["debootstrapped"].unlink(missing_ok=True)
            if mounts_under(root):
                raise UserlandError(f"cannot unmount everything under {root}; not deleting it")
            shutil.rmtree(root, ignore_errors=True)
            p["log"].write_text("")
            mirror = debian_mirror()
            say(f"debootstrap arm64 {SUITE} from {mirror} into {root} (a few minutes; log: {p['log']})")
            start = time.monotonic()
            run_command(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
                  SUITE, str(root), mirror], log=p["log"], timeout=3600)
            debootstrap_s = round(time.monotonic() - start, 1)
            p["debootstrapped"].write_text(json.dumps({"seconds": debootstrap_s, "mirror": mirror}))
        else:
            debootstrap_s = json.loads(p["debootstrapped"].read_text()).get("seconds")
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        if Path("/etc/resolv.conf").exists():
            (root / "etc/resolv.conf").unlink(missing_ok=True)
            shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        board_dir = root / BOARD_DIR.lstrip("/")
        shutil.rmtree(board_dir, ignore_errors=True)
        board_dir.mkdir(parents=True)
        run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "topformer-arm64-board",
              "-f", str(board_dir / "ssh_host_ed25519_key")])
        say(f"installing {', '.join(RUNTIME_PACKAGES)} into {VENV} on the board")
        mount_system_dirs(root)
        start = time.monotonic()
        versions = _install_runtimes(root, p["log"])
        tools = _pip_install(root, p["log"], TOOL_PACKAGES)
        venv_s = round(time.monotonic() - start, 1)
    finally:
        unmount_all(root)
    record = {"suite": SUITE, "arch": "arm64", "root": str(root), "python": f"{VENV}/bin/python",
              "runtimes": versions, "host_runtimes": host_runtime_versions(), "tools": tools,
              "host_tools": host_runtime_versions(TOOL_PACKAGES),
              "debootstrap_seconds": debootstrap_s, "venv_seconds": venv_s,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_record(p, record)
    return record


def _add_tools(record: dict, p: dict[str, Path], say) -> dict:
    """Install click/rich/scipy into a complete build's venv (nothing else is redone); return the new record."""
    root = p["root"]
    if pids_in(root):
        raise UserlandError(f"the board is running on a userland without {', '.join(TOOL_PACKAGES)}; stop it "
                            "(scripts/arm64-board.sh stop) so that they can be installed")
    prepare_host(install=True)
    say(f"installing {', '.join(TOOL_PACKAGES)} into {VENV} on the board")
    try:
        mount_system_dirs(root)
        tools = _pip_install(root, p["log"], TOOL_PACKAGES)
    finally:
        unmount_all(root)
    record = {**record, "tools": tools, "host_tools": host_runtime_versions(TOOL_PACKAGES)}
    _write_record(p, record)
    return record


def _write_record(p: dict[str, Path], record: dict) -> None:
    """complete.json, atomically (its presence says the build is complete)."""
    tmp = p["complete"].with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, p["complete"])
