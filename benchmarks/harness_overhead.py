#!/usr/bin/env python3
"""How much does the bench harness add to the latency it reports?

Times the same artifact (1) in this process, calling the interpreter directly, and (2) through
``run_bench`` over ssh to 127.0.0.1 (a throwaway sshd started here, or ``--device ssh:...``), and (3)
through ``run_bench`` on ``local``. Blocks alternate (in-process, ssh, local, in-process, ...) so drift
and other load hit all three alike; the p50 of the pooled samples are compared.
Target: the ssh p50 within 3% of the in-process p50.

    python benchmarks/harness_overhead.py [--model tiny|ARTIFACT] [--input-size 512] [--runs 30] [--blocks 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))       # the test suite's throwaway sshd


def in_process_latencies(path: Path, threads: int, warmup: int, runs: int, seed: int = 0) -> list[float]:
    """invoke()/run() wall times (ms) with the interpreter loaded here, inputs as the runner makes them."""
    rng = np.random.default_rng(seed)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: rng.uniform(0, 255, [d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                 for i in sess.get_inputs()}
        call = lambda: sess.run(None, feeds)  # noqa: E731
    else:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.uniform(0, 255, d["shape"]).astype(d["dtype"]))
        call = interp.invoke
    for _ in range(warmup):
        call()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="artifact path or variant (exported once, cached)")
    ap.add_argument("--format", default="tflite", choices=["tflite", "onnx"])
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--device", default=None, help="ssh:USER@HOST[:PORT] (default: a throwaway sshd on 127.0.0.1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30, help="runs per block")
    ap.add_argument("--blocks", type=int, default=4)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from topformer_deploy.bench.cache import resolve_model
    from topformer_deploy.bench.harness import BenchOptions, run_bench
    from topformer_deploy.bench.devices import open_transport
    from topformer_deploy.bench.transports import LocalTransport, SshTransport

    console = Console(stderr=True)
    path = resolve_model(args.model, args.format, (args.input_size, args.input_size), console.print)
    server = None
    if args.device:
        ssh = open_transport(args.device)
    else:
        from sshd import start_sshd

        server = start_sshd(Path(tempfile.mkdtemp(prefix="tfd-overhead-")))
        ssh = SshTransport("127.0.0.1", server.user, server.port, config_file=str(server.config))
    options = BenchOptions(threads=args.threads, warmup=args.warmup, runs=args.runs, cores="all",
                           python=sys.executable, allow_hot=True)
    samples = {"in-process": [], "ssh 127.0.0.1": [], "local": []}
    block_p50 = []                      # in-process p50 per block: how much the machine itself drifts
    try:
        for block in range(args.blocks):
            console.print(f"block {block + 1}/{args.blocks}")
            here = in_process_latencies(path, args.threads, args.warmup, args.runs)
            block_p50.append(float(np.median(here)))
            samples["in-process"] += here
            samples["ssh 127.0.0.1"] += run_bench(path, ssh, options)["latencies_ms"]
            samples["local"] += run_bench(path, LocalTransport(), options)["latencies_ms"]
    finally:
        ssh.close()
        if server:
            server.stop()
    base = float(np.median(samples["in-process"]))
    table = Table(title=f"harness overhead: {path.name}, {args.threads} thread(s), "
                        f"{args.blocks} blocks x {args.runs} runs, interleaved")
    for col in ("timing", "p50 ms", "p90 ms", "ratio to in-process p50"):
        table.add_column(col, justify="left" if col == "timing" else "right")
    for name, x in samples.items():
        table.add_row(name, f"{np.median(x):.2f}", f"{np.percentile(x, 90):.2f}", f"{np.median(x) / base:.3f}")
    Console().print(table)
    ratio = float(np.median(samples["ssh 127.0.0.1"])) / base
    verdict = "within" if abs(ratio - 1) <= 0.03 else "OUTSIDE"
    print(f"ssh p50 / in-process p50 = {ratio:.3f}: {verdict} the 3% target")
    print(f"noise floor: the in-process p50 alone varied {min(block_p50):.2f}..{max(block_p50):.2f} ms between "
          f"blocks ({max(block_p50) / min(block_p50) - 1:.1%}); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
