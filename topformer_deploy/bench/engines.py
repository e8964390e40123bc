"""Which engine times a model on a device: ``--engine auto`` looks at the device and says why.

``python`` (the single-file runner) needs Python with numpy and a runtime for the artifact's format on the
device; ``benchmark_model`` (LiteRT's native binary, :mod:`.binaries`) needs nothing there but runs
``.tflite`` only. ``auto`` picks the python runner where the device can run it, else ``benchmark_model``
when a binary for the device's ABI is known (an explicit ``--benchmark-binary`` asks for it outright);
a simulated core always runs the python runner (its marks give the counts).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import TopformerDeployError
from .binaries import BenchmarkBinary, device_target, find_binary, missing_binary_message
from .transports import DeviceError, Transport, last_line

ENGINES = ("auto", "python", "benchmark_model")
#: The runtimes the device runner drives, per artifact format (import names)
RUNTIME_MODULES = {"tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow"), "onnx": ("onnxruntime",)}
# find_spec may raise (a broken package, an import hook): such a module counts as absent
_PROBE = ("import importlib.util as u, json, sys\n"
          "def has(m):\n"
          "    try:\n"
          "        return u.find_spec(m) is not None\n"
          "    except Exception:\n"
          "        return False\n"
          "print(json.dumps({'version': sys.version.split()[0], 'modules': {m: has(m) for m in %r}}))"
          % ((("numpy",) + RUNTIME_MODULES["tflite"] + RUNTIME_MODULES["onnx"]),))


@dataclass(frozen=True)
class EngineChoice:
    """The engine a bench uses, what was asked for, and why (said in the output and the result)."""

    engine: str
    requested: str
    reason: str
    binary: BenchmarkBinary | None = None


def probe_python(transport: Transport, python: str, timeout: float = 60) -> dict:
    """``{"python", "version", "numpy", "runtimes": [...], "error"}`` for ``python`` on the device (nothing is
    imported: find_spec only)."""
    entry = {"python": python, "version": None, "numpy": False, "runtimes": [], "error": None}
    result = transport.run([python, "-c", _PROBE], timeout=timeout, check=False)
    doc = next((json.loads(ln) for ln in reversed(result.stdout.splitlines()) if ln.startswith("{")), None)
    if result.returncode != 0 or not doc:
        entry["error"] = last_line(result.stderr) or last_line(result.stdout) or f"exit {result.returncode}"
        return entry
    modules = doc.get("modules") or {}
    entry.update(version=doc.get("version"), numpy=bool(modules.get("numpy")),
                 runtimes=[m for m in (*RUNTIME_MODULES["tflite"], *RUNTIME_MODULES["onnx"]) if modules.get(m)])
    return entry


def python_problem(probe: dict, formats: list[str]) -> str | None:
    """Why the python runner cannot run these formats on the device (None when it can)."""
    if probe["error"]:
        return f"no usable {probe['python']} ({probe['error']})"
    if not probe["numpy"]:
        return f"{probe['python']} {probe['version']} has no numpy"
    for fmt in formats:
        if not set(RUNTIME_MODULES[fmt]) & set(probe["runtimes"]):
            return f"{probe['python']} {probe['version']} has no {fmt} runtime ({' / '.join(RUNTIME_MODULES[fmt])})"
    return None


def choose_engine(transport: Transport, snapshot: dict, engine: str, formats: list[str], python: str | None = None,
                  benchmark_binary: str | None = None) -> EngineChoice:
    """The engine for ``formats`` on ``transport`` (``snapshot``: its conditions), resolving ``auto``.

    Raises one clear error when nothing can run: DeviceError when the device lacks what the python runner
    needs and benchmark_model cannot help (ONNX), TopformerDeployError when no benchmark binary is known.
    """
    if engine not in ENGINES:
        raise TopformerDeployError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    if engine == "python":
        return EngineChoice("python", engine, "asked for (--engine python)")
    if engine == "auto" and transport.kind == "sim":
        return EngineChoice("python", engine, "a simulated core runs the python runner (its marks give the counts)")
    target = device_target(snapshot)
    if engine == "benchmark_model" or benchmark_binary:
        if any(f != "tflite" for f in formats):
            raise TopformerDeployError("--engine benchmark_model runs .tflite artifacts only")
        binary = find_binary(target, transport.name, benchmark_binary)
        if binary is None:
            raise TopformerDeployError(missing_binary_message(target, transport.name))
        why = "asked for (--engine benchmark_model)" if engine == "benchmark_model" else "--benchmark-binary given"
        return EngineChoice("benchmark_model", engine, f"{why}; {describe(binary)}", binary)
    probe = probe_python(transport, python or transport.default_python)
    problem = python_problem(probe, formats)
    if problem is None:
        runtime = next(m for m in probe["runtimes"] for f in formats if m in RUNTIME_MODULES[f])
        return EngineChoice("python", engine, f"{probe['python']} {probe['version']} with numpy and {runtime} on "
                                              f"{transport.name}")
    if any(f != "tflite" for f in formats):
        raise DeviceError(f"{transport.name} cannot run the python runner: {problem} (ONNX artifacts need Python "
                          "with numpy and onnxruntime on the device; benchmark_model runs .tflite only)")
    binary = find_binary(target, transport.name)
    if binary is None:
        raise TopformerDeployError(missing_binary_message(target, transport.name, problem))
    return EngineChoice("benchmark_model", engine, f"{problem}; {describe(binary)}", binary)


def describe(binary: BenchmarkBinary) -> str:
    where = {"option": "--benchmark-binary", "env": "$TOPFORMER_DEPLOY_BENCHMARK_MODEL",
             "cache": "remembered", "PATH": "on PATH"}[binary.source]
    return f"benchmark_model for {binary.target.abi} ({where}: {binary.path})"
