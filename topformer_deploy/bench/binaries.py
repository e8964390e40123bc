"""LiteRT's ``benchmark_model`` binary: found, checked against the device, and remembered per ABI.

Where it comes from, first match wins: ``--benchmark-binary PATH``, then ``$TOPFORMER_DEPLOY_BENCHMARK_MODEL``,
then the per-ABI cache (``<cache_root>/benchmark_model/<platform>-<abi>/``: a binary given once is kept
there), then ``PATH`` (``benchmark_model`` or the official download names). Before anything is pushed the
file's ELF header must match the device: class (32/64-bit) and machine for its ABI (``ro.product.cpu.abi``
on Android, ``uname -m`` elsewhere), and an Android (bionic) or Linux (glibc/musl) dynamic loader, or none
(static). Nothing is ever downloaded: when no binary is known, :func:`missing_binary_message` says where
the official prebuilt binaries of both tools are published and how to hand one over.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from ..artifact import now_iso, sha256_file
from ..errors import TopformerDeployError
from ..files import cache_root, write_atomic, write_json

ENV_VAR = "TOPFORMER_DEPLOY_BENCHMARK_MODEL"
#: Android ABI -> (ELF class bits, e_machine)
ABI_ELF = {"arm64-v8a": (64, 183), "armeabi-v7a": (32, 40), "armeabi": (32, 40), "x86_64": (64, 62),
           "x86": (32, 3), "riscv64": (64, 243)}
ELF_ABI = {elf: abi for abi, elf in reversed(ABI_ELF.items())}
ELF_MACHINES = {183: "aarch64", 40: "arm", 62: "x86-64", 3: "i386", 243: "riscv"}
#: The official prebuilt binaries (nightly builds) of the two tools, per Android ABI
TFLITE_TOOL_PAGE = "https://ai.google.dev/edge/litert/models/measurement"
LITERT_TOOL_PAGE = "https://ai.google.dev/edge/litert/next/benchmark"
TFLITE_NIGHTLY = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
                  "nightly/latest/")
LITERT_LATEST = "https://storage.googleapis.com/litert/binaries/latest/"
OFFICIAL_FILES = {
    ("android", "arm64-v8a"): (TFLITE_NIGHTLY + "android_aarch64_benchmark_model",
                               LITERT_LATEST + "android_arm64/benchmark_model"),
    ("android", "armeabi-v7a"): (TFLITE_NIGHTLY + "android_arm_benchmark_model", None),
    ("linux", "arm64-v8a"): (TFLITE_NIGHTLY + "linux_aarch64_benchmark_model",
                             LITERT_LATEST + "linux_arm64/benchmark_model"),
    ("linux", "armeabi-v7a"): (TFLITE_NIGHTLY + "linux_arm_benchmark_model", None),
    ("linux", "x86_64"): (TFLITE_NIGHTLY + "linux_x86-64_benchmark_model",
                          LITERT_LATEST + "linux_x86_64/benchmark_model"),
}
PATH_NAMES = ("benchmark_model", "android_aarch64_benchmark_model", "android_arm_benchmark_model",
              "linux_aarch64_benchmark_model", "linux_arm_benchmark_model", "linux_x86-64_benchmark_model")


@dataclass(frozen=True)
class Target:
    """What a binary must be built for: the device's ABI and whether it runs Android or plain Linux."""

    abi: str
    platform: str  # android | linux

    @property
    def key(self) -> str:
        return f"{self.platform}-{self.abi}"


@dataclass(frozen=True)
class ElfInfo:
    bits: int
    machine: int
    interpreter: str | None  # PT_INTERP (the dynamic loader), None for a static executable

    @property
    def abi(self) -> str:
        return ELF_ABI.get((self.bits, self.machine), f"{self.bits}-bit {ELF_MACHINES.get(self.machine, self.machine)}")

    @property
    def platform(self) -> str:
        if self.interpreter is None:
            return "static"
        return "android" if self.interpreter.startswith("/system/") else "linux"


@dataclass(frozen=True)
class BenchmarkBinary:
    """A benchmark_model that passed the ELF check for ``target``; ``source``: option | env | cache | PATH."""

    path: Path
    source: str
    target: Target


def device_target(snapshot: dict) -> Target | None:
    """The target of a device from its conditions snapshot (None when its ABI is unknown)."""
    abi = snapshot.get("abi")
    return Target(abi, "android" if snapshot.get("android") else "linux") if abi else None


