"""Wall time and peak memory of ``topformer-deploy export`` (imports and verification included).

Each export runs as its own child process; its peak RSS and CPU time come from the kernel's rusage of
that child (``os.wait4``, the per-child form of ``getrusage(RUSAGE_CHILDREN)``). Target: Tiny
512x512 to TFLite in under 20 s and 1.5 GB peak on the 2-core CI machine.

    python benchmarks/export_speed.py [--variant tiny] [--size 512] [--formats tflite,onnx] [--repeat 1] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = {"tflite": {"wall_s": 20.0, "peak_mb": 1536.0}}


def run_export(fmt: str, variant: str, size: int, out_dir: str) -> dict:
    """One export in a child process: wall time, CPU time, peak RSS and the manifest it printed."""
    cli = shutil.which("topformer-deploy")
    argv = [cli] if cli else [sys.executable, "-c", "from topformer_deploy.cli import main; main()"]
    argv += ["export", "--variant", variant, "--to", fmt, "--input-size", str(size), "--out", out_dir, "--json"]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"export --to {fmt} failed ({child.returncode}): {err.strip().splitlines()[-1:]}")
    manifest = json.loads(out)
    return {"format": fmt, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024, "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--formats", default="tflite,onnx")
    parser.add_argument("--repeat", type=int, default=1, help="runs per format (interleaved); medians reported")
    parser.add_argument("--keep", metavar="DIR", help="write the artifacts to DIR and keep them")
    args = parser.parse_args()
    formats = args.formats.split(",")
    runs = {fmt: [] for fmt in formats}
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.keep or scratch
        for _ in range(args.repeat):
            for fmt in formats:
                runs[fmt].append(run_export(fmt, args.variant, args.size, out_dir))
    load = os.getloadavg()
    print(f"# export speed: {args.variant} {args.size}x{args.size}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    header = (f"{'format':8} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'wall/target':>12} {'mem/target':>11} "
              f"{'ops':>5} {'T/R/P':>8}  verification")
    print(header)
    print("-" * len(header))
    for fmt in formats:
        wall = statistics.median(r["wall_s"] for r in runs[fmt])
        cpu = statistics.median(r["cpu_s"] for r in runs[fmt])
        peak = max(r["peak_mb"] for r in runs[fmt])
        target = TARGETS.get(fmt)
        ratios = (f"{wall / target['wall_s']:>12.2f} {peak / target['peak_mb']:>11.2f}" if target
                  else f"{'-':>12} {'-':>11}")
        manifest = runs[fmt][-1]["manifest"]
        v = manifest["verification"] or {}
        figures = (f"rel L2 {v['rel_l2_error']:.1e}, argmax {v['argmax_agreement']:.4%}" if v else "not verified")
        moves = f"{manifest['transpose_count']}/{manifest['reshape_count']}/{manifest['pad_count']}"
        print(f"{fmt:8} {wall:8.1f} {cpu:8.1f} {peak:8.0f} {ratios} {sum(manifest['op_histogram'].values()):5d} "
              f"{moves:>8}  {figures}")
    for fmt in formats:
        print(f"{fmt} ops: {json.dumps(runs[fmt][-1]['manifest']['op_histogram'])}")
    print("T/R/P = Transpose/Reshape/Pad ops. Targets: tflite wall <= 20 s and peak <= 1536 MB (ratios <= 1.00 "
          "meet them); wall time depends on machine load, cpu s much less")


if __name__ == "__main__":
    main()
