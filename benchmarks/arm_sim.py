"""Instructions per inference on simulated Arm cores, per stage: what each precision costs on each core.

For every variant and precision it exports the breakdown's artifacts once (the whole network, TPM, SASE, SIM, head,
post; the exporter's own routes: NHWC TFLite, fp16 with XNNPACK's FP16 hint, int8 PT2E calibrated on synthetic
images) and a plain ``litert_torch.convert`` of the same folded model, then counts every artifact's instructions on
each simulated core (``--device sim:CORE``) and writes the tables and their reading to ``benchmarks/ARM_SIM.md``.

    python benchmarks/arm_sim.py                                   # Tiny/Small/Base at 512, a53/a72/a76 (hours)
    python benchmarks/arm_sim.py --variants tiny --size 128 --cores cortex-a72 --out /tmp/ARM_SIM.md

Counts are exact and repeat to ~1e-5 (so one timed run after one warmup is enough at 512); they are a work measure,
not a latency (docs/simulated-cores.md says what they leave out). Artifacts are kept in ``--work`` and reused.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from topformer_deploy.artifact import read_manifest  # noqa: E402
from topformer_deploy.model.stages import ALL_STAGES, STAGE_LABELS, STAGES  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="tiny,small,base")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--cores", default="cortex-a53,cortex-a72,cortex-a76")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calib-count", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "arm_sim")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "ARM_SIM.md")
    return parser.parse_args(argv)


def stage_artifacts(variant: str, precision: str, size: int, work: Path, calib_count: int, say) -> dict:
    """The breakdown's artifacts of one configuration, exported once (reused when their manifests are there)."""
    from topformer_deploy.breakdown.artifacts import export_breakdown_artifacts, runtime_inputs
    from topformer_deploy.breakdown.options import BreakdownOptions
    from topformer_deploy.export import load_calibration_images
    from topformer_deploy.model import random_live_model

    out = work / f"{variant}_{size}_{precision}"
    names = {stage: out / f"topformer_{variant}_{size}x{size}_{precision}_{stage}.tflite" for stage in ("full", *ALL_STAGES)}
    inputs = {stage: next(out.glob(f"{path.stem}.inputs.np*"), None) for stage, path in names.items()}
    if all(p.is_file() and read_manifest(p, required=False) and inputs[s] for s, p in names.items()):
        return {s: {"path": p, "input_file": inputs[s], "inputs": runtime_inputs(p)} for s, p in names.items()}
    options = BreakdownOptions(fmt="tflite", precision=precision, input_size=(size, size))
    if precision == "int8":
        options.calibration = load_calibration_images("synthetic", calib_count, (size, size))
        options.calibration_source = "synthetic"
    say(f"exporting {variant} {precision} {size}x{size}: whole network and 5 stages")
    return export_breakdown_artifacts(random_live_model(variant), options, out, "random", say)


def plain_conversion(variant: str, size: int, work: Path, say) -> Path:
    """A plain litert-torch conversion of the same folded model (NHWC I/O only, no rewrite): the reference."""
    path = work / f"{variant}_{size}_plain.tflite"
    if path.is_file():
        return path
    import litert_torch
    import torch

    from topformer_deploy.export.prepare import fold_for_export
    from topformer_deploy.export.native import quiet_native_output
    from topformer_deploy.export.offline import offline
    from topformer_deploy.model import random_live_model

    say(f"plain litert-torch conversion of {variant} {size}x{size}")
    model = fold_for_export(random_live_model(variant)).eval()
    wrapped = litert_torch.to_channel_last_io(model, args=[0], outputs=[0]).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with offline(), quiet_native_output():
        litert_torch.convert(wrapped, (torch.randn(1, size, size, 3),)).export(str(path))
    return path


def count(artifacts: dict, core: str, args, say) -> dict:
    """The breakdown document of one configuration on one simulated core."""
    from topformer_deploy.breakdown.document import summarize_breakdown
    from topformer_deploy.breakdown.options import BreakdownOptions
    from topformer_deploy.breakdown.timing import time_artifacts
    from topformer_deploy.model import build_model

    manifest = read_manifest(artifacts["full"]["path"])
    options = BreakdownOptions(fmt="tflite", precision=manifest["precision"], input_size=(args.size, args.size),
                               device=f"sim:{core}", warmup=args.warmup, runs=args.runs, rounds=1)
    results = time_artifacts(artifacts, options, say)
    return summarize_breakdown(build_model(manifest["variant"]), results, artifacts, options, "random", None)


def count_whole(path: Path, core: str, args, say) -> float:
    from topformer_deploy.bench.devices import open_transport
    from topformer_deploy.bench.harness import BenchOptions, run_bench

    with open_transport(f"sim:{core}", progress=say) as transport:
        doc = run_bench(path, transport, BenchOptions(warmup=args.warmup, runs=args.runs), progress=say)
    return doc["instructions"]["total"]


