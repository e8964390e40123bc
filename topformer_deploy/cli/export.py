"""``topformer-deploy export``: TopFormer -> verified ONNX / TFLite artifacts with manifests."""
from __future__ import annotations

import click

from .options import INPUT_SIZE, VARIANT, echo_json

_STEPS = {"load": "Loading the model", "calibrate": "Calibrating", "fold": "Folding BatchNorm",
          "convert": "Converting", "quantize": "Quantizing",
          "verify": "Verifying against PyTorch", "write": "Writing artifact and manifest"}


@click.command()
@click.option("--variant", type=VARIANT, default=None,
              help="tiny, small or base: the backbone. With --checkpoint the architecture (SIM and head widths, "
                   "head groups, classes) is read from the checkpoint; --variant then only insists on the backbone.")
@click.option("--to", "target", type=click.Choice(["onnx", "tflite", "all"]), required=True,
              help="Artifact format; 'all' exports both.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Official-layout checkpoint. Without it the weights are random (fine for latency work).")
@click.option("--input-size", type=INPUT_SIZE, default="512", show_default=True,
              help="512 or HxW, 32 to 8192 per side, exact at any size: multiples of 64 pool with plain "
                   "average pools, other sizes with constant pooling matrices (recorded in the manifest).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16: float16 weights (TFLite; ONNX also computes in float16), float32 I/O; "
                   "int8 is full-integer with calibration.")
@click.option("--calib", default="synthetic", show_default=True, metavar="DIR|synthetic",
              help="int8: folder of calibration images (jpg/png, any size) or 'synthetic'.")
@click.option("--calib-count", type=click.IntRange(min=1), default=32, show_default=True,
              help="int8: number of calibration images.")
@click.option("--keep-float", type=click.Choice(["tpm", "sase", "sim", "head"]), multiple=True,
              help="int8: keep this stage in float (repeatable): mixed precision.")
@click.option("--int8-io", is_flag=True, help="int8: int8 tensors at the graph boundary (default float I/O).")
@click.option("--output", type=click.Choice(["logits", "argmax", "argmax-full"]), default="logits",
              show_default=True,
              help="logits at 1/8 (what the paper timed), argmax class map at 1/8, or argmax-full at input size.")
@click.option("--opset", type=click.IntRange(min=11), default=None, help="ONNX opset (default 20).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Output directory.")
@click.option("--no-verify", is_flag=True, help="Skip the numerical check against PyTorch (not recommended).")
@click.option("--json", "as_json", is_flag=True, help="No progress display; print the manifest(s) as JSON.")
def export(variant, target, checkpoint, input_size, precision, calib, calib_count, keep_float, int8_io, output,
           opset, out_dir, no_verify, as_json):
    """Export TopFormer to ONNX and/or TFLite, verified against PyTorch, with a manifest beside each artifact.

    Writes <out>/topformer_<variant>_<H>x<W>_<precision>_<output>.<onnx|tflite> and <artifact>.json.
    An artifact is written only after it passed verification (fp32: relative L2 error <= 1e-4 and argmax
    agreement >= 99.9%; fp16: agreement >= 99%; int8: agreement >= 90% with a checkpoint). With --json,
    prints the manifest (a list with --to all).

    Exit codes: 0 ok, 2 bad input or conversion error, 4 verification failed (nothing written).
    """
    from ..errors import TopformerDeployError
    from ..export import check_export_size, export_model, load_calibration_images
    from ..export.calibration import calibration_files
    from ..export.job import output_directory
    from ..model import load_checkpoint, random_live_model

    formats = ["onnx", "tflite"] if target == "all" else [target]
    if precision != "int8" and (keep_float or int8_io):
        raise TopformerDeployError("--keep-float and --int8-io apply to --precision int8 only")
    if checkpoint is None and variant is None:
        raise TopformerDeployError("give --variant (tiny, small, base) or --checkpoint")
    check_export_size(*input_size)
    if precision == "int8":
        calibration_files(calib)  # a missing or empty folder is said before the model loads
    output_directory(out_dir)

    with _progress(as_json) as step:
        step("load")
        if checkpoint:
            model = load_checkpoint(checkpoint, variant or "auto")
            weights = "checkpoint"
        else:
            click.echo(f"note: no --checkpoint given: exporting TopFormer-{variant} with random weights "
                       "(every branch live; fine for latency, meaningless predictions)", err=True)
            model = random_live_model(variant)
            weights = "random"
        calibration = None
        if precision == "int8":
            step("calibrate")
            calibration = load_calibration_images(
                calib, calib_count, input_size, warn=lambda message: click.echo(f"warning: {message}", err=True))
        int8 = dict(calibration=calibration, calibration_source=calib, keep_float=keep_float,
                    int8_io=int8_io) if precision == "int8" else dict(opset=opset)
        results = [export_model(model, fmt, out_dir, input_size=input_size, precision=precision, output=output,
                                verify=not no_verify, checkpoint=checkpoint, weights=weights,
                                progress=lambda name, fmt=fmt: step(name, fmt), **int8)
                   for fmt in formats]
    documents = [{"path": str(r.path), "manifest_path": str(r.manifest_path), **r.manifest} for r in results]
    if as_json:
        echo_json(documents if target == "all" else documents[0])
        return
    _print_summary(results)


class _progress:
    """Context manager yielding ``step(name, fmt=None)``: a rich spinner on stderr, silent when ``quiet``."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._status = None

    def __enter__(self):
        if not self.quiet:
            import os

            from rich.console import Console

            # A private copy of stderr: the export silences fd 2 while converters print their banners.
            self._stream = os.fdopen(os.dup(2), "w")
            self._status = Console(file=self._stream, force_terminal=self._stream.isatty()).status("Starting")
            self._status.start()
        return self.step

    def step(self, name: str, fmt: str | None = None) -> None:
        if self._status is not None:
            label = _STEPS.get(name, name) + (f" ({fmt})" if fmt and name in ("convert", "quantize", "verify") else "")
            self._status.update(f"{label}...")

    def __exit__(self, *exc):
        if self._status is not None:
            self._status.stop()
            self._stream.close()
        return False


def _print_summary(results) -> None:
    from ..report.common import console
    from ..report.export import export_table, export_warnings

    console().print(export_table(results))
    for line in export_warnings(results):
        click.echo(line, err=True)
