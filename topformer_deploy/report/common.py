"""What every report shares: consoles that never cut a path short, number formats, figures saved atomically."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from ..files import write_atomic

#: Width of the console when the output is not a terminal (a pipe, a file, a CI log): wide enough that no
#: table cell (an artifact path, a configuration key) is cut to "…".
PIPE_WIDTH = 200
CHART_FORMATS = ("png", "svg", "pdf")


def console(stderr: bool = False):
    """A rich Console on stdout (or stderr): the terminal's width, or :data:`PIPE_WIDTH` when not a terminal."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or PIPE_WIDTH)
    return Console(file=stream, width=width, stderr=stderr)


def fmt(value, spec: str = ".2f", none: str = "-") -> str:
    """``value`` formatted with ``spec``, or ``none`` for a missing value."""
    return none if value is None else format(value, spec)


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal (``-`` when missing)."""
    return "-" if value is None else f"{100 * value:.1f}%"


def chart_format(path: str | os.PathLike) -> str:
    """The image format a chart path asks for (by its extension); ValueError for one matplotlib will not write."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in CHART_FORMATS:
        raise ValueError(f"{path}: use a .png, .svg or .pdf file name")
    return suffix


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Render a matplotlib figure in the format its path asks for and write it atomically; closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=chart_format(path))
    finally:
        plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
