"""``topformer-deploy breakdown``: where the time goes - TPM vs SASE vs SIM vs head vs post-processing."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from ..bench.device_runner import POST_METHODS
from .options import (BINARY_HELP, ENGINE_HELP, INPUT_SIZE, VARIANT, check_outputs, default_runs, echo_json,
                      write_outputs)


@click.command()
@click.option("--variant", type=VARIANT, default=None,
              help="tiny, small or base (inferred from --checkpoint) [default: tiny].")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official-layout checkpoint (default: random weights with every branch live; latency does "
                   "not depend on the weights' values).")
@click.option("--to", "fmt", type=click.Choice(["tflite", "onnx"]), default="tflite", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option("--calib", default=None, metavar="DIR|synthetic",
              help="int8: calibration images (a folder of jpg/png, or 'synthetic'); calibrated once for all stages.")
@click.option("--calib-count", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="local", show_default=True, metavar="SPEC",
              help="local | adb[:SERIAL] | ssh:USER@HOST[:PORT] | sim:CORE (instruction counts per stage).")
@click.option("--engine", type=click.Choice(["auto", "python", "benchmark_model"]), default="auto", show_default=True,
              help=ENGINE_HELP)
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), help=BINARY_HELP)
@click.option("--adb", "adb_path", metavar="PATH", help="adb executable (default: $ADB or adb on PATH).")
@click.option("--ssh-config", type=click.Path(dir_okay=False), default=None,
              help="ssh_config file for ssh devices (default: yours; env TOPFORMER_DEPLOY_SSH_CONFIG).")
@click.option("--python", "python", default=None, help="Python interpreter on the device (python engine).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per artifact, split into --rounds rounds with the stages interleaved "
                   "[default: 50; 3 on a simulated core].")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds of runs; each round times every artifact back to back (drift cancels) "
                   "[default: 5; 1 on a simulated core, whose counts do not drift].")
@click.option("--cores", default="big", show_default=True, help="big | little | all | a list such as 4,5,6,7.")
@click.option("--allow-hot", is_flag=True, help="Run anyway on a hot/throttled device; results are flagged.")
@click.option("--input-size", type=INPUT_SIZE, default="512", show_default=True,
              help="512 or HxW (32 to 8192 per side; any size exports exactly).")
@click.option("--no-profile", is_flag=True, help="Skip the operator view (profiler run).")
@click.option("--post", "post", multiple=True, type=click.Choice(POST_METHODS), default=("sparse",),
              show_default=True, metavar="METHOD",
              help="python engine: numpy post-processing methods timed on the device after the head, beside "
                   "the in-graph post artifact (repeat for several; see docs/postprocessing.md).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where the stage artifacts and their inputs go (default artifacts/breakdown/<config>).")
@click.option("--json", "json_out", metavar="OUT", default=None,
              help="Write the breakdown document to OUT ('-' prints it on stdout instead of the table).")
@click.option("--chart", "chart_out", type=click.Path(dir_okay=False), default=None,
              help="Write the PNG chart (parameter / MAC / latency share per stage) here.")
def breakdown(variant, checkpoint, fmt, precision, calib, calib_count, device, engine, benchmark_binary, adb_path,
              ssh_config, python, threads, warmup, runs, rounds, cores, allow_hot, input_size, no_profile, post,
              out_dir, json_out, chart_out):
    """Time each stage of TopFormer on the device, beside the whole model.

    Exports TPM, SASE (pooling + transformer blocks), SIM, head and the post-processing (x8 bilinear
    upsample + argmax) as separate artifacts with the same converter and precision, feeds each the real
    intermediate tensors of the model on a photo, times all of them and the whole model with the same
    engine and settings, and reports params, MACs and latency per stage with the reconciliation
    "sum of stages / whole model" (post is reported beside the network, not in the sum).

    \b
    Examples:
      topformer-deploy breakdown --device adb:SERIAL
      topformer-deploy breakdown --variant tiny --to tflite --chart tiny.png
      topformer-deploy breakdown --variant tiny --to onnx --precision int8 --calib synthetic --json tiny.json
      topformer-deploy breakdown --variant small --device ssh:pi@raspberrypi --runs 30
    """
    from ..breakdown import BreakdownOptions, run_breakdown
    from ..breakdown.run import check_options
    from ..errors import TopformerDeployError
    from ..files import write_json
    from ..report.common import console

    if precision == "int8" and not calib:
        raise TopformerDeployError("--precision int8 needs --calib DIR or --calib synthetic")
    if calib and precision != "int8":
        raise TopformerDeployError("--calib is for --precision int8")
    check_outputs(("--json", json_out), ("--chart", chart_out), ("--out", out_dir))
    err = console(stderr=True)
    to_stdout = json_out == "-"
    runs = runs or default_runs(device)
    rounds = rounds or (1 if device.startswith("sim") else 5)
    options = BreakdownOptions(fmt=fmt, precision=precision, input_size=input_size, device=device, engine=engine,
                               threads=threads, warmup=warmup, runs=runs, rounds=rounds, cores=cores,
                               benchmark_binary=benchmark_binary, adb_path=adb_path, ssh_config=ssh_config,
                               python=python, allow_hot=allow_hot, profile=not no_profile, post=tuple(post))
    check_options(options)  # the device spec, format, size: before calibration images load or stages export
    partial = Path(json_out).with_suffix(".partial.json") if json_out and not to_stdout else None
    quiet = _stdout_to_stderr() if to_stdout else contextlib.nullcontext()
    with quiet, _status(err) as say:  # converters print progress on stdout; keep it for the JSON alone
        if precision == "int8":
            from ..export.calibration import load_calibration_images

            say(f"loading {calib_count} calibration images from {calib}")
            options.calibration = load_calibration_images(
                calib, calib_count, input_size, warn=lambda message: err.print(f"warning: {message}", markup=False))
            options.calibration_source = str(calib)
        def save_partial(results):  # best effort: the stages measured so far survive an interruption
            with contextlib.suppress(OSError):
                write_json(partial, {"partial": True, "results": results})

        doc = run_breakdown(variant or ("auto" if checkpoint else "tiny"), options, out_dir, checkpoint=checkpoint, progress=say,
                            on_partial=save_partial if partial else None)
    if partial:
        partial.unlink(missing_ok=True)
    show_breakdown(doc, json_out, chart_out)


def show_breakdown(doc: dict, json_out: str | None = None, chart_out: str | None = None) -> None:
    """Print the tables (or the JSON with ``--json -``), then write the JSON / chart asked for: one that cannot be
    written is an error line after the results, and exit 2."""
    from ..files import write_json
    from ..report.breakdown import (breakdown_table, operator_note, operator_table, post_table,
                                    slowest_operators_table, write_chart)
    from ..report.common import console

    err = console(stderr=True)
    if json_out == "-":
        echo_json(doc)
    else:
        out = console()
        out.print(breakdown_table(doc))
        posts = post_table(doc)
        if posts is not None:
            out.print(posts)
        ops = operator_table(doc)
        out.print(ops if ops is not None else operator_note(doc))
        slowest = slowest_operators_table(doc)
        if slowest is not None:
            out.print(slowest)
    if any(r["conditions"].get("hot") for r in doc["results"].values()):
        err.print("[yellow]warning: the device was hot or throttled during the runs; results are flagged[/]")
    writes = [("--json", json_out, "breakdown", lambda: write_json(json_out, doc)),
              ("--chart", chart_out, "chart", lambda: write_chart(doc, chart_out))]
    failed = False
    for what, path, name, write in writes:
        if path and path != "-":
            if write_outputs((what, path, write)):
                failed = True
            else:
                err.print(f"{name} written to {path}", markup=False, highlight=False)
    if failed:
        sys.exit(2)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout (Python and native code alike) to stderr for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _status(console):
    """A spinner on stderr whose text follows the progress messages."""
    with console.status("starting") as status:
        yield status.update
