#!/usr/bin/env python3
"""What an input size that is not a multiple of 64 costs: the exact pyramid pooling, measured side by side.

    python benchmarks/pooling_cost.py [--variant tiny] [--sizes 448,480,512] [--precisions fp32,int8]
                                      [--device local|ssh:...|adb:...|sim:cortex-a72] [--runs 20] [--rounds 3]

448x448 and 512x512 pool with plain average pools; 480x480 (the Pascal Context training crop) has uneven
adaptive windows at three of the four levels, which the exporter writes as constant pooling matrices. For each
size and precision the script exports TFLite (random live weights; the timing does not depend on the values),
times all artifacts in rotation on ``--device`` through the bench API (``rounds`` x ``runs``, so drift hits
every row alike), and profiles each once with the runner's one-op TFLite profile (``bench --profile-dir``:
every operator timed as its own model) to get the pooling operators' share. Printed per row: p50, p50 per
megapixel relative to the first size (the network's cost grows with the pixels; the pooling's extra cost is
what 480 adds above the line through 448 and 512), the pooling's ms and share of the summed operator times.
On a simulated core (``--device sim:CORE``) the instructions per inference and the pooling's share of the
one-op instruction counts are printed too (exact, so one round of a few runs is enough there).

The pooling operators are found in the graph, not by name (int8 graphs lose module names): everything that
feeds the one CONCATENATION (the pooled tokens) back to the ops that make the tokens.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from topformer_deploy.bench import BenchOptions, open_transport, run_bench  # noqa: E402
from topformer_deploy.export import export_model  # noqa: E402
from topformer_deploy.export.prepare import pooling_record  # noqa: E402
from topformer_deploy.images import sample_photos  # noqa: E402
from topformer_deploy.model import random_live_model  # noqa: E402

#: Operators the pooling is made of (the tokens come from CONV_2D / ADD ops, which stop the walk).
POOLING_OPS = {"AVERAGE_POOL_2D", "BATCH_MATMUL", "FULLY_CONNECTED", "RESHAPE", "TRANSPOSE", "QUANTIZE",
               "DEQUANTIZE", "CONCATENATION"}


def pooling_op_indices(path: Path) -> set[int]:
    """Indices (subgraph 0) of the pyramid pooling's operators: the CONCATENATION of the pooled tokens and
    every pooling-kind operator feeding it, back to the token producers."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    ops, producer = [], {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        ops.append((names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"),
                    [op.Inputs(j) for j in range(op.InputsLength())]))
        for j in range(op.OutputsLength()):
            producer[op.Outputs(j)] = i
    concats = [i for i, (name, _) in enumerate(ops) if name == "CONCATENATION"]
    if len(concats) != 1:
        raise SystemExit(f"{path.name}: expected one CONCATENATION (the pooled tokens), found {len(concats)}")
    found, todo = set(), list(concats)
    while todo:
        index = todo.pop()
        if index in found or ops[index][0] not in POOLING_OPS:
            continue
        found.add(index)
        todo += [producer[t] for t in ops[index][1] if t in producer]
    return found


def export_all(args, out: Path) -> list[dict]:
    model = random_live_model(args.variant)
    rows = []
    for size in args.sizes:
        for precision in args.precisions:
            int8 = dict(calibration=sample_photos(size, 4)) if precision == "int8" else {}
            result = export_model(model, "tflite", out, input_size=size, precision=precision, weights="random",
                                  verify=False, **int8)
            rows.append({"size": size, "precision": precision, "path": result.path,
                         "pooling": pooling_record(model, size)["method"], "latencies": [], "instructions": None})
    return rows