def read_elf(path: Path) -> ElfInfo | None:
    """Class, machine and dynamic loader from an ELF file's headers; None when it is no ELF file."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
            return None
        bits, order = (32, 64)[head[4] - 1], "<>"[head[5] - 1]
        machine = struct.unpack_from(order + "H", head, 18)[0]
        if bits == 64:
            phoff, = struct.unpack_from(order + "Q", head, 32)
            entsize, count = struct.unpack_from(order + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(order + "I", head, 28)
            entsize, count = struct.unpack_from(order + "HH", head, 42)
        interpreter = None
        for i in range(min(count, 64)):
            f.seek(phoff + i * entsize)
            entry = f.read(entsize)
            if len(entry) < (56 if bits == 64 else 32) or struct.unpack_from(order + "I", entry, 0)[0] != 3:
                continue  # PT_INTERP is 3
            offset, size = (struct.unpack_from(order + "Q16xQ", entry, 8) if bits == 64
                            else struct.unpack_from(order + "I8xI", entry, 4))
            f.seek(offset)
            interpreter = f.read(min(size, 256)).split(b"\0")[0].decode("utf-8", "replace")
    return ElfInfo(bits, machine, interpreter)


def check_binary(path: str | os.PathLike, target: Target, device: str, given_as: str = "") -> Path:
    """``path`` if it is an executable ELF file for ``target``; else one clear TopformerDeployError."""
    path = Path(path).expanduser()
    what = f"{path}{given_as}"
    if not path.is_file():
        raise TopformerDeployError(f"{what}: no such benchmark binary")
    info = read_elf(path)
    if info is None:
        raise TopformerDeployError(f"{what} is not an ELF executable (a script, an .apk or a download page?): "
                                   f"benchmark_model must be the native binary for {target.abi}")
    if (info.bits, info.machine) != ABI_ELF.get(target.abi, (None, None)):
        raise TopformerDeployError(f"{what} is built for {info.abi}, but {device} is {target.abi}: "
                                   f"{where_to_get(target)}")
    if info.platform not in ("static", target.platform):
        raise TopformerDeployError(f"{what} is linked for {info.platform.title()} ({info.interpreter}), but {device} "
                                   f"runs {target.platform.title()}: {where_to_get(target)}")
    return path


def cache_dir(target: Target) -> Path:
    return cache_root() / "benchmark_model" / target.key


def cached_binary(target: Target) -> Path | None:
    """The binary remembered for ``target``, if it is still whole (its sha256 is the recorded one)."""
    folder = cache_dir(target)
    binary, record = folder / "benchmark_model", folder / "benchmark_model.json"
    try:
        if binary.is_file() and json.loads(record.read_text()).get("sha256") == sha256_file(binary):
            return binary
    except (OSError, ValueError):
        pass
    return None


def remember(binary: BenchmarkBinary, tool: dict) -> Path | None:
    """Keep a binary given by option or environment in the per-ABI cache (with what it is); return the copy."""
    if binary.source not in ("option", "env"):
        return None
    folder = cache_dir(binary.target)
    target = folder / "benchmark_model"
    digest = sha256_file(binary.path)
    if cached_binary(binary.target) == target and sha256_file(target) == digest:
        return target
    write_atomic(target, binary.path.read_bytes())
    target.chmod(0o755)
    write_json(folder / "benchmark_model.json", {"sha256": digest, "source": str(binary.path.resolve()),
                                                 "abi": binary.target.abi, "platform": binary.target.platform,
                                                 "tool": tool, "registered": now_iso()})
    return target


def find_binary(target: Target | None, device: str, given: str | None = None) -> BenchmarkBinary | None:
    """The benchmark binary for ``target`` (option, environment, cache, PATH), ELF-checked; None if none.

    A binary named by option or environment that does not fit is an error; one on PATH that does not fit
    is passed over.
    """
    if target is None:
        raise TopformerDeployError(f"{device} reports no CPU ABI (getprop ro.product.cpu.abi / uname -m): "
                                   "cannot check a benchmark binary against it")
    if given:
        return BenchmarkBinary(check_binary(given, target, device), "option", target)
    if os.environ.get(ENV_VAR):
        return BenchmarkBinary(check_binary(os.environ[ENV_VAR], target, device, f" (${ENV_VAR})"), "env", target)
    cached = cached_binary(target)
    if cached:
        return BenchmarkBinary(cached, "cache", target)
    for name in PATH_NAMES:
        found = shutil.which(name)
        if found:
            try:
                return BenchmarkBinary(check_binary(found, target, device), "PATH", target)
            except TopformerDeployError:
                continue
    return None


def where_to_get(target: Target) -> str:
    """Where the official prebuilt binaries of both tools are published for ``target``, and how to hand one over."""
    hand_over = (f"pass it once with --benchmark-binary PATH (it is remembered for {target.key}) or set "
                 f"${ENV_VAR}")
    tflite, litert = OFFICIAL_FILES.get((target.platform, target.abi), (None, None))
    if tflite:
        return (f"get TFLite's benchmark_model ({tflite}) or LiteRT's ({litert or LITERT_TOOL_PAGE}), the official "
                f"nightly builds, then {hand_over}")
    return (f"there is no official prebuilt benchmark_model for {target.key} (TFLite's are listed at "
            f"{TFLITE_TOOL_PAGE}, LiteRT's at {LITERT_TOOL_PAGE}): build one for it, then {hand_over}")


def missing_binary_message(target: Target, device: str, why: str = "") -> str:
    """The one line said when no benchmark binary for the device is known."""
    return f"{device}: {why + '; ' if why else ''}no benchmark_model for {target.key} is known: {where_to_get(target)}"
