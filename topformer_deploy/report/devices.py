"""The readiness of a device (``topformer-deploy devices``) as a two-column table that fits any terminal."""
from __future__ import annotations

from rich.table import Table

from .common import fmt


def clusters_text(clusters: list[dict]) -> str:
    """``4x Cortex-A55 @ 1.80 GHz + 2x Cortex-A76 @ 2.25 GHz`` (slowest first)."""
    parts = [f"{len(c['cpus'])}x {c.get('name') or '?'}"
             + (f" @ {c['max_khz'] / 1e6:.2f} GHz" if c.get("max_khz") else "") for c in clusters]
    return " + ".join(parts) or "-"


def python_text(probe: dict) -> str:
    if probe.get("error"):
        return f"none ({probe['error']})"
    return " ".join([f"{probe['python']} {probe['version']}", "numpy" if probe["numpy"] else "no numpy",
                     *probe["runtimes"]]) + ("" if probe["runtimes"] else " (no runtime)")


def device_table(device: dict) -> Table:
    """One device: its state, and when ready everything a bench there depends on."""
    table = Table(title=f"{device['serial']} ({device['state']})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    if device["state"] != "device" or device.get("error"):
        table.add_row("state", device.get("error") or device["detail"], style="yellow")
        return table
    android = device.get("android") or {}
    engine = device.get("engine") or {}
    binary = device.get("benchmark_binary") or {}
    rows = [("model", " ".join(x for x in (device.get("manufacturer"), device.get("model")) if x) or "-"),
            ("SoC / ABI", f"{device.get('soc') or '-'} / {device.get('abi') or '-'}"),
            ("Android", f"{android.get('release')} (SDK {android.get('sdk')})" if android.get("release") else "-"),
            ("cores", clusters_text(device.get("clusters") or [])),
            ("governor", ", ".join(device.get("governors") or []) or "-"),
            ("temperature", f"{fmt(device.get('temp_c'), '.1f')} °C, thermal status "
                            f"{fmt(device.get('android_thermal_status'), 'd')}"),
            ("taskset", device.get("taskset") or "not found (runs are not pinned)"),
            ("python", python_text(device["python"])),
            ("benchmark_model", binary.get("path") and f"{binary['path']} ({binary['source']})"
             or binary.get("error") or "none known for this ABI"),
            ("--engine auto", f"{engine.get('auto') or 'nothing can run'}: {engine.get('reason')}")]
    for name, value in rows:
        table.add_row(name, value, style="yellow" if name == "--engine auto" and not engine.get("auto") else None)
    return table


def sim_line(sim: dict) -> str:
    """The simulated cores in one line, with what is missing for them."""
    state = "ready" if sim["ready"] else "not ready"
    return (f"simulated cores (--device sim:CORE), {state}: {', '.join(sim['cores'])}; qemu-user: {sim['qemu']}; "
            f"cc: {sim['cc']}; aarch64 userland: {sim['userland']}")
