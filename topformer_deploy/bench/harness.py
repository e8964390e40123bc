"""The bench harness: put an artifact on a device, time it there under recorded conditions, build the result.

For each bench: take the device lock, record the device and its conditions, refuse a hot or throttled
start (unless ``allow_hot``), choose the engine (:mod:`.engines`: ``auto`` looks at the device), push the
runner (or the ``benchmark_model`` binary, ELF-checked and identified on the device) and the model to a
fresh temp dir, run it pinned to the chosen cores with ``taskset``, read back its one JSON document,
record the conditions again, and remove the temp dir - also on error and Ctrl-C.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifact import check_artifact, input_size_of, inputs_mismatch, now_iso, read_manifest, sha256_file
from ..errors import TopformerDeployError
from ..files import output_failure, write_atomic
from . import conditions as cond
from .binaries import remember
from .engines import ENGINES, EngineChoice, choose_engine
from .lock import device_lock
from .device_runner import POST_METHODS
from .result import (COMPARE_SCHEMA, SCHEMA_VERSION, build_result, make_config, post_summary,
                     summarize_instructions)
from .transports import DeviceError, RunResult, Transport, last_line

RUNNER = Path(__file__).with_name("device_runner.py")
#: seconds past --timeout after which the runner ends itself (in case the connection outlives the timeout)
RUNNER_GRACE = 30
FORMATS = {".tflite": "tflite", ".onnx": "onnx"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass
class BenchOptions:
    """How to run: the same settings for every engine and transport."""

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    cores: str = "big"            # big | little | all | comma list such as 4,5,6,7
    cooldown: float = 0.0         # seconds between repeats (and compare rounds)
    repeat: int = 1
    max_temp: float | None = 80.0
    allow_hot: bool = False
    engine: str = "auto"          # auto | python | benchmark_model (auto: chosen per device, see .engines)
    benchmark_binary: str | None = None   # local path; else $TOPFORMER_DEPLOY_BENCHMARK_MODEL, the cache, PATH
    python: str | None = None        # interpreter on the device; None: this one for local, python3 elsewhere
    timeout: float = 900.0        # one runner invocation
    seed: int = 0
    input_file: str | None = None     # .npy / .npz pushed to the runner (--input)
    save_output: str | None = None    # local path: the runner's output of the first repeat is pulled here
    profile_dir: str | None = None    # local dir: onnxruntime profile pulled here (python engine, ONNX)
    op_profiling: bool = False        # benchmark_model engine: --enable_op_profiling, rows in runner.benchmark_model.ops
    lock_timeout: float | None = None
    post: tuple[str, ...] = ()        # python engine: post-processing methods timed after every run (--post)


Progress = Callable[[str], None]


def artifact_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TopformerDeployError(f"{path}: not a .tflite or .onnx artifact")
    return fmt


def _remote_name(path: Path, fallback: str) -> str:
    return path.name if _SAFE_NAME.fullmatch(path.name) and not path.name.startswith("-") else fallback


def _check_options(options: BenchOptions) -> None:
    if options.runs < 1 or options.warmup < 0 or options.threads < 1 or options.repeat < 1:
        raise TopformerDeployError("runs, threads and repeat must be >= 1 and warmup >= 0")
    if options.engine not in ENGINES:
        raise TopformerDeployError(f"unknown engine {options.engine!r}: use {', '.join(ENGINES)}")
    if options.engine != "benchmark_model" and not RUNNER.is_file():
        raise TopformerDeployError(f"device runner missing from the installation: {RUNNER}")
    unknown = [m for m in options.post if m not in POST_METHODS]
    if unknown:
        raise TopformerDeployError(f"unknown post-processing method {unknown[0]!r}: use {', '.join(POST_METHODS)}")
    if options.post and options.engine == "benchmark_model":
        raise TopformerDeployError("--post needs --engine python (benchmark_model times the network only)")
    if options.input_file and not Path(options.input_file).is_file():
        raise TopformerDeployError(f"{options.input_file}: no such input file")


class _Session:
    """One device, locked, with a temp dir: runs the engine there as often as asked."""

    def __init__(self, transport: Transport, options: BenchOptions, tmp: str, progress: Progress,
                 choice: EngineChoice):
        self.t, self.o, self.tmp, self.say = transport, options, tmp, progress
        self.pin: list[str] = []
        self.post: dict[str, list[str]] = {}   # remote model -> its runner --post arguments
        self.remote_input = None
        self.local_names: dict[str, str] = {}     # device path -> the user's file, for the messages
        # TMPDIR and HOME: whatever the runtime writes there (onnxruntime's .ses file, its telemetry in
        # ~/.cache/Microsoft) goes with the temp dir instead of outliving the run in the device user's home
        self.env = {"TMPDIR": tmp, "HOME": tmp}
        self.tool: dict = {}
        self.python = options.python or transport.default_python
        if options.engine == "python":
            self.t.push(RUNNER, f"{tmp}/device_runner.py")
        else:
            self.t.push(choice.binary.path, f"{tmp}/benchmark_model")
            self.t.run(["chmod", "755", f"{tmp}/benchmark_model"], timeout=30)
            self.tool = self._identify_tool(choice)
        if options.input_file:
            suffix = Path(options.input_file).suffix or ".npy"
            self.remote_input = f"{tmp}/input{suffix}"
            self.t.push(Path(options.input_file), self.remote_input)
            self.local_names[self.remote_input] = str(options.input_file)

    def _identify_tool(self, choice: EngineChoice) -> dict:
        """Which benchmark tool the binary is (its ``--help``), refused when it cannot honour ``--threads``;
        a binary given by option or environment is remembered for the device's ABI once it passed."""
        from .benchmark_model import identify_tool

        binary = choice.binary
        result = self.t.run([f"{self.tmp}/benchmark_model", "--help"], timeout=60, check=False)
        tool = identify_tool(result.stdout + "\n" + result.stderr)
        if tool["flavor"] is None:
            detail = last_line(result.stderr + "\n" + result.stdout) or f"exit {result.returncode}"
            raise TopformerDeployError(f"{binary.path} is not LiteRT's or TFLite's benchmark_model: its --help "
                                       f"lists neither --enable_op_profiling nor --use_profiler ({detail})")
        if not tool["threads"]:
            raise TopformerDeployError(
                f"{binary.path} is LiteRT's CompiledModel benchmark_model built before 2025-10 (no "
                "--compiler_cache_path): it applies --num_threads only since 2025-09-25, so the thread count cannot "
                "be set with it and no --threads figure would be honest; use TFLite's benchmark_model or a newer "
                "LiteRT build")
        tool.update(sha256=sha256_file(binary.path), abi=binary.target.abi, source=binary.source)
        if remember(binary, tool):
            tool["remembered"] = True
        return tool

    def set_cores(self, cores: list[int] | None, has_taskset: bool) -> str | None:
        """Pin later runs to ``cores`` with taskset (hex mask: util-linux and Android toybox both take it)."""
        self.pin = []
        if not cores or not self.t.pinning:
            return None
        if not has_taskset:
            self.say(f"taskset not found on {self.t.name}: running unpinned")
            return None
        self.pin = ["taskset", format(sum(1 << c for c in cores), "x")]
        return "taskset"

    def push_model(self, path: Path, index: int) -> str:
        """Push ``path`` as ``<index>-<name>`` (two builds of the same name can be compared)."""
        remote = f"{self.tmp}/{index}-{_remote_name(path, f'model{path.suffix.lower()}')}"
        self.t.push(path, remote)
        self.local_names[remote] = str(path)
        return remote

    def said(self, text: str) -> str:
        """``text`` from the device with its temp paths replaced by the user's files (their names mean nothing)."""
        for remote, local in sorted(self.local_names.items(), key=lambda item: -len(item[0])):
            text = text.replace(remote, local)
        return text.replace(self.tmp, "<device temp dir>")

    def timed_run(self, argv: list[str]) -> RunResult:
        """Run one timed invocation with the session's environment. On a remote device a timeout or Ctrl-C ends only
        the local ssh/adb client, so its pid is recorded in the temp dir and, when the call fails, whatever still runs
        under it is killed there (by that pid, if its command line still names this temp dir) before the temp dir
        goes; the python runner also ends itself when its connection closes (its watchdog)."""
        if not self.t.remote:
            return self.t.run(argv, timeout=self.o.timeout, check=False, env=self.env)
        pidfile = f"{self.tmp}/run.pid"
        try:
            return self.t.run(["sh", "-c", 'echo $$ > "$0" && exec "$@"', pidfile, *argv], timeout=self.o.timeout,
                              check=False, env=self.env)
        except BaseException:
            kill = ('pid=$(cat "$0" 2>/dev/null) && grep -qF -- "$1" "/proc/$pid/cmdline" 2>/dev/null && '
                    'kill -9 "$pid"; true')
            with contextlib.suppress(DeviceError):
                self.t.run(["sh", "-c", kill, pidfile, self.tmp], timeout=30, check=False)
            raise

    def run_once(self, remote_model: str, save_output: bool) -> dict:
        if self.o.engine == "python":
            return self._run_python(remote_model, save_output)
        return self._run_benchmark_model(remote_model)

    def _run_python(self, remote_model: str, save_output: bool) -> dict:
        o = self.o
        argv = [*self.pin, self.python, f"{self.tmp}/device_runner.py",
                "--model", remote_model, "--threads", str(o.threads), "--warmup", str(o.warmup),
                "--runs", str(o.runs), "--seed", str(o.seed)]
        if self.remote_input:
            argv += ["--input", self.remote_input]
        if save_output:
            argv += ["--save-output", f"{self.tmp}/output.npy"]
        if o.profile_dir and o.engine == "python":
            argv += ["--profile", f"{self.tmp}/profile"]
        argv += self.post.get(remote_model, [])
        argv += ["--time-limit", f"{o.timeout + RUNNER_GRACE:g}"]  # the runner's own end, should the link stay up
        result = self.timed_run(argv)
        doc = _runner_json(result.stdout)
        if doc is None:
            detail = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"])[-1]
            detail = self.said(detail)
            if result.returncode == 127 or "not found" in detail:
                raise DeviceError(f"{self.t.name}: cannot start {self.python!r} ({detail.strip()}): install Python 3 "
                                  "with numpy and ai-edge-litert or onnxruntime, pass --python PATH, or use "
                                  "--engine benchmark_model")
            raise DeviceError(f"{self.t.name}: the runner gave no result (exit {result.returncode}): {detail.strip()}")
        if not doc.get("ok"):
            kind, error = doc.get("error_kind", "runtime_error"), self.said(doc.get("error", "unknown error"))
            if kind == "no_runtime":
                raise DeviceError(f"{self.t.name}: no usable runtime for this model: {error}")
            if kind in ("bad_model", "bad_input"):
                raise TopformerDeployError(f"{self.t.name}: {error}")
            raise DeviceError(f"{self.t.name}: the runner failed: {error}")
        return doc

    def _run_benchmark_model(self, remote_model: str) -> dict:
        from .benchmark_model import benchmark_model_argv, parse_benchmark_model

        o = self.o
        argv = benchmark_model_argv(f"{self.tmp}/benchmark_model", remote_model, o.threads, o.warmup, o.runs,
                                    op_profiling=o.op_profiling, flavor=self.tool["flavor"])
        result = self.timed_run([*self.pin, *argv])
        parsed = parse_benchmark_model(result.stdout + "\n" + result.stderr)
        latencies = _benchmark_model_latencies(parsed)
        if parsed.get("error") or not latencies:
            detail = parsed.get("error") or (result.stderr.strip().splitlines() or ["no timings in its output"])[-1]
            detail = self.said(detail)
            raise DeviceError(f"{self.t.name}: benchmark_model failed (exit {result.returncode}): {detail}")
        tool = {"tflite": "TFLite benchmark_model", "litert": "LiteRT benchmark_model (CompiledModel)"}
        return {"runner_version": None, "ok": True,
                "runtime": {"name": tool[self.tool["flavor"]], "version": f"sha256:{self.tool['sha256'][:12]}"},
                "threads": o.threads, "warmup": o.warmup, "runs": o.runs, "latencies_ms": latencies,
                "load_ms": parsed.get("init_ms"), "first_ms": parsed.get("first_inference_ms"),
                "benchmark_model": {"tool": self.tool, **{k: v for k, v in parsed.items()
                                    if o.op_profiling or k not in ("ops", "ops_by_type", "op_profile")}},
                "model": {"path": remote_model, "format": "tflite"}}


