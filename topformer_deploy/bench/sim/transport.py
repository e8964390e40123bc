"""``sim:CORE``: a simulated Arm core as a bench target, with exact instruction counts per inference.

The files are this machine's (like ``local``); the device runner runs on the project's aarch64 userland
under qemu-user with the core's CPU model, the core's CPU description (so the runtime picks the kernels
that core gets: XNNPACK's SDOT kernels on a Cortex-A76, its A53-tuned ones on a Cortex-A53) and the
counting plugin, which snapshots its counters whenever the runner marks an invoke. The runner reads the
snapshots and reports ``instructions`` per run. Counts are exact and repeat across processes; emulated
wall time is kept but means nothing (no caches, memory bandwidth, frequency or issue width is modelled).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import TopformerDeployError
from ..transports import DeviceError, LocalTransport, RunResult
from . import cores, qemu

#: The interpreter of the userland's runtime venv (numpy, ai-edge-litert, onnxruntime).
GUEST_PYTHON = "/opt/topformer-venv/bin/python3"
#: What the guest's environment holds besides what the caller passes (nothing of the host's leaks in).
GUEST_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
             "TOPFORMER_DEPLOY_MARKERS": "1"}
HOST_COMMANDS = ("chmod", "mktemp", "rm")
_PROGRESS = re.compile(r"tfd-progress: (\d+)/(\d+)")
NOT_A_LATENCY = ("instruction counts are exact and repeatable; the emulated wall time is not a latency "
                 "(no caches, memory bandwidth, clock or issue width are modelled)")


def check_core(core: str) -> str:
    if core not in cores.CORES:
        raise TopformerDeployError(f"unknown simulated core {core!r}: choose one of {', '.join(cores.CORES)}")
    return core


class SimTransport(LocalTransport):
    """A simulated core: local files, the device runner under ``qemu-aarch64 -cpu CORE`` with the plugin."""

    kind = "sim"
    default_python = GUEST_PYTHON
    pinning = False

    def __init__(self, core: str = "cortex-a72", progress: Callable[[str], None] | None = None):
        from . import userland

        self.core = check_core(core)
        self.name = f"sim:{core}"
        self.say = say = progress or (lambda message: None)
        self.qemu = qemu.find_qemu()
        self.qemu_version = qemu.qemu_version(self.qemu)
        record = userland.built()
        if record is None or record.get("host_runtimes") != userland.host_runtime_versions():
            problem = userland.host_problem()
            if problem:
                raise qemu.SimError(f"the simulated cores need the project's aarch64 userland, which is not built "
                                    f"and cannot be built here: {problem}")
            say("building the aarch64 userland for the simulated cores (once; several minutes)")
            record = userland.build(say=say)
        self.rootfs = Path(record["root"])
        self.runtimes = record.get("runtimes") or {}
        say("building the instruction-counting plugin" if not any(qemu.sim_cache().glob("insn_counter-*.so"))
            else f"checking the instruction-counting plugin against {self.qemu}")
        self.plugin = qemu.build_plugin(self.qemu)
        self.sim_root = qemu.make_sim_root(core, self.rootfs)

    def check_options(self, options) -> None:
        if options.threads != 1:
            raise TopformerDeployError(f"{self.name} counts instructions for one thread only (--threads 1): with "
                                       "several, threads spin-wait and the plugin's counters race")
        if options.engine not in ("python", "auto"):
            raise TopformerDeployError(f"{self.name} runs the python engine (its marks give the counts)")

    def run(self, argv, timeout=60, check=True, stdin=None, env=None):
        """Programs run on the simulated core, the harness's file utilities (chmod, mktemp, rm) here."""
        if not argv or argv[0] in HOST_COMMANDS:
            return super().run(argv, timeout, check, stdin, env)
        env = dict(env or {})
        home = env.get("TMPDIR") or tempfile.gettempdir()
        fd, counts = tempfile.mkstemp(prefix="counts-", suffix=".jsonl", dir=home)
        os.close(fd)
        try:
            guest_env = {**GUEST_ENV, "HOME": home, **env, "TOPFORMER_DEPLOY_COUNTS": counts}
            command = qemu.qemu_argv(self.qemu, self.core, self.sim_root, self.rootfs, self.plugin, Path(counts),
                                     list(argv), guest_env)
            result = self._run_guest(command, timeout)
        finally:
            Path(counts).unlink(missing_ok=True)
        return self._checked(RunResult(result.returncode, result.stdout, result.stderr), argv, check)

    def _run_guest(self, command: list[str], timeout: float) -> RunResult:
        """Run qemu, relaying the runner's per-inference progress lines (emulation takes seconds each)."""
        started = time.monotonic()
        proc = subprocess.Popen(command, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        stdout: list[str] = []
        reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
        reader.start()
        stderr = []
        try:
            for line in proc.stderr:
                match = _PROGRESS.match(line)
                if match:
                    self.say(f"{self.name}: inference {match[1]}/{match[2]} under emulation "
                             f"({time.monotonic() - started:.0f} s)")
                else:
                    stderr.append(line)
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DeviceError(f"{self.name}: no answer within {timeout:g} s") from None
        except BaseException:
            proc.kill()
            raise
        finally:
            reader.join(timeout=10)
        return RunResult(proc.returncode, "".join(stdout), "".join(stderr))

    def probe(self, script, timeout=60):
        """The conditions probe's sections, as a Linux board with these cores would print them."""
        cpu = cores.CORES[self.core]
        freq = "\n".join(f"{i} {cpu['max_khz']} {cpu['max_khz']} performance 1" for i in range(cpu["cores"]))
        return (f"@@arch\naarch64\n@@os\nLinux (qemu-user {self.qemu_version}, -cpu {self.core})\n"
                f"Debian GNU/Linux 12 (bookworm)\n@@hostname\nsim-{self.core}\n"
                f"@@dt_model\nsimulated {self.core} (like {cpu['board']})\n@@cpuinfo\n{cores.proc_cpuinfo(self.core)}"
                f"@@cpufreq\n{freq}\n@@thermal\n@@vcgencmd\n@@getprop\n@@thermalservice\n@@loadavg\n@@taskset\n@@end\n")

    def description(self) -> dict:
        cpu = cores.CORES[self.core]
        return {"simulated": True, "core": self.core, "qemu": self.qemu_version, "plugin_api": qemu.PLUGIN_API,
                "midr": f"0x{cpu['midr']:08x}", "features": sorted(cores.features(self.core)),
                "like": cpu["board"], "userland_runtimes": self.runtimes, "note": NOT_A_LATENCY}
