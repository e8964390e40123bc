"""``topformer-deploy eval``: mIoU, pixel accuracy and agreement of checkpoints and artifacts, side by side."""
from __future__ import annotations

import contextlib

import click

from ..bench.device_runner import POST_METHODS
from .options import INPUT_SIZE, echo_json


class IgnoreIndex(click.ParamType):
    """An integer label value to skip, or ``none`` to score every pixel."""

    name = "0|255|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int) or value == "auto":
            return value
        if str(value).lower() == "none":
            return None
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a label value: use an integer such as 0 or 255, or none", param, ctx)
        if not 0 <= number <= 255:
            self.fail(f"{value!r}: label values are 0..255", param, ctx)
        return number


@click.command("eval")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Checkpoint (.pth) or exported artifact (.onnx/.tflite with its manifest); repeat for more rows.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="ADE20K-style folder: images/*.jpg and annotations/*.png (class ids).")
@click.option("--num-images", type=click.IntRange(min=1), default=None, help="Evaluate only the first N images.")
@click.option("--ignore-index", type=IgnoreIndex(), default="auto", show_default=True,
              help="Label value to skip (after --reduce-zero-label); 'none' scores all pixels. "
                   "Default: dataset.json's, else 255.")
@click.option("--reduce-zero-label/--no-reduce-zero-label", default=None,
              help="ADE20K convention: label 0 is 'ignore' and ids shift down by one. "
                   "Default: dataset.json's, else on.")
@click.option("--input-size", type=INPUT_SIZE, default=None,
              help="Input size for checkpoints (512 or HxW); default each image's own size. "
                   "Artifacts always use their manifest's size.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Float checkpoint for pixel agreement (default: first checkpoint given, else the manifest's).")
@click.option("--skip-out-of-range-labels", "skip_out_of_range", is_flag=True,
              help="Leave out (and count) label values that are neither a class nor the ignore index, "
                   "instead of stopping with an error.")
@click.option("--sensitivity", is_flag=True,
              help="Quantize one stage at a time (TPM, SASE, SIM, head; int8 ONNX at --input-size, default 512, "
                   "calibrated on synthetic images) and report each one's mIoU drop. Takes one checkpoint.")
@click.option("--post", "post", multiple=True, type=click.Choice(POST_METHODS), default=("sparse",),
              show_default=True, metavar="METHOD",
              help="How logits become class ids at the label size (repeat for one row per method): sparse / "
                   "dense are PyTorch's bilinear + argmax exactly, nearest / bilinear-half / bilinear-quarter "
                   "are cheaper (docs/postprocessing.md). Models with an in-graph class map get one row.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for PyTorch and the runtimes (ms/image is wall time at this setting).")
