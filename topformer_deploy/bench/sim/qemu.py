"""qemu-aarch64 with the instruction-counting plugin: find qemu, build the plugin, make a core's sim root,
build the command line.

* Debian's dynamic ``qemu-aarch64`` (package qemu-user) loads TCG plugins; ``qemu-aarch64-static`` cannot.
* The plugin (``insn_counter.c``, shipped with the package) is compiled on first use with the system C
  compiler into the cache, named by a hash of its source, and load-checked against the installed qemu's
  plugin API version.
* A sim root (``-L``) holds the core's ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` as plain files,
  and symlinks to the userland's ``usr bin sbin lib etc opt``: qemu serves an absolute path from the prefix
  when it exists there, so the guest sees the core's CPU description and the userland, and the host's
  ``/tmp``, ``/dev`` and ``/proc/self`` (nothing is written into the userland, nothing is mounted).
* qemu opens the program by its host path (``-L`` is not applied to it) and passes its own environment to
  the guest: the program is the userland's real ELF (symlinks resolved inside the userland), argv[0] the
  guest path (``-0``), and qemu runs with an empty environment, the guest's given as ``-E``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ...files import cache_root
from ..transports import DeviceError
from . import cores

PLUGIN_SOURCE = "insn_counter.c"
PLUGIN_API = 1                                   # the plugin API version insn_counter.c declares
#: A guest ``lseek(-1, MARK_MAGIC | label, 0)`` makes the plugin snapshot its counters (as in the runner).
MARK_MAGIC = 0x7466647000000000
LINKED_DIRS = ("usr", "bin", "sbin", "lib", "etc", "opt")


class SimError(DeviceError):
    """A simulated core cannot run: qemu-user, the C compiler or the userland is missing or unusable."""


def sim_cache() -> Path:
    """Where plugins and sim roots are kept."""
    return cache_root() / "sim"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise SimError(f"{name} not found: install the Debian package {package} (apt-get install {package})")
    return path


def find_qemu(name: str = "qemu-aarch64") -> str:
    """The dynamic qemu-aarch64 that loads TCG plugins (not qemu-aarch64-static)."""
    qemu = _tool(name, "qemu-user")
    helptext = subprocess.run([qemu, "-h"], capture_output=True, text=True, timeout=30).stdout
    if "-plugin" not in helptext:
        raise SimError(f"{qemu} cannot load TCG plugins (a static build?): install the Debian package qemu-user")
    return qemu


def qemu_version(qemu: str) -> str:
    """``7.2.22`` from ``qemu-aarch64 --version``."""
    text = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (\S+)", text)
    return match.group(1) if match else "unknown"


def build_plugin(qemu: str, cache: Path | None = None) -> Path:
    """The compiled plugin for this source (built once, atomically), checked to load in ``qemu``."""
    source = resources.files(__package__).joinpath(PLUGIN_SOURCE).read_bytes()
    cc = os.environ.get("CC") or ("cc" if shutil.which("cc") else "gcc")
    command = [cc, "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall"]
    digest = hashlib.sha256(source + repr(command).encode()).hexdigest()[:16]
    cache = Path(cache or sim_cache())
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"insn_counter-{digest}.so"
    if not target.exists():
        _tool(cc, "gcc")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            (Path(tmp) / PLUGIN_SOURCE).write_bytes(source)
            built = Path(tmp) / target.name
            proc = subprocess.run([*command, "-o", str(built), str(Path(tmp) / PLUGIN_SOURCE)], capture_output=True,
                                  text=True, timeout=300)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise SimError(f"cannot compile the instruction-counting plugin with {cc}: {last}")
            os.replace(built, target)
    _check_plugin(qemu, target)
    return target


def _check_plugin(qemu: str, plugin: Path) -> None:
    """Load the plugin with no guest program: qemu loads plugins first (the plugin writes its "start" line
    with qemu's plugin API range), then fails on the missing program, as expected."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "check.jsonl"
        proc = subprocess.run([qemu, "-plugin", f"{plugin},out={out}", str(Path(tmp) / "none")], capture_output=True,
                              text=True, timeout=60)
        try:
            api = json.loads(out.read_text().splitlines()[0])["api"]
        except (OSError, ValueError, KeyError, IndexError):
            raise SimError(f"{qemu} does not load the plugin: {' '.join((proc.stdout + proc.stderr).split())[:300]}") \
                from None
    if not api["min"] <= PLUGIN_API <= api["cur"]:
        raise SimError(f"{qemu} supports TCG plugin API {api['min']}..{api['cur']}; the plugin is written for "
                       f"{PLUGIN_API}")


def make_sim_root(core: str, rootfs: Path, cache: Path | None = None) -> Path:
    """``<cache>/roots/<core>-<hash>/``: the core's CPU description plus symlinks into ``rootfs`` (made once)."""
    rootfs = Path(rootfs).resolve()
    if not (rootfs / "usr/lib/ld-linux-aarch64.so.1").is_file():
        raise SimError(f"{rootfs} is not an arm64 userland (no usr/lib/ld-linux-aarch64.so.1)")
    files = {"proc/cpuinfo": cores.proc_cpuinfo(core)}
    files.update({f"sys/devices/system/cpu/{rel}": text for rel, text in cores.sysfs_files(core).items()})
    key = json.dumps([str(rootfs), sorted(files.items())]).encode()
    parent = Path(cache or sim_cache()) / "roots"
    root = parent / f"{core}-{hashlib.sha256(key).hexdigest()[:12]}"
    if root.is_dir():
        return root
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{core}-", dir=parent))
    tmp.chmod(0o755)
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    for name in LINKED_DIRS:
        (tmp / name).symlink_to(rootfs / name)
    (tmp / "sim-root.json").write_text(json.dumps({"core": core, "rootfs": str(rootfs), "cpu": cores.CORES[core]}))
    try:
        tmp.rename(root)
    except OSError:                       # another process made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def guest_realpath(rootfs: Path, path: str, depth: int = 0) -> str:
    """``path`` resolved as the guest sees it: symlinks inside ``rootfs``, absolute ones relative to it."""
    parts = [p for p in path.split("/") if p]
    resolved = ""
    for i, part in enumerate(parts):
        candidate = f"{resolved}/{part}"
        link = Path(f"{rootfs}{candidate}")
        if link.is_symlink():
            if depth > 40:
                raise SimError(f"too many symlinks resolving {path} in {rootfs}")
            target = os.readlink(link)
            target = target if target.startswith("/") else f"{resolved}/{target}"
            return guest_realpath(rootfs, os.path.normpath("/".join([target, *parts[i + 1:]])), depth + 1)
        resolved = candidate
    return resolved or "/"


def qemu_argv(qemu: str, core: str, sim_root: Path, rootfs: Path, plugin: Path, counts: Path,
              guest_argv: list[str], guest_env: dict[str, str]) -> list[str]:
    """The command running ``guest_argv`` (guest paths; ``guest_argv[0]`` e.g. the venv's python3) on ``core``.

    Run it with an empty host environment: the guest's is exactly ``guest_env``.
    """
    program = Path(rootfs) / guest_realpath(Path(rootfs), guest_argv[0]).lstrip("/")
    argv = [qemu, "-L", str(sim_root), "-cpu", core, "-plugin", f"{plugin},out={counts}", "-0", guest_argv[0]]
    for key in sorted(guest_env):
        argv += ["-E", f"{key}={guest_env[key]}"]
    return [*argv, str(program), *guest_argv[1:]]
