"""Benchmark binaries for the tests: the stand-in wrapped in a real static ELF of this machine, and ELF files
of other ABIs (headers only) for the checks that must refuse them before anything is pushed."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent
STAND_IN = FAKES / "benchmark_model"
WRAPPER = FAKES / "exec_wrapper.c"


def build_stand_in(out: Path, tool: str = "tflite") -> Path | None:
    """``out/benchmark_model``: a static ELF running the stand-in as ``tool`` (None without a C compiler and a
    static libc)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    target = out / "benchmark_model"
    defines = [f'-DINTERPRETER="{sys.executable}"', f'-DSCRIPT="{STAND_IN}"', f'-DTOOL="{tool}"']
    proc = subprocess.run([cc, "-static", "-O1", *defines, "-o", str(target), str(WRAPPER)], capture_output=True,
                          text=True, timeout=120)
    return target if proc.returncode == 0 else None


def fake_elf(path: Path, bits: int = 64, machine: int = 183, interpreter: str | None = None) -> Path:
    """An ELF executable's headers (little-endian; e_machine 183 = aarch64, 40 = arm, 62 = x86-64) with a
    PT_INTERP naming ``interpreter`` when given: enough for an ELF check, not for running."""
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    interp = interpreter.encode() + b"\0" if interpreter else b""
    phnum = 1 if interp else 0
    offset = ehsize + phnum * phentsize
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    if bits == 64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, ehsize if phnum else 0, 0, 0, ehsize,
                                     phentsize, phnum, 0, 0, 0)
        phdr = struct.pack("<IIQQQQQQ", 3, 4, offset, 0, 0, len(interp), len(interp), 1) if phnum else b""
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0, ehsize if phnum else 0, 0, 0, ehsize,
                                     phentsize, phnum, 0, 0, 0)
        phdr = struct.pack("<IIIIIIII", 3, offset, 0, 0, len(interp), len(interp), 4, 1) if phnum else b""
    path.write_bytes(header + phdr + interp)
    path.chmod(0o755)
    return path
