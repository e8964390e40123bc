"""False-alarm rate and detection power of the latency gate, measured on real latency samples.

Two steps:

  python benchmarks/gate_power.py record [--sessions 10 --runs 120 --pause 25] [--nice -15]
      converts a small TopFormer-Tiny (256x256, fp32, random weights) with litert-torch, then times it in
      several independent processes ("sessions", spaced in time; 1 thread, ai_edge_litert) and writes
      every per-run latency to benchmarks/data/latency_samples_<arch>_<size>px_<shared|dedicated>.json
      with the command, date and machine. ``--nice -15`` (root) raises the timed process's priority, and
      its autogroup's, so that the other jobs of a shared machine barely preempt it: a dedicated runner.

  python benchmarks/gate_power.py simulate [--data FILE ...] [--trials 1000]
      resamples those recordings and calls ``compare_samples`` exactly as ``topformer-deploy gate`` does:
      A/A (both sides real runs) gives the false-alarm rate, A vs A*1.10 the detection power of a 10%
      slowdown. Each side is k sessions x n consecutive runs, the 2k sessions all different (a stored
      baseline vs a later CI run, so session-to-session drift is in the comparison), or interleaved A/B
      within one session (``bench --compare``). Prints a table over run counts, layouts and thresholds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _convert_tiny(path: Path, size: int) -> None:
    """Random-weight TopFormer-Tiny with BN folded, converted by litert-torch (no network)."""
    import litert_torch
    import torch

    from topformer_deploy import build_model, fold_batchnorm

    torch.manual_seed(0)
    model = fold_batchnorm(build_model("tiny")).eval()
    sample = (torch.rand(1, 3, size, size) * 255,)
    litert_torch.convert(model, sample).export(str(path))


def _session(model: str, runs: int, warmup: int, nice: int) -> None:
    """One fresh process: load the model, warm up, time ``runs`` invokes; print JSON."""
    from ai_edge_litert.interpreter import Interpreter

    if nice:                             # negative needs root: emulates a runner with no other jobs
        os.nice(nice)
        autogroup = Path("/proc/self/autogroup")   # with sched_autogroup the group's nice counts too
        if autogroup.exists():
            autogroup.write_text(str(nice))

    interp = Interpreter(model_path=model, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    data = np.random.default_rng(0).uniform(0, 255, inp["shape"]).astype(inp["dtype"])
    interp.set_tensor(inp["index"], data)
    for _ in range(warmup):
        interp.invoke()
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        latencies.append((time.perf_counter() - start) * 1e3)
    print(json.dumps({"latencies_ms": [round(x, 4) for x in latencies],
                      "loadavg": list(os.getloadavg())}))


def _samples_doc(args, sessions: list[dict], complete: bool) -> dict:
    import ai_edge_litert

    return {
        "schema": "topformer-deploy/latency-samples", "schema_version": 1, "complete": complete,
        "command": " ".join(["python", "benchmarks/gate_power.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cpu": _cpu_name(), "cpus": os.cpu_count(),
                    "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
                    "note": "shared CI/dev machine; other jobs ran at the same time (that noise is kept)"},
        "model": {"variant": "tiny", "input": [1, 3, args.size, args.size], "precision": "fp32",
                  "weights": "random (seed 0), BatchNorm folded", "converter": "litert-torch"},
        "runtime": {"name": "ai_edge_litert", "version": getattr(ai_edge_litert, "__version__", "unknown"),
                    "threads": 1},
        "warmup": args.warmup, "runs_per_session": args.runs, "pause_s": args.pause, "nice": args.nice,
        "sessions": sessions,
    }


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def record(args) -> Path:
    """Convert (unless --model exists), time ``--sessions`` fresh processes, save after each session."""
    tag = "dedicated" if args.nice < 0 else "shared"
    out = Path(args.out) if args.out else DATA_DIR / f"latency_samples_{platform.machine()}_{args.size}px_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    sessions: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model or Path(tmp) / f"topformer_tiny_{args.size}.tflite")
        if not model.is_file():
            t0 = time.perf_counter()
            _convert_tiny(model, args.size)
            print(f"converted in {time.perf_counter() - t0:.0f} s: {model.stat().st_size / 1e6:.1f} MB", flush=True)
        for i in range(args.sessions):
            if i:
                time.sleep(args.pause)
            started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            proc = subprocess.run([sys.executable, __file__, "_session", "--model", str(model),
                                   "--runs", str(args.runs), "--warmup", str(args.warmup),
                                   "--nice", str(args.nice)],
                                  capture_output=True, text=True, check=True, start_new_session=True)
            doc = json.loads(proc.stdout.strip().splitlines()[-1])
            med = float(np.median(doc["latencies_ms"]))
            print(f"session {i + 1}/{args.sessions} at {started}: median {med:.2f} ms, "
                  f"load {doc['loadavg'][0]:.2f}", flush=True)
            sessions.append({"started": started, "loadavg_after": doc["loadavg"],
                             "latencies_ms": doc["latencies_ms"]})
            _write_json(out, _samples_doc(args, sessions, complete=i + 1 == args.sessions))
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return out


def _block(rng, session: np.ndarray, n: int) -> np.ndarray:
    """n consecutive runs from a random start (keeps the run-to-run autocorrelation of real data)."""
    start = rng.integers(0, session.size - n + 1)
    return session[start:start + n]


def _draw(rng, sessions: list[np.ndarray], layout: tuple[int, int] | None, runs: int):
    """(baseline, candidate) runs for one simulated comparison.

    ``layout=(k, n)``: each side is k sessions x n consecutive runs (``bench --repeat k --runs n``), the
    2k sessions all different: a stored baseline vs a later CI run, session drift included.
    ``layout=None``: interleaved A/B - the even and odd runs of 2*runs consecutive runs of one session
    (``bench --compare A B``), so drift hits both sides alike.
    """
    if layout is None:
        block = _block(rng, sessions[rng.integers(len(sessions))], 2 * runs)
        return (block[0::2], block[1::2]) if rng.random() < 0.5 else (block[1::2], block[0::2])
    k, n = layout
    ids = rng.choice(len(sessions), size=2 * k, replace=False)
    side = lambda part: np.concatenate([_block(rng, sessions[i], n) for i in part])  # noqa: E731
    return side(ids[:k]), side(ids[k:])


def simulate_rates(sessions: list[np.ndarray], layout, runs: int, slowdown: float, max_slowdown: float,
                   alpha: float, trials: int, seed: int = 0) -> dict[str, float]:
    """Fraction of each verdict of ``compare_samples`` when the candidate is ``(1 + slowdown)`` x real runs."""
    from topformer_deploy.gate.verdict import compare_samples

    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {"regression": 0, "improvement": 0, "same": 0, "inconclusive": 0}
    for _ in range(trials):
        base, cand = _draw(rng, sessions, layout, runs)
        counts[compare_samples(base, cand * (1.0 + slowdown), max_slowdown=max_slowdown, alpha=alpha).verdict] += 1
    return {k: v / trials for k, v in counts.items()}


def _scenarios(n_sessions: int, session_runs: int, run_counts: list[int]):
    """(label, layout, runs, threshold) rows: 1, 3 and 5 sessions per side at 5%; thresholds; interleaved."""
    rows = []
    for runs in run_counts:
        for k in (1, 3, 5):
            n = max(1, round(runs / k))
            if 2 * k <= n_sessions and n <= session_runs:
                rows.append((f"{k} x {n}", (k, n), k * n, 0.05))
    if 2 * 3 <= n_sessions:
        rows += [("3 x 10", (3, 10), 30, 0.03), ("3 x 10", (3, 10), 30, 0.10)]
    rows += [("interleaved", None, runs, 0.05) for runs in run_counts if 2 * runs <= session_runs]
    return rows


def simulate(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    paths = [Path(p) for p in args.data] if args.data else sorted(DATA_DIR.glob("latency_samples_*.json"))
    if not paths:
        print("no recorded samples: run `python benchmarks/gate_power.py record` first", file=sys.stderr)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=120)
    targets = []
    for path in paths:
        doc = json.loads(path.read_text())
        sessions = [np.asarray(s["latencies_ms"], dtype=float) for s in doc["sessions"]]
        meds = [float(np.median(s)) for s in sessions]
        console.rule(path.name)
        console.print(f"{len(sessions)} sessions x {doc['runs_per_session']} runs, {doc['model']['variant']} "
                      f"{doc['model']['input'][-1]}px fp32, {doc['runtime']['name']} {doc['runtime']['version']} "
                      f"1 thread, nice {doc.get('nice', 0)}; {doc['machine']['cpu']} x{doc['machine']['cpus']}; "
                      f"recorded {doc['date']}")
        console.print(f"session medians (ms): {', '.join(f'{m:.1f}' for m in meds)}  "
                      f"(max/min {max(meds) / min(meds):.3f})")
        table = Table(title=f"{args.trials} resampled comparisons per cell, alpha={args.alpha}")
        for col in ("runs per side", "layout (sessions x runs)", "threshold", "A/A false alarm", "A/A same",
                    "A/A inconcl.", "A vs 1.10A detected", "1.10A inconcl."):
            table.add_column(col, justify="right")
        for label, layout, runs, threshold in _scenarios(len(sessions), min(s.size for s in sessions), args.runs):
            aa = simulate_rates(sessions, layout, runs, 0.0, threshold, args.alpha, args.trials, seed=1)
            ab = simulate_rates(sessions, layout, runs, 0.10, threshold, args.alpha, args.trials, seed=2)
            target = runs == 30 and threshold == 0.05
            if target:
                targets.append((path.name, label, aa["regression"] <= 0.01 and ab["regression"] >= 0.95))
            table.add_row(str(runs), label, f"{threshold:.0%}", f"{aa['regression']:.1%}", f"{aa['same']:.1%}",
                          f"{aa['inconclusive']:.1%}", f"{ab['regression']:.1%}", f"{ab['inconclusive']:.1%}",
                          style="bold" if target else None)
        console.print(table)
    console.rule("targets at 30 runs per side, 5% threshold: false alarms <= 1%, detection of +10% >= 95%")
    for name, label, ok in targets:
        console.print(escape(f"{name} [{label}]: {'met' if ok else 'NOT met'}"))
    return 0 if any(ok for *_, ok in targets) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record real latency samples on this machine")
    rec.add_argument("--sessions", type=int, default=8)
    rec.add_argument("--runs", type=int, default=120)
    rec.add_argument("--warmup", type=int, default=10)
    rec.add_argument("--pause", type=float, default=20.0, help="seconds between sessions")
    rec.add_argument("--size", type=int, default=256)
    rec.add_argument("--nice", type=int, default=0,
                     help="niceness of the timed processes (e.g. -15 as root: the other jobs of a shared "
                          "machine then barely preempt them, as on a dedicated runner)")
    rec.add_argument("--model", help="TFLite file to time (converted there first if missing; default: a temp file)")
    rec.add_argument("--out", help="output JSON (default benchmarks/data/latency_samples_<arch>_<size>px.json)")
    sim = sub.add_parser("simulate", help="false-alarm rate and power by resampling recorded samples")
    sim.add_argument("--data", nargs="+", help="recorded samples JSON (default: all in benchmarks/data)")
    sim.add_argument("--trials", type=int, default=1000)
    sim.add_argument("--alpha", type=float, default=0.01)
    sim.add_argument("--runs", type=int, nargs="+", default=[10, 20, 30, 50])
    ses = sub.add_parser("_session", help=argparse.SUPPRESS)
    ses.add_argument("--model", required=True)
    ses.add_argument("--runs", type=int, required=True)
    ses.add_argument("--warmup", type=int, required=True)
    ses.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    if args.cmd == "record":
        record(args)
        return 0
    if args.cmd == "_session":
        _session(args.model, args.runs, args.warmup, args.nice)
        return 0
    return simulate(args)


if __name__ == "__main__":
    sys.exit(main())