def _benchmark_model_latencies(parsed: dict) -> list[float]:
    """benchmark_model prints no per-run times, only a summary: one sample (its median, else its mean)
    per invocation. Use --repeat N to get N samples for the gate."""
    runs = parsed.get("inference") or {}
    value = runs.get("median_ms", runs.get("avg_ms")) if isinstance(runs, dict) else None
    value = value if value is not None else parsed.get("inference_avg_ms")
    return [float(value)] if value is not None else []


def _runner_json(stdout: str) -> dict | None:
    """The runner's one JSON document (tolerating noise lines a device shell may add around it)."""
    text = stdout.strip()
    for candidate in (text, *reversed([ln for ln in text.splitlines() if ln.lstrip().startswith("{")])):
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and "ok" in doc:
            return doc
    return None


def device_summary(transport: Transport, snapshot: dict) -> dict:
    """The result's ``device`` block: what the device is, with a stable id (adb serial, else hostname)."""
    if transport.kind == "adb":
        device_id = getattr(transport, "serial", None) or snapshot.get("serial")
    else:
        device_id = snapshot.get("hostname") or snapshot.get("serial") or transport.name
    return {"transport": transport.kind, "target": transport.name, "id": device_id,
            "model": snapshot.get("model"), "soc": snapshot.get("soc"), "arch": snapshot.get("arch"),
            "abi": snapshot.get("abi"), "android": snapshot.get("android"),
            "os": snapshot.get("os"), "hostname": snapshot.get("hostname"), "cpus": snapshot.get("cpus") or [],
            "clusters": cond.core_clusters(snapshot.get("cpus") or []),
            **({"simulation": transport.description()} if transport.description() else {})}


