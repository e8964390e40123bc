"""``topformer-deploy bench``: latency of an artifact on this machine, an ssh host or an adb device."""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import click

from ..bench.device_runner import POST_METHODS
from .options import (BINARY_HELP, ENGINE_HELP, INPUT_SIZE, SLOWDOWN, check_outputs, default_runs, echo_json,
                      write_outputs)

CORES_HELP = "big | little | all | a list such as 4,5,6,7 (big = the cores with the highest cpufreq maximum)."


@click.command()
@click.option("--model", "model", metavar="ARTIFACT|VARIANT",
              help="A .tflite/.onnx artifact (its manifest beside it), or tiny/small/base to export on the fly "
                   "(cached) [default: tiny at --input-size].")
@click.option("--compare", nargs=2, metavar="A B", default=None,
              help="Interleaved A/B: alternate two artifacts round by round on the same device.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
              help="With --compare: rounds of --runs runs each per artifact.")
@click.option("--device", default="local", show_default=True, metavar="SPEC",
              help="local | adb[:SERIAL] | ssh:USER@HOST[:PORT] (uses your ~/.ssh/config and keys) | sim:CORE (a "
                   "simulated Arm core counting instructions: cortex-a53, cortex-a72, cortex-a76, neoverse-n1, ...).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs [default: 50; 3 on a simulated core, whose counts repeat exactly].")
@click.option("--cores", default="big", show_default=True, help=CORES_HELP)
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the runner this many times (samples are pooled), with --cooldown between.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Wait between repeated runs / compare rounds.")
@click.option("--max-temp", type=float, default=80.0, show_default=True, metavar="CELSIUS",
              help="Refuse to start above this temperature (or when throttled).")
@click.option("--allow-hot", is_flag=True, help="Run anyway on a hot/throttled device; the result is flagged.")
@click.option("--engine", type=click.Choice(["auto", "python", "benchmark_model"]), default="auto", show_default=True,
              help=ENGINE_HELP)
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), help=BINARY_HELP)
@click.option("--op-profiling", is_flag=True,
              help="benchmark_model engine: per-operator profile (runner.benchmark_model.ops in the JSON).")
@click.option("--adb", "adb_path", metavar="PATH", help="adb executable (default: $ADB or adb on PATH).")
@click.option("--ssh-config", type=click.Path(dir_okay=False), default=None,
              help="ssh_config file for ssh devices (default: yours; env TOPFORMER_DEPLOY_SSH_CONFIG).")
@click.option("--python", "python", default=None,
              help="Python interpreter on the device for the python engine (default: python3; for local, "
                   "the interpreter running this tool).")
@click.option("--timeout", type=click.FloatRange(min=1), default=900, show_default=True, metavar="SECONDS",
              help="Limit for one runner invocation on the device.")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]), default="tflite", show_default=True,
              help="With a variant name: the format to export.")
@click.option("--input-size", type=INPUT_SIZE, default="512", show_default=True,
              help="With a variant name: 512 or HxW.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None,
              help="Feed this .npy (.npz by input name) instead of random inputs.")
@click.option("--save-output", type=click.Path(dir_okay=False), default=None,
              help="Pull the model's output (of the first repeat) from the device into this .npy.")
@click.option("--profile-dir", type=click.Path(file_okay=False), default=None,
              help="python engine: pull the per-operator profile into this directory (onnxruntime's "
                   "profiler; for TFLite every operator timed as a one-op model).")
@click.option("--json", "json_out", metavar="OUT", default=None,
              help="Write the result document to OUT ('-' prints it on stdout instead of the table).")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Gate the result against this baseline (exit 1 regression, 2 inconclusive).")
@click.option("--save-baseline", type=click.Path(dir_okay=False), default=None,
              help="Merge the result into this baseline file (per configuration).")
