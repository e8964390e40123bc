"""``topformer-deploy devices``: the adb devices, their state, model and SoC."""
from __future__ import annotations

import click

from .options import echo_json


@click.command()
@click.option("--adb", "adb_path", metavar="PATH", help="adb executable (default: $ADB or adb on PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices(adb_path, as_json):
    """List adb devices: state (device / offline / unauthorized / no permissions), model and SoC.

    Ssh targets are not listed (any host in your ~/.ssh/config works with --device ssh:USER@HOST).
    """
    from rich.table import Table

    from ..bench.transports import list_adb_devices
    from ..report.common import console

    found = list_adb_devices(adb_path)
    if as_json:
        echo_json({"devices": found})
        return
    if not found:
        console(stderr=True).print("no adb device attached")
        return
    table = Table(title="adb devices")
    for col in ("serial", "state", "model", "SoC", "platform"):
        table.add_column(col)
    for d in found:
        ready = d["state"] == "device"
        table.add_row(d["serial"], d["detail"] if not ready else "device", d.get("model") or "-",
                      d.get("soc") or "-", d.get("platform") or "-", style=None if ready else "yellow")
    console().print(table)
    console(stderr=True).print("bench one with --device adb:SERIAL", style="dim")