@click.option("--per-class", is_flag=True, help="Also print per-class IoU.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def evaluate(models, data_dir, num_images, ignore_index, reduce_zero_label, input_size, reference, skip_out_of_range,
             sensitivity, post, threads, per_class, as_json):
    """Segmentation accuracy of each --model on a labelled folder, one row per model (and --post method).

    Pixel agreement is the share of pixels where a model's class equals the float PyTorch model's exact
    class map, both run at the same input size.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..eval.evaluate import evaluate_models
    from ..report.common import console

    kwargs = dict(num_images=num_images, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label,
                  input_size=input_size, skip_out_of_range=skip_out_of_range, threads=threads)
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console(stderr=True), transient=True, disable=as_json)
    task = progress.add_task("evaluating", total=None)

    def show(description):  # started on first use, so early errors stay one clean line
        if not progress.live.is_started:
            progress.start()
        progress.update(task, description=description)

    def on_image(done, total):
        show("evaluating")
        progress.update(task, completed=done, total=total)

    try:
        if sensitivity:
            from ..export.native import quiet_native_output

            quiet = quiet_native_output() if as_json else contextlib.nullcontext()
            with quiet:  # the quantizers print to stdout; keep --json clean
                rows = _sensitivity(_one_checkpoint(models), data_dir, on_image, show, **kwargs)
        else:
            rows = evaluate_models(models, data_dir, reference=reference, on_image=on_image, post=post, **kwargs)
    finally:
        if progress.live.is_started:
            progress.stop()
    for line in _warnings(rows[0]):
        click.echo(f"warning: {line}", err=True)
    if as_json:
        echo_json(rows)
        return
    console().print(_table(rows, sensitivity))
    if per_class:
        console().print(_per_class_table(rows))


def _one_checkpoint(models) -> str:
    from ..errors import TopformerDeployError

    if len(models) != 1 or not models[0].endswith((".pth", ".pt")):
        raise TopformerDeployError("--sensitivity takes exactly one float checkpoint (.pth) as --model")
    return models[0]


def _sensitivity(checkpoint, data_dir, on_image, show, input_size, **kwargs):
    """One int8 ONNX artifact per stage (calibrated on 32 synthetic images) in a temp dir, then eval."""
    import tempfile

    from ..eval.sensitivity import sensitivity_report
    from ..export.calibration import load_calibration_images

    size = input_size or (512, 512)
    show("calibration images")
    calibration = load_calibration_images("synthetic", 32, size)
    with tempfile.TemporaryDirectory(prefix="topformer-sensitivity-") as out_dir:
        return sensitivity_report(checkpoint, data_dir, "onnx", input_size=size, calibration=calibration,
                                  out_dir=out_dir, calibration_source="synthetic", progress=show,
                                  on_image=on_image, **kwargs)


def _warnings(row: dict) -> list[str]:
    """What the figures do not show: no agreement column and why, label pixels left out."""
    lines = [row["reference_note"]] if row.get("reference_note") else []
    if row.get("out_of_range_pixels"):
        total = row["out_of_range_pixels"] + row["pixels"]
        lines.append(f"{row['out_of_range_pixels']} labelled pixels ({row['out_of_range_pixels'] / total:.1%}) had "
                     "values outside the classes and were left out (--skip-out-of-range-labels)")
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _table(rows, sensitivity: bool):
    from rich.table import Table

    first = rows[0]
    title = f"{first['images']} images, reduce_zero_label={first['reduce_zero_label']}, ignore={first['ignore_index']}"
    if sensitivity:
        title = f"int8 one stage at a time (mIoU drop in points vs float); {title}"
    table = Table(title=title)
    columns = (["stage", "mIoU drop"] if sensitivity else ["model", "format", "prec", "post"]) + \
        ["input", "mIoU %", "acc %", "agree %", "ms/img"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("stage", "model", "format", "prec", "post") else "right",
                         overflow="fold", no_wrap=col != "model")
    for r in rows:
        size = "x".join(map(str, r["input_size"])) if isinstance(r["input_size"], list) else r["input_size"]
        cells = [size, _pct(r["miou"]), _pct(r["pixel_accuracy"]), _pct(r["agreement"]), f"{r['ms_per_image']:.1f}"]
        if sensitivity:  # the rows are the float model, then int8 with only that stage quantized
            cells = [r["stage"], f"{r['miou_drop_points']:+.2f}"] + cells
        else:
            cells = [r["name"], r["format"], r["precision"], r["post"]] + cells
        table.add_row(*cells)
    return table


def _per_class_table(rows):
    from rich.table import Table

    names = rows[0].get("classes") or [str(i) for i in range(len(rows[0]["per_class_iou"]))]
    table = Table(title="IoU % per class")
    table.add_column("class")
    for r in rows:
        table.add_column(r["name"] if r.get("post") in (None, "sparse") else f"{r['name']} ({r['post']})",
                         justify="right")
    for c, name in enumerate(names):
        table.add_row(name, *(_pct(r["per_class_iou"][c]) if c < len(r["per_class_iou"]) else "-" for r in rows))
    return table
