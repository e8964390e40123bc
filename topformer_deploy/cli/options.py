"""Option types and helpers shared by several commands."""
from __future__ import annotations

import json
import re

import click



class InputSize(click.ParamType):
    """``512`` (square) or ``HxW`` such as ``512x384``; returns (height, width)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip().lower()
        m = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
        if not m:
            self.fail(f"{value!r} is not a size: use 512 or HxW such as 512x384", param, ctx)
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
        if h <= 0 or w <= 0:
            self.fail(f"{value!r}: sizes must be positive", param, ctx)
        return h, w


INPUT_SIZE = InputSize()
#: Variant names, spelled out so that light commands need not import torch (a test checks them).
VARIANT_NAMES = ("tiny", "small", "base")
VARIANT = click.Choice(VARIANT_NAMES, case_sensitive=False)

ENGINE_HELP = ("auto: the python runner where the device has Python with numpy and a runtime, else LiteRT's "
               "benchmark_model (phones); python: the single-file runner; benchmark_model: the native binary, which "
               "prints only a summary, so each invocation gives one sample (its median): use --repeat N.")
BINARY_HELP = ("LiteRT's or TFLite's benchmark_model built for the device (ELF-checked; remembered per ABI, so give it "
               "once). Else $TOPFORMER_DEPLOY_BENCHMARK_MODEL, the remembered one, then benchmark_model on PATH.")


def echo_json(data) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def check_outputs(*outputs: tuple[str, str | None]) -> None:
    """Refuse, before any work, an output path that cannot be written: ``(option, path)`` pairs (None and ``-``,
    stdout, are skipped); ``--out`` and options ending in ``-dir`` name folders, ``--chart`` must name a format it
    is drawn in."""
    from ..errors import TopformerDeployError
    from ..files import check_writable
    from ..report.common import chart_format

    for what, path in outputs:
        if not path or path == "-":
            continue
        if what == "--chart":
            try:
                chart_format(path)
            except ValueError as exc:
                raise TopformerDeployError(f"{what} {exc}") from None
        check_writable(path, what, directory=what.endswith("-dir") or what == "--out")


def write_outputs(*writes) -> list[str]:
    """Write each ``(option, path, write)`` with ``write()``, after the results were shown: a file that cannot be
    written is an ``error:`` line on stderr (returned too), never a traceback that hides them or changes a
    verdict's exit code (the caller decides the code)."""
    from ..files import output_failure

    failed = []
    for what, path, write in writes:
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - an auxiliary output: disk full, a renderer's error, ...
            failed.append(output_failure(what, path, exc))
            click.echo(f"error: {failed[-1]}", err=True)
    return failed


class Slowdown(click.ParamType):
    """``5%`` or ``0.05`` -> 0.05."""

    name = "FRACTION"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        from ..gate.verdict import parse_slowdown

        try:
            return parse_slowdown(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SLOWDOWN = Slowdown()


def default_runs(device: str) -> int:
    """Timed runs when the user gives none: 50, or 3 on a simulated core (its counts repeat exactly)."""
    return 3 if device.strip().startswith("sim") else 50