def profile_share(row: dict, transport, args) -> dict:
    """The pooling's ms and share of all operator ms (and instructions on a simulated core), one-op profile."""
    with tempfile.TemporaryDirectory(prefix="pooling-profile-") as local:
        options = BenchOptions(threads=args.threads, warmup=2, runs=3, profile_dir=local, cores=args.cores)
        doc = run_bench(row["path"], transport, options)
        profile = ((doc.get("runner") or {}).get("profile") or {}).get("local_file")
        if not profile:
            return {}
        op_rows = [r for r in json.loads(Path(profile).read_text())["rows"] if "ms" in r]
    pooling = pooling_op_indices(row["path"])
    shares = {}
    for key, value in (("ms", lambda r: r["ms"]), ("insn", lambda r: (r.get("instructions") or {}).get("total"))):
        values = [(r["index"] in pooling, value(r)) for r in op_rows]
        if all(v is not None for _, v in values):
            pooled = sum(v for inside, v in values if inside)
            shares[f"pool_{key}"], shares[f"{key}_share"] = pooled, pooled / (sum(v for _, v in values) or 1)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument("--sizes", default="448,480,512", help="square sizes or HxW, comma separated")
    parser.add_argument("--precisions", default="fp32,int8", help="fp32 and/or int8 (PT2E route)")
    parser.add_argument("--device", default="local", help="bench device spec, e.g. local, ssh:pi@host, sim:cortex-a72")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cores", default="big")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per artifact per round")
    parser.add_argument("--rounds", type=int, default=3, help="rotations over all artifacts")
    parser.add_argument("--no-profile", action="store_true", help="skip the one-op profile (pooling share)")
    parser.add_argument("--out", type=Path, default=None, help="keep the artifacts here (default: a temp dir)")
    args = parser.parse_args()
    args.sizes = [tuple(int(v) for v in (s.split("x") if "x" in s else (s, s))) for s in args.sizes.split(",")]
    args.precisions = args.precisions.split(",")

    with tempfile.TemporaryDirectory(prefix="pooling-cost-") as tmp:
        out = args.out or Path(tmp)
        print(f"# exporting {args.variant} at {', '.join(f'{h}x{w}' for h, w in args.sizes)} "
              f"({', '.join(args.precisions)}) to {out}", file=sys.stderr)
        rows = export_all(args, out)
        with open_transport(args.device) as transport:
            device = transport.name
            options = BenchOptions(threads=args.threads, warmup=5, runs=args.runs, cores=args.cores)
            for round_index in range(args.rounds):
                order = rows if round_index % 2 == 0 else rows[::-1]
                for row in order:
                    print(f"# round {round_index + 1}/{args.rounds}: {row['path'].name}", file=sys.stderr)
                    doc = run_bench(row["path"], transport, options)
                    row["latencies"] += doc["latencies_ms"]
                    row["instructions"] = (doc.get("instructions") or {}).get("total")
            for row in rows:
                row.update({} if args.no_profile else profile_share(row, transport, args))
    print(f"# pooling cost: {args.variant}, TFLite, {args.threads} thread(s), device {device} "
          f"({platform.machine()} host), {args.rounds} rounds x {args.runs} runs, interleaved")
    counted = all(row["instructions"] for row in rows)
    print("| size | precision | pooling | p50 ms | p50 / Mpixel vs first | pooling ms (one-op) | pooling share |"
          + (" M instructions | per Mpixel vs first | pooling share of instructions |" if counted else ""))
    print("|---" * (10 if counted else 7) + "|")
    base: dict[str, tuple[float, float]] = {}
    for row in rows:
        h, w = row["size"]
        pixels = h * w / 1e6
        p50 = statistics.median(row["latencies"])
        insn = row["instructions"] or 0.0
        first = base.setdefault(row["precision"], (p50 / pixels, insn / pixels))
        line = (f"| {h}x{w} | {row['precision']} | {row['pooling']} | {p50:.2f} | {p50 / pixels / first[0]:.3f} | "
                f"{_fmt(row.get('pool_ms'), '.3f')} | {_fmt(row.get('ms_share'), '.2%')} |")
        if counted:
            line += (f" {insn / 1e6:.2f} | {insn / pixels / first[1]:.4f} | "
                     f"{_fmt(row.get('insn_share'), '.3%')} |")
        print(line)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