def _check_start(snapshot: dict, options: BenchOptions, name: str) -> list[str]:
    """Reasons the device is hot/throttled at the start (empty if fine); raise unless ``allow_hot``."""
    reasons = cond.thermal_verdict(snapshot, options.max_temp)["reasons"]
    if reasons and not options.allow_hot:
        raise DeviceError(f"{name}: {'; '.join(reasons)}; let it cool down (or pass --allow-hot to run "
                          "anyway, flagged)")
    return reasons


def _conditions(before: dict, after: dict, cores, pinned_with, options: BenchOptions, hot_start: list) -> dict:
    hot_after = cond.thermal_verdict(after, options.max_temp)["reasons"] if after else []
    last = after or before
    return {"cores": cores, "pinned_with": pinned_with, "taskset": before.get("taskset"),
            "temp_before_c": before.get("temp_c"), "temp_after_c": after.get("temp_c") if after else None,
            "throttled": last.get("throttled"), "throttled_flags": last.get("throttled_flags") or [],
            "throttled_before": before.get("throttled"),
            "android_thermal_status_before": before.get("android_thermal_status"),
            "android_thermal_status_after": (after or {}).get("android_thermal_status"),
            "loadavg": before.get("loadavg"), "cooldown_s": options.cooldown, "repeat": options.repeat,
            "max_temp_c": options.max_temp, "hot": bool(hot_start or hot_after),
            "hot_reasons": [*hot_start, *hot_after], "allow_hot": options.allow_hot,
            "thermal_zones_before": before.get("thermal_zones") or {},
            "thermal_zones_after": (after or {}).get("thermal_zones") or {},
            "cpus_after": [{k: c.get(k) for k in ("cpu", "cur_khz", "governor")}
                           for c in (after or {}).get("cpus", [])],
            "notes": before.get("notes") or []}