@click.option("--max-slowdown", default="5%", show_default=True, help="With --baseline / --compare.")
@click.option("--tolerance", type=SLOWDOWN, default="0.1%", show_default=True,
              help="With --baseline / --compare on a simulated core: the instruction-count change that counts.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="With --baseline / --compare: significance level.")
@click.option("--post", "post", multiple=True, type=click.Choice(POST_METHODS), metavar="METHOD",
              help="python engine: after every run also compute the class map from the logits on the device "
                   "(numpy), timed apart; repeat for several. sparse and dense are exact, nearest, "
                   "bilinear-half and bilinear-quarter are cheaper (docs/postprocessing.md). The sparse "
                   "method's cost depends on the image: without --input a real photo is fed.")
@click.option("--breakdown", is_flag=True,
              help="With a variant name: time each stage (TPM, SASE, SIM, head, post) beside the whole model "
                   "(as `topformer-deploy breakdown`, fp32).")
def bench(model, compare, rounds, device, threads, warmup, runs, cores, repeat, cooldown, max_temp, allow_hot,
          engine, benchmark_binary, op_profiling, adb_path, ssh_config, python, timeout, fmt, input_size, input_file,
          save_output, profile_dir, json_out, baseline, save_baseline, max_slowdown, tolerance, alpha, post, breakdown):
    """Measure an artifact's latency on the device, under recorded conditions.

    The device is locked for the duration (a second bench on it waits), the conditions (CPU
    frequencies, governor, temperature, throttling, load) are recorded before and after, the runs
    are pinned to the chosen cores, and nothing is left on the device afterwards.

    Without --model, TopFormer-Tiny at --input-size is exported once (random weights) and reused.

    \b
    Examples:
      topformer-deploy bench --device adb:SERIAL --benchmark-binary ./benchmark_model   (once; then without it)
      topformer-deploy bench --model artifacts/topformer_tiny_512x512_fp32_logits.tflite
      topformer-deploy bench --model tiny --device ssh:pi@raspberrypi --json tiny.json
      topformer-deploy bench --model m.tflite --post sparse --post nearest
      topformer-deploy bench --compare old.tflite new.tflite --device ssh:pi@raspberrypi --runs 10 --rounds 10
    """
    from ..bench.cache import resolve_model
    from ..bench.harness import BenchOptions, run_bench, run_compare
    from ..bench.devices import open_transport
    from ..errors import TopformerDeployError
    from ..files import write_json
    from ..gate.baseline import baseline_target, load_result_or_baseline
    from ..report.bench import result_table
    from ..report.common import console

    if model and compare:
        raise TopformerDeployError("give either --model ARTIFACT|VARIANT or --compare A B, not both")
    if compare and (baseline or save_baseline):
        raise TopformerDeployError("--baseline / --save-baseline work with --model, not --compare")
    threshold = _slowdown(max_slowdown) if (baseline or compare) else None
    runs = runs or default_runs(device)
    to_stdout = json_out == "-"
    err = console(stderr=True)
    # every input and output is checked before anything is measured: the results are never lost to a bad path
    check_outputs(("--json", json_out), ("--save-output", save_output), ("--save-baseline", save_baseline),
                  ("--profile-dir", profile_dir))
    if breakdown:
        _breakdown(model or "tiny", compare or baseline or save_baseline, fmt, input_size, device, engine, threads,
                   warmup, runs, cores, allow_hot, benchmark_binary, adb_path, ssh_config, python, json_out, err)
        return
    base = load_result_or_baseline(baseline) if baseline else None
    if save_baseline:
        baseline_target(save_baseline)
    options = BenchOptions(threads=threads, warmup=warmup, runs=runs, cores=cores, cooldown=cooldown,
                           repeat=repeat, max_temp=max_temp, allow_hot=allow_hot, engine=engine,
                           benchmark_binary=benchmark_binary, op_profiling=op_profiling, python=python,
                           timeout=timeout,
                           input_file=input_file, save_output=save_output, profile_dir=profile_dir,
                           post=tuple(post))

    def save_partial(doc):  # best effort: what was measured so far survives an interruption
        with contextlib.suppress(OSError):
            write_json(json_out, doc)

    with _status(err) as say, tempfile.TemporaryDirectory(prefix="topformer-bench-") as scratch:
        paths = [resolve_model(m, fmt, input_size, say) for m in (compare or [model])]
        if post and not input_file:
            from ..bench.inputs import write_photo_input

            options.input_file = str(write_photo_input(paths[0], Path(scratch) / "photo.npy"))
        transport = open_transport(device, adb_path=adb_path, ssh_config=ssh_config, progress=say)
        partial = save_partial if json_out and not to_stdout else None
        try:
            if compare:
                doc = run_compare(paths[0], paths[1], transport, options, rounds, say, partial)
            else:
                doc = run_bench(paths[0], transport, options, say, partial)
        finally:
            transport.close()
    # the results first, then the files: one that cannot be written is an error line after them
    if to_stdout:
        echo_json(doc)
    else:
        console().print(result_table(doc))
    config = (doc.get("a") or doc)["config"]
    err.print(f"engine: {config['engine']} (--engine {config['engine_requested']}: {config['engine_reason']})",
              markup=False, highlight=False)
    if doc.get("conditions", {}).get("hot") or any(d.get("conditions", {}).get("hot") for d in
                                                   (doc.get("a") or {}, doc.get("b") or {})):
        err.print("[yellow]warning: the device was hot or throttled; the result is flagged (conditions.hot)[/]")
    code = 0
    if baseline or compare:
        from ..gate.compare import gate_results
        from ..report.gate import gate_table

        base, cand = (doc["a"], doc["b"]) if compare else (base, doc)
        report = gate_results(base, cand, max_slowdown=threshold, alpha=alpha, cross_config=bool(compare),
                              tolerance=tolerance)
        console(stderr=to_stdout).print(gate_table(report))
        code = report.exit_code if baseline else 0
    failed = [d["runner"]["pull_error"] for d in (doc.get("a"), doc.get("b"), doc)
              if d and (d.get("runner") or {}).get("pull_error")]   # --save-output / --profile-dir
    for error in failed:
        err.print(f"error: {error}", markup=False, highlight=False)
    failed += write_outputs(*[w for w in (
        ("--json", None if to_stdout else json_out, lambda: write_json(json_out, doc)),
        ("--save-baseline", save_baseline, lambda: _save_baseline(doc, save_baseline, allow_hot, err))) if w[1]])
    sys.exit(code if baseline or not failed else 2)


def _save_baseline(doc: dict, path: str, allow_hot: bool, err) -> None:
    from ..gate.baseline import save_baseline

    save_baseline(doc, path, allow_hot=allow_hot)
    err.print(f"baseline {doc['config_key']} saved in {path}")


def _breakdown(model, conflicting, fmt, input_size, device, engine, threads, warmup, runs, cores, allow_hot,
               benchmark_binary, adb_path, ssh_config, python, json_out, err) -> None:
    """``bench --breakdown``: the one-artifact-configuration form of ``topformer-deploy breakdown``."""
    from ..breakdown import BreakdownOptions, run_breakdown
    from ..errors import TopformerDeployError
    from .breakdown import show_breakdown
    from .options import VARIANT_NAMES

    if conflicting or (model or "").lower() not in VARIANT_NAMES:
        raise TopformerDeployError("--breakdown takes --model tiny|small|base (it exports every stage itself), "
                                   "without --compare / --baseline / --save-baseline")
    options = BreakdownOptions(fmt=fmt, input_size=input_size, device=device, engine=engine, threads=threads,
                               warmup=warmup, runs=runs, cores=cores, allow_hot=allow_hot,
                               rounds=1 if device.startswith("sim") else 5,
                               benchmark_binary=benchmark_binary, adb_path=adb_path, ssh_config=ssh_config,
                               python=python)
    with _status(err) as say:
        doc = run_breakdown(model.lower(), options, progress=say)
    show_breakdown(doc, json_out)


def _slowdown(text: str) -> float:
    from ..gate.verdict import parse_slowdown
    from ..errors import TopformerDeployError

    try:
        return parse_slowdown(text)
    except ValueError as exc:
        raise TopformerDeployError(f"--max-slowdown: {exc}") from None


@contextlib.contextmanager
def _status(console):
    """A spinner on stderr whose text follows the harness's progress messages."""
    with console.status("starting") as status:
        def say(message: str) -> None:
            status.update(message)
        yield say
