"""An in-memory bench target for the harness logic: files in a dict, the runner simulated, calls recorded.

It speaks the same protocol as a real device (the conditions probe's sections, the runner's one JSON
document), so the harness under test is the real one; only the device is imaginary.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from topformer_deploy.bench.transports import RunResult, Transport

#: What the conditions probe reads on a 4-core board with cpufreq (big = all four at 1.8 GHz).
PROBE = """@@arch
aarch64
@@os
Linux 6.1.0
@@hostname
memory-board
@@cpuinfo
processor	: 0
CPU implementer	: 0x41
CPU part	: 0xd08
processor	: 1
CPU implementer	: 0x41
CPU part	: 0xd08
@@cpufreq
0 1800000 1800000 performance 1
1 1800000 1800000 performance 1
@@thermal
45000 cpu-thermal
@@loadavg
0.10 0.20 0.30 1/100 1
@@taskset
/usr/bin/taskset
@@end
"""


class MemoryTransport(Transport):
    """A device that exists only in memory. ``latency(model, call)`` gives each simulated run's time;
    ``interrupt_on`` raises KeyboardInterrupt on that (1-based) runner call, as a Ctrl-C would."""

    kind = "memory"

    def __init__(self, latency=lambda model, call: 10.0, interrupt_on: int | None = None):
        self.name = "memory:board"
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.runner_calls: list[list[str]] = []
        self.latency, self.interrupt_on = latency, interrupt_on

    def run(self, argv, timeout=60, check=True, stdin=None, env=None):
        argv = list(argv)
        self.last_env = env
        if argv[:2] == ["mktemp", "-d"]:
            path = f"/memory/tmp.{len(self.dirs) + 1}"
            self.dirs.add(path)
            return RunResult(0, path + "\n", "")
        if argv[0] == "rm":
            self.remove(argv[-1])
            return RunResult(0, "", "")
        if argv[0] == "chmod":
            return RunResult(0, "", "")
        if any(a.endswith("device_runner.py") for a in argv):
            return self._runner(argv)
        if argv[1:2] == ["-c"]:  # the engine probe: Python 3.11 with numpy and onnxruntime
            modules = {m: m in ("numpy", "onnxruntime") for m in ("numpy", "ai_edge_litert", "tflite_runtime",
                                                                 "tensorflow", "onnxruntime")}
            return RunResult(0, json.dumps({"version": "3.11.2", "modules": modules}) + "\n", "")
        return self._checked(RunResult(127, "", f"{argv[0]}: not found"), argv, check)

    def probe(self, script, timeout=60):
        return PROBE

    def push(self, local, remote, timeout=300):
        self.files[remote] = Path(local).read_bytes()

    def pull(self, remote, local, timeout=300):
        Path(local).write_bytes(self.files[remote])

    def remove(self, remote):
        self.dirs.discard(remote)
        for name in [f for f in self.files if f == remote or f.startswith(remote + "/")]:
            del self.files[name]

    def _runner(self, argv: list[str]) -> RunResult:
        self.runner_calls.append(argv)
        call = len(self.runner_calls)
        if call == self.interrupt_on:
            raise KeyboardInterrupt
        value = lambda flag: argv[argv.index(flag) + 1]  # noqa: E731
        model, runs = value("--model"), int(value("--runs"))
        if model not in self.files:
            raise AssertionError(f"the runner was asked for {model}, which was never pushed")
        doc = {"runner_version": 1, "ok": True, "runtime": {"name": "onnxruntime", "version": "0.0-memory"},
               "model": {"path": model, "format": "onnx",
                         "inputs": [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}]},
               "threads": int(value("--threads")), "warmup": int(value("--warmup")), "runs": runs,
               "load_ms": 1.0, "first_ms": 2.0, "latencies_ms": [self.latency(model, call) for _ in range(runs)],
               "command": shlex.join(argv)}
        return RunResult(0, json.dumps(doc) + "\n", "")
