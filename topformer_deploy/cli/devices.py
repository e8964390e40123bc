"""``topformer-deploy devices``: the adb devices and the simulated cores, and whether each is ready to bench."""
from __future__ import annotations

import click

from .options import echo_json


@click.command()
@click.option("--adb", "adb_path", metavar="PATH", help="adb executable (default: $ADB or adb on PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def devices(adb_path, as_json):
    """Readiness of every adb device and of the simulated cores.

    Per adb device: state (device / offline / unauthorized / no permissions), model, SoC, ABI, Android
    version, core clusters, governor, temperature, Python / numpy / runtimes, the engine --engine auto
    would pick (and why) and the benchmark_model known for its ABI. Ssh targets are not listed (any host
    in your ~/.ssh/config works with --device ssh:USER@HOST).
    """
    from ..bench.readiness import adb_readiness, sim_readiness
    from ..report.common import console
    from ..report.devices import device_table, sim_line

    report = {**adb_readiness(adb_path), "simulated": sim_readiness()}
    if as_json:
        echo_json(report)
        return
    out, err = console(), console(stderr=True)
    if report["adb"] != "ok":
        err.print(report["adb"], markup=False, highlight=False)
    elif not report["devices"]:
        err.print("no adb device attached")
    for device in report["devices"]:
        out.print(device_table(device))
    out.print(sim_line(report["simulated"]), markup=False, highlight=False)
    if report["devices"]:
        err.print("bench one with: topformer-deploy bench --device adb:SERIAL", style="dim")