def main(argv=None) -> int:
    args = parse_args(argv)
    variants, precisions, cores = (a.split(",") for a in (args.variants, args.precisions, args.cores))
    started = time.monotonic()
    say = lambda message: print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)  # noqa
    rows = []   # (variant, precision, core, breakdown document)
    plain = {}  # (variant, core) -> instructions
    for variant in variants:
        for precision in precisions:
            artifacts = stage_artifacts(variant, precision, args.size, args.work, args.calib_count, say)
            for core in cores:
                say(f"counting {variant} {precision} on {core}")
                rows.append((variant, precision, core, count(artifacts, core, args, say)))
        path = plain_conversion(variant, args.size, args.work, say)
        for core in cores:
            plain[variant, core] = count_whole(path, core, args, say)
    args.out.write_text(render(rows, plain, args, time.monotonic() - started))
    say(f"wrote {args.out}")
    return 0


def _m(value) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def render(rows, plain, args, seconds) -> str:
    """ARM_SIM.md: per variant the table (precision x core: whole, ratios, stages, floor) and what it means."""
    doc = rows[0][3]
    sim = (doc.get("device") or {}).get("simulation") or {}
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("ai-edge-litert", "litert-torch", "torch"))
    whole = {(v, p, c): d["instructions"]["whole"] for v, p, c, d in rows}
    lines = ["# Instructions per inference on simulated Arm cores", "",
             f"Generated by `python benchmarks/arm_sim.py --variants {args.variants} --precisions {args.precisions} "
             f"--cores {args.cores} --size {args.size}` in {seconds / 60:.0f} min on {platform.machine()} "
             f"(qemu-user {sim.get('qemu')}, guest runtimes {sim.get('userland_runtimes')}; host {versions}).",
             "", "Exact counts (docs/simulated-cores.md): a measure of work, not a latency. M = millions of "
             "instructions per inference, 1 thread, random live weights (counts do not depend on weight values). "
             "`vs fp32` is the same core's fp32 artifact; `vs plain` (fp32) a plain `litert_torch.convert` of the "
             "same folded model; `floor` the MAC floor's share of the executed instructions (fp32 FMLA 4 MACs per "
             "instruction; fp16 8 with FP16 arithmetic, else 4; int8 SDOT 16 with the dot product, else SMLAL 8).", ""]
    for variant in dict.fromkeys(v for v, *_ in rows):
        lines += [f"## TopFormer-{variant.capitalize()} {args.size}x{args.size}", "",
                  "| precision | core | whole M | vs fp32 | vs plain | floor | " +
                  " | ".join(f"{STAGE_LABELS[s]} M" for s in STAGES) + " | stages / whole | post M | FMLA32 / FMLA16 / SDOT / SMLAL M |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|"]
        for v, precision, core, d in rows:
            if v != variant:
                continue
            counts = d["instructions"]
            stage = {r["stage"]: r for r in d["stages"]}
            median = d["results"]["full"]["instructions"]["median"]
            fp32 = whole.get((variant, "fp32", core))
            vs_plain = counts["whole"] / plain[variant, core] if precision == "fp32" and (variant, core) in plain else None
            kinds = " / ".join(_m(median.get(k)) for k in ("fmla_f32", "fmla_f16", "sdot_udot", "smlal_umlal"))
            cells = [precision, core, _m(counts["whole"]), f"{counts['whole'] / fp32:.3f}x" if fp32 else "-",
                     f"{vs_plain:.4f}x" if vs_plain else "-", f"{counts['floor_fraction']:.0%}",
                     *(_m(stage[s]["instructions"]) for s in STAGES), f"{counts['reconciliation']:.3f}",
                     _m(stage["post"]["instructions"]), kinds]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += reading(variant, whole, plain)
    return "\n".join(lines) + "\n"


def reading(variant: str, whole: dict, plain: dict) -> list[str]:
    """What the table says for a user choosing a precision, in sentences computed from the counts."""
    out = []
    cores = sorted({c for v, _, c in whole if v == variant})
    for core in cores:
        fp32 = whole.get((variant, "fp32", core))
        if not fp32:
            continue
        parts = [f"{p} {whole[variant, p, core] / fp32:.2f}x" for p in ("fp16", "int8") if (variant, p, core) in whole]
        ref = plain.get((variant, core))
        plain_text = f"; fp32 vs the plain conversion {fp32 / ref:.4f}x" if ref else ""
        out.append(f"- {core}: {', '.join(parts)} the fp32 work{plain_text}.")
    return out + [""]


if __name__ == "__main__":
    raise SystemExit(main())
