"""Per-stage latency breakdown: TPM vs SASE vs SIM vs head (vs post-processing), measured on the device.

For one artifact configuration (format, precision, input size), every stage (:mod:`..model.stages`) is
exported as its own artifact with the same converter and precision, the whole network too; each is fed
the real intermediate tensors of the model on a real photo and timed with the same engine and settings
through the bench harness (:mod:`.artifacts`, :mod:`.timing`); the operator view (:mod:`.operators`)
and the document (:mod:`.document`) follow.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import TopformerDeployError
from ..model import TopFormer
from .artifacts import export_breakdown_artifacts
from .document import summarize_breakdown
from .operators import operator_view
from .options import FORMATS, PRECISIONS, BreakdownOptions, Progress
from .timing import time_artifacts


def check_options(options: BreakdownOptions) -> None:
    """Refuse what cannot be measured before anything is exported."""
    from ..bench.devices import parse_device
    from ..export.prepare import check_export_size

    parse_device(options.device)
    if options.fmt not in FORMATS:
        raise TopformerDeployError(f"unknown format {options.fmt!r}: use tflite or onnx")
    if options.precision not in PRECISIONS:
        raise TopformerDeployError(f"unknown precision {options.precision!r}: use fp32, fp16 or int8")
    if options.engine == "benchmark_model" and options.fmt != "tflite":
        raise TopformerDeployError("--engine benchmark_model runs TFLite artifacts only")
    check_export_size(*options.input_size)


def run_breakdown(model: TopFormer | str, options: BreakdownOptions | None = None, out_dir: str | Path | None = None,
                  *, checkpoint: str | None = None, progress: Progress | None = None,
                  on_partial: Callable[[dict], None] | None = None) -> dict:
    """Export, time and compare the stages of ``model`` (a TopFormer or a variant name); return the document.

    ``out_dir`` keeps the stage artifacts and their input tensors (default ``artifacts/breakdown/<config>``).
    ``on_partial(results)`` gets the bench results measured so far after every round. The engine is chosen
    before anything is exported (:meth:`BreakdownOptions.resolve_engine`).
    """
    options = options or BreakdownOptions()
    say = progress or (lambda msg: None)
    check_options(options)
    options = options.resolve_engine(say)
    h, w = options.input_size
    net, weights = _load_model(model, checkpoint)
    out = Path(out_dir) if out_dir else Path("artifacts") / "breakdown" / (
        f"{net.variant}_{h}x{w}_{options.fmt}_{options.precision}")
    say(f"exporting the stages of {net.variant} {h}x{w} to {options.fmt} {options.precision} in {out}")
    artifacts = export_breakdown_artifacts(net, options, out, weights, say, checkpoint)
    results = time_artifacts(artifacts, options, say, on_partial)
    op_view = operator_view(artifacts, options, say)
    return summarize_breakdown(net, results, artifacts, options, weights, op_view)


def _load_model(model: TopFormer | str, checkpoint: str | None) -> tuple[TopFormer, str]:
    if isinstance(model, TopFormer):
        return model.eval(), "checkpoint" if checkpoint else "given"
    if checkpoint:
        from ..model.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, variant=model), "checkpoint"
    from ..model.weights import random_live_model

    return random_live_model(model), "random"
