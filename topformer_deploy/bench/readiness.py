"""``topformer-deploy devices``: every adb device and the simulated cores, and whether each is ready to bench.

Per ready adb device: model, SoC, ABI, Android version, core clusters (cpufreq maxima), governors,
temperature and thermal status, taskset, Python/numpy/runtimes, the engine ``auto`` would pick (and why,
or why nothing can run) and the benchmark binary known for its ABI. One conditions probe and one Python
probe per device; nothing is pushed.
"""
from __future__ import annotations

import shutil

from ..errors import TopformerDeployError
from .binaries import device_target, find_binary
from .conditions import collect_conditions, core_clusters
from .engines import choose_engine, probe_python
from .transports import AdbTransport, DeviceError, Transport, list_adb_devices


def device_readiness(transport: Transport, python: str | None = None) -> dict:
    """What a bench on ``transport`` would find there (see the module docstring)."""
    snapshot = collect_conditions(transport)
    python = python or transport.default_python
    probe = probe_python(transport, python)
    target = device_target(snapshot)
    try:
        binary = find_binary(target, transport.name)
        binary_entry = {"path": str(binary.path), "source": binary.source} if binary else None
    except TopformerDeployError as exc:
        binary_entry = {"path": None, "error": str(exc)}
    try:
        choice = choose_engine(transport, snapshot, "auto", ["tflite"], python)
        engine = {"auto": choice.engine, "reason": choice.reason}
    except TopformerDeployError as exc:
        engine = {"auto": None, "reason": str(exc).removeprefix(f"{transport.name}: ")}
    return {"model": snapshot.get("model"), "manufacturer": snapshot.get("manufacturer"), "soc": snapshot.get("soc"),
            "abi": snapshot.get("abi"), "arch": snapshot.get("arch"), "android": snapshot.get("android"),
            "clusters": core_clusters(snapshot.get("cpus") or []),
            "governors": sorted({c["governor"] for c in snapshot.get("cpus") or [] if c.get("governor")}),
            "temp_c": snapshot.get("temp_c"), "android_thermal_status": snapshot.get("android_thermal_status"),
            "taskset": snapshot.get("taskset"), "python": probe, "engine": engine, "benchmark_binary": binary_entry,
            "notes": snapshot.get("notes") or []}


def adb_readiness(adb_path: str | None = None) -> dict:
    """``{"adb": path or why not, "devices": [...]}``: the adb devices, the ready ones probed."""
    try:
        found = list_adb_devices(adb_path)
    except DeviceError as exc:
        return {"adb": str(exc), "devices": []}
    for device in found:
        if device["state"] != "device" or device.get("error"):
            continue
        try:
            device.update(device_readiness(AdbTransport(device["serial"], adb_path)))
        except DeviceError as exc:
            device["error"] = str(exc)
    return {"adb": "ok", "devices": found}


def sim_readiness() -> dict:
    """The simulated cores and what they need here: qemu-user with plugins, a C compiler, the aarch64 userland."""
    from .sim import qemu, userland
    from .sim.cores import CORES

    try:
        qemu_path = qemu.find_qemu()
    except DeviceError as exc:
        qemu_path, qemu_problem = None, str(exc)
    else:
        qemu_problem = None
    cc = shutil.which("cc") or shutil.which("gcc")
    record = userland.built()
    problem = None if record else userland.host_problem()
    state = ("built" if record else f"not built and cannot be built here: {problem}" if problem
             else "not built (built on first use: several minutes, needs root and debootstrap)")
    return {"cores": list(CORES), "qemu": qemu_path or qemu_problem, "cc": cc or "no C compiler (apt-get install gcc)",
            "userland": state, "ready": bool(qemu_path and cc and (record or not problem))}