def _model_entry(path: Path, manifest: dict | None) -> dict:
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "manifest": manifest}


def _runner_summary(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("latencies_ms", "instructions", "post")}


def post_argv(manifest: dict | None, methods) -> list[str]:
    """The runner's ``--post`` arguments: the methods, with the class map size (the network input) and the
    logits' layout from the artifact's manifest when there is one."""
    if not methods:
        return []
    argv = ["--post", ",".join(methods)]
    if manifest:
        h, w = input_size_of(manifest)
        argv += ["--post-size", f"{h}x{w}"]
        if (manifest.get("output") or {}).get("layout") in ("NCHW", "NHWC"):
            argv += ["--post-layout", manifest["output"]["layout"]]
    return argv


def _result(path, manifest, fmt, options, device, before, after, cores, pinned, hot, runs: list[dict],
            partial: bool, choice: EngineChoice) -> dict:
    latencies = [x for r in runs for x in r["latencies_ms"]]
    first = runs[0]
    config = make_config(manifest, fmt, options.threads, options.engine, (first.get("model") or {}).get("inputs"))
    config.update(engine_requested=choice.requested, engine_reason=choice.reason)
    repeats = [{"runs": len(r["latencies_ms"]), "load_ms": r.get("load_ms"), "first_ms": r.get("first_ms"),
                "p50": sorted(r["latencies_ms"])[len(r["latencies_ms"]) // 2]} for r in runs]
    return build_result(config=config, device=device, runtime=first.get("runtime") or {},
                        conditions=_conditions(before, after, cores, pinned, options, hot),
                        warmup=options.warmup, runs=len(latencies), latencies_ms=latencies,
                        load_ms=first.get("load_ms"), first_ms=first.get("first_ms"),
                        model=_model_entry(path, manifest), runner=_runner_summary(first),
                        repeats=repeats, partial=partial,
                        instructions=summarize_instructions(runs, manifest, device), post=post_summary(runs))


def run_bench(model: str | Path, transport: Transport, options: BenchOptions | None = None,
              progress: Progress | None = None, on_partial: Callable[[dict], None] | None = None) -> dict:
    """Time one artifact on ``transport``; return the bench result document (:mod:`.result`).

    ``on_partial(doc)`` is called after every repeat with the result so far (``partial: true``) so a
    caller can save it before an interruption.
    """
    partial_cb = (lambda docs: on_partial(docs[0])) if on_partial else None
    return _bench([Path(model)], transport, options or BenchOptions(), progress, partial_cb)[0]


def run_compare(model_a: str | Path, model_b: str | Path, transport: Transport,
                options: BenchOptions | None = None, rounds: int = 10, progress: Progress | None = None,
                on_partial: Callable[[dict], None] | None = None) -> dict:
    """Interleaved A/B: ``rounds`` rounds, each runs A then B (alternating which goes first) for
    ``options.runs`` runs; drift and heat hit both alike. Returns ``{"schema": bench-compare, "a", "b"}``."""
    options = options or BenchOptions()

    def wrap(docs, partial):
        return {"schema": COMPARE_SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(),
                "interleave": {"rounds": rounds, "runs_per_round": options.runs, "order": "ABBA"},
                "partial": partial, "a": docs[0], "b": docs[1]}

    partial_cb = (lambda docs: on_partial(wrap(docs, True))) if on_partial else None
    docs = _bench([Path(model_a), Path(model_b)], transport, options, progress, partial_cb, rounds=rounds)
    return wrap(docs, False)


def _bench(paths: list[Path], transport: Transport, options: BenchOptions, progress: Progress | None,
           on_partial, rounds: int | None = None) -> list[dict]:
    say = progress or (lambda msg: None)
    _check_options(options)
    transport.check_options(options)
    for p in paths:
        if not p.is_file():
            raise TopformerDeployError(f"{p}: no such model file")
    formats = [artifact_format(p) for p in paths]
    manifests = [read_manifest(p, required=False) for p in paths]
    for path, manifest in zip(paths, manifests):
        if manifest is not None:   # before anything is timed: a result is filed under the manifest's configuration
            check_artifact(path, manifest)
    with device_lock(transport.name, options.lock_timeout,
                     on_wait=lambda who: say(f"waiting for {transport.name}: another bench holds it ({who})")):
        say(f"reading the conditions on {transport.name}")
        before = cond.collect_conditions(transport)
        cores = cond.select_cores(before, options.cores)
        device = device_summary(transport, before)
        hot = _check_start(before, options, transport.name)
        choice = choose_engine(transport, before, options.engine, formats, options.python, options.benchmark_binary)
        options = dataclasses.replace(options, engine=choice.engine)
        say(f"engine: {choice.engine} ({choice.reason})")
        if options.post and choice.engine != "python":
            raise TopformerDeployError(f"--post needs the python runner on the device, and the engine is "
                                       f"{choice.engine} ({choice.reason})")
        runs: list[list[dict]] = [[] for _ in paths]
        total = rounds or options.repeat
        with transport.temp_dir() as tmp:
            session = _Session(transport, options, tmp, say, choice)
            pinned = session.set_cores(cores, bool(before.get("taskset")))
            say(f"pushing {len(paths)} model(s) to {transport.name}")
            remote = [session.push_model(p, i) for i, p in enumerate(paths)]
            session.post = {r: post_argv(m, options.post) for r, m in zip(remote, manifests)}
            for step in range(total):
                if step and options.cooldown > 0:
                    say(f"cooling down {options.cooldown:g} s")
                    time.sleep(options.cooldown)
                order = range(len(paths)) if step % 2 == 0 else reversed(range(len(paths)))
                for i in order:
                    say(f"{'round' if rounds else 'run'} {step + 1}/{total}: {paths[i].name} "
                        f"({options.warmup} warmup + {options.runs} runs)")
                    first = not runs[i]
                    runs[i].append(session.run_once(remote[i], first and bool(options.save_output)))
                    if first:
                        _check_loaded(paths[i], manifests[i], runs[i][-1])
                        _pull_extras(transport, tmp, runs[i][-1], options)
                if on_partial and step + 1 < total:
                    on_partial([_result(p, m, f, options, device, before, {}, cores, pinned, hot, r, True, choice)
                                for p, m, f, r in zip(paths, manifests, formats, runs)])
        after = cond.collect_conditions(transport)
    return [_result(p, m, f, options, device, before, after, cores, pinned, hot, r, False, choice)
            for p, m, f, r in zip(paths, manifests, formats, runs)]


def _check_loaded(path: Path, manifest: dict | None, doc: dict) -> None:
    """The inputs the runtime loaded (the runner reports them) must be those the manifest records."""
    inputs = (doc.get("model") or {}).get("inputs")
    problem = inputs_mismatch(manifest, inputs) if manifest and inputs else None
    if problem:
        runtime = (doc.get("runtime") or {}).get("name", "the runtime")
        raise TopformerDeployError(f"{path} does not match its manifest as {runtime} loads it: {problem}; "
                                   "export it again")


def _pull_extras(transport: Transport, tmp: str, doc: dict, options: BenchOptions) -> None:
    """Bring back what the first run wrote on the device: the output array and the operator profile. Each comes
    through a local temp file and is written whole or not at all; one that cannot be brought back is said in
    ``pull_error`` (the measurement stands: results are never lost to an auxiliary file)."""
    profile = doc.get("profile") or {}
    wanted = []
    if options.save_output and doc.get("outputs_saved"):
        wanted.append(("--save-output", f"{tmp}/output.npy", Path(options.save_output), doc, "outputs_saved"))
    if options.profile_dir and profile.get("file"):
        target = Path(options.profile_dir) / Path(profile["file"]).name
        wanted.append(("--profile-dir", profile["file"], target, profile, "local_file"))
    for what, remote, target, entry, key in wanted:
        entry[key] = None
        try:
            with tempfile.TemporaryDirectory(prefix="topformer-deploy-pull.") as scratch:
                transport.pull(remote, Path(scratch) / target.name)
                write_atomic(target, (Path(scratch) / target.name).read_bytes())
        except (OSError, TopformerDeployError) as exc:
            doc["pull_error"] = output_failure(what, target, exc)
            continue
        entry[key] = str(target)
