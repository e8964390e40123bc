"""LiteRT's native ``benchmark_model``: its command line, and parsers for what it and onnxruntime print.

``parse_benchmark_model`` reads the stdout of every benchmark_model generation seen in the wild
(2019 "Average inference timings", 2.x "Inference timings in us", 2025 LiteRT "BENCHMARK RESULTS"
in ms; plain, ``INFO:``, ``INFO: [file.cc:N]`` and logcat prefixes; op-profiling tables in stdout
and CSV mode). ``parse_onnxruntime_profile`` reads onnxruntime profiler JSON of any era and
``parse_onnxruntime_perf_test`` the stdout of ``onnxruntime_perf_test``. All times are returned in ms.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict

_PREFIX = re.compile(
    r"^(?:\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+(?P<lc>[VDIWEF])\s+[^:]*?\s*:\s?)?"  # logcat
    r"(?:(?P<level>INFO|ERROR|WARNING|WARN|VERBOSE|DEBUG|FATAL):\s*(?:\[[^\]]*\]\s*)?)?")   # tflite/litert
_STAT = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(-?[\d.]+(?:[eE][-+]?\d+)?)")
_RESULTS_MS = {
    "Model initialization": "init_ms", "Warmup (first)": "first_inference_ms", "Warmup (avg)": "warmup_avg_ms",
    "Inference (avg)": "inference_avg_ms", "Inference (min)": "min_ms", "Inference (max)": "max_ms",
    "Inference (std)": "std_ms",
}
_TIMINGS_US = {"Init": "init_ms", "First inference": "first_inference_ms", "Warmup (avg)": "warmup_avg_ms",
               "Warmup": "warmup_avg_ms", "Inference (avg)": "inference_avg_ms", "no stats": "inference_avg_ms"}
_COLUMNS = {"node type": "node_type", "start": "start_ms", "first": "first_ms", "avg ms": "avg_ms",
            "avg_ms": "avg_ms", "%": "pct", "avg %": "pct", "cdf%": "cdf_pct", "cdf %": "cdf_pct",
            "mem kb": "mem_kb", "times called": "times_called", "name": "name", "count": "count"}
_TABLES = {"Run Order": "run_order", "Top by Computation Time": "top", "Summary by node type": "summary"}


def benchmark_model_argv(binary: str, model: str, threads: int = 1, warmup: int = 10, runs: int = 50,
                         op_profiling: bool = False, use_xnnpack: bool | None = True,
                         flavor: str = "tflite", profile_csv: str | None = None,
                         extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """argv for exactly ``warmup`` + ``runs`` invocations (the time-based minimums are switched off).

    ``flavor="tflite"`` is tensorflow/lite/tools/benchmark:benchmark_model; ``"litert"`` is the 2025
    litert/tools:benchmark_model (CompiledModel), whose profiler flag is ``--use_profiler`` and which
    has no ``--use_xnnpack``. ``profile_csv`` writes the op profile as CSV to that device path.
    """
    if threads < 1 or warmup < 0 or runs < 1:
        raise ValueError(f"need threads >= 1, warmup >= 0, runs >= 1 (got {threads}, {warmup}, {runs})")
    if flavor not in ("tflite", "litert"):
        raise ValueError(f"flavor must be 'tflite' or 'litert', got {flavor!r}")
    argv = [binary, f"--graph={model}", f"--num_threads={threads}",
            f"--warmup_runs={warmup}", "--warmup_min_secs=0",
            f"--num_runs={runs}", "--min_secs=0", "--max_secs=100000"]
    if flavor == "tflite":
        if use_xnnpack is not None:
            argv.append(f"--use_xnnpack={str(use_xnnpack).lower()}")
        if op_profiling:
            argv.append("--enable_op_profiling=true")
            if profile_csv:
                argv += ["--op_profiling_output_mode=csv", f"--op_profiling_output_file={profile_csv}"]
    else:
        argv.append("--use_cpu=true")
        if op_profiling:
            argv.append("--use_profiler=true")
    return argv + list(extra)


#: The first flag LiteRT's CompiledModel tool gained (2025-10-17) after it began to apply ``--num_threads`` to its
#: CPU accelerator (2025-09-25, "Add CPU thread configuration to LiteRT benchmark tool"). Before that the flag
#: was parsed by the shared BenchmarkModel base class and ignored: the thread count could not be set.
LITERT_THREADS_MARKER = "compiler_cache_path"


def help_flags(text: str) -> set[str]:
    """The flag names a benchmark tool's ``--help`` lists (``--name=default<TAB>type...`` lines)."""
    return set(re.findall(r"--([a-z][a-z0-9_]*)=", text))


def identify_tool(help_text: str) -> dict:
    """Which benchmark tool printed this ``--help``: ``{"flavor": "tflite"|"litert"|None, "threads": bool}``.

    ``tflite`` (tensorflow/lite/tools/benchmark) has ``--enable_op_profiling`` and always honours
    ``--num_threads``; ``litert`` (litert/tools, the CompiledModel API) has ``--use_profiler`` and honours
    ``--num_threads`` only in builds that also list :data:`LITERT_THREADS_MARKER`.
    """
    flags = help_flags(help_text)
    if "enable_op_profiling" in flags:
        return {"flavor": "tflite", "threads": "num_threads" in flags}
    if "use_profiler" in flags:
        return {"flavor": "litert", "threads": LITERT_THREADS_MARKER in flags and "num_threads" in flags}
    return {"flavor": None, "threads": False}


def split_prefix(line: str) -> tuple[str | None, str]:
    """(level, message) with logcat / ``INFO:`` / ``INFO: [file.cc:N]`` prefixes and indentation removed."""
    text = line.rstrip("\r\n").lstrip()
    m = _PREFIX.match(text)
    level = m.group("level") or {"E": "ERROR", "W": "WARNING", "I": "INFO"}.get(m.group("lc") or "")
    return level or None, text[m.end():]


def _number(text: str) -> float | None:
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        return None


def _stats_ms(message: str) -> dict:
    """``count=50 first=... avg=2.95034e+06 std=... p5=... median=... p95=...`` (µs) -> ms dict."""
    stats = {}
    for key, value in _STAT.findall(message):
        stats["count" if key == "count" else key + "_ms"] = int(float(value)) if key == "count" else float(value) / 1e3
    return stats


def _header(fields: list[str]) -> list[str] | None:
    names = [_COLUMNS.get(f.strip("[]").strip().lower()) for f in fields]
    return names if names and names[0] == "node_type" and None not in names else None


def _row(fields: list[str], columns: list[str], csv: bool) -> dict | None:
    if csv and len(fields) > len(columns):  # the unquoted node type contains ", "
        cut = len(fields) - len(columns) + 1
        fields = [", ".join(fields[:cut])] + fields[cut:]
    if len(fields) != len(columns):
        return None
    row = {}
    for column, value in zip(columns, fields):
        if column in ("node_type", "name"):
            row[column] = value.replace("\t", ",").strip()  # CSV mode swaps commas in names for TABs
        elif column in ("times_called", "count"):
            number = _number(value)
            row[column] = None if number is None else int(number)
        else:
            row[column] = _number(value)
    return row


def _new_profile() -> dict:
    return {"run_order": [], "top": [], "summary": [], "nodes_executed": None, "timings": None}


def parse_benchmark_model(text: str) -> dict:
    """Everything benchmark_model reports, times in ms.

    Keys: ``params`` (the ``Name: [value]`` dump), ``warmup`` / ``inference`` (count, first, curr,
    min, max, avg, std and p5/median/p95 when printed), ``init_ms``, ``first_inference_ms``,
    ``warmup_avg_ms``, ``inference_avg_ms``, ``model_size_mb``, ``memory``, ``delegate``,
    ``op_profile`` ({"init"|"run": {run_order, top, summary, nodes_executed, timings}}), ``ops`` (the
    run-order rows of the regular runs: node_type, name, avg_ms, pct, times_called, ...),
    ``ops_by_type`` (summary rows), ``errors`` and ``error`` (None unless the run failed).
    """
    result = {"params": OrderedDict(), "warmup": None, "inference": None, "init_ms": None,
              "first_inference_ms": None, "warmup_avg_ms": None, "inference_avg_ms": None,
              "model_size_mb": None, "memory": {}, "delegate": None, "op_profile": {},
              "errors": [], "error": None}
    run_stats, phase_hint = [], []
    section, table, columns, csv = "run", None, None, False
    failed = False
    for raw in text.splitlines():
        level, msg = split_prefix(raw)
        if columns is not None:  # inside an op table: rows until a blank or non-row line
            fields = msg.split(", ") if csv else [f for f in msg.split("\t")]
            while fields and not csv and not fields[0].strip():
                fields.pop(0)
            row = _row([f.strip(" ") if csv else f.strip() for f in fields], columns, csv) if msg.strip() else None
            if row is not None:
                result["op_profile"].setdefault(section, _new_profile())[table].append(row)
                continue
            columns = None
        if not msg.strip():
            continue
        if level == "ERROR" or msg.startswith(("Failed to", "Benchmarking failed")):
            result["errors"].append(msg.strip())
            failed = failed or msg.startswith("Benchmarking failed")
            continue
        if "Profiling Info for Benchmark Initialization" in msg:
            section = "init"
            continue
        if "Profiling Info for Regular Benchmark Runs" in msg:
            section = "run"
            continue
        banner = re.match(r"^=+\s*(.*?)\s*=+$", msg.strip())
        if banner:
            table = _TABLES.get(banner.group(1))
            if banner.group(1) == "BENCHMARK RESULTS":
                table = None
            continue
        if table is not None and columns is None:
            csv = msg.startswith("node type,")
            candidate = _header([f.strip() for f in (msg.split(",") if csv else msg.split("\t")) if f.strip()])
            if candidate:
                columns = candidate
                continue
        m = re.match(r"Number of nodes executed:\s*(\d+)", msg)
        if m:
            result["op_profile"].setdefault(section, _new_profile())["nodes_executed"] = int(m.group(1))
            continue
        if msg.startswith("Timings (microseconds):"):
            result["op_profile"].setdefault(section, _new_profile())["timings"] = _stats_ms(msg)
            continue
        if msg.startswith("Memory (bytes):"):
            continue
        if msg.startswith("Running benchmark for at least"):
            phase_hint.append(len(run_stats))
            continue
        if msg.startswith("count="):
            run_stats.append(_stats_ms(msg))
            continue
        if _parse_summary_line(msg, result):
            continue
        m = re.match(r"^(.+?)\s*:\s*\[(.*)\]$", msg.strip())
        if m and not msg.lstrip().startswith("["):
            result["params"][m.group(1).strip()] = m.group(2)
    _assign_run_stats(result, run_stats, phase_hint)
    run = result["op_profile"].get("run", {})
    result["ops"] = run.get("run_order") or run.get("top") or []
    result["ops_by_type"] = run.get("summary", [])
    if failed or (result["errors"] and result["inference"] is None and result["inference_avg_ms"] is None):
        result["error"] = "; ".join(result["errors"]) or "benchmark_model failed"
    return result


def _assign_run_stats(result: dict, run_stats: list[dict], phase_hint: list[int]) -> None:
    """The stats line after the 1st 'Running benchmark' line is the warm-up, the last one the runs."""
    if not run_stats:
        return
    if len(run_stats) >= 2:
        result["warmup"], result["inference"] = run_stats[0], run_stats[-1]
    elif len(phase_hint) == 1 and phase_hint[0] == 0 and result["inference_avg_ms"] is None:
        result["warmup"] = run_stats[0]  # only the warm-up ran (the tool stopped or the paste was cut)
    else:
        result["inference"] = run_stats[0]
    if result["inference"] and result["inference_avg_ms"] is None:
        result["inference_avg_ms"] = result["inference"].get("avg_ms")
    warmup = result["warmup"] or {}
    if result["first_inference_ms"] is None:  # the 2019 format prints the single warm-up run as curr=
        single = warmup.get("curr_ms") if warmup.get("count") == 1 else None
        result["first_inference_ms"] = warmup.get("first_ms", single)


def _parse_summary_line(msg: str, result: dict) -> bool:
    """Summary, memory and delegate lines of every era; True when ``msg`` was one of them."""
    memory = result["memory"]
    m = re.match(r"(Average )?[Ii]nference timings in us:\s*(.*)", msg)
    if m:
        for key, value in re.findall(r"([A-Za-z][A-Za-z ()]*?):\s*(-?[\d.]+(?:[eE][-+]?\d+)?)", m.group(2)):
            if key.strip() in _TIMINGS_US:
                result[_TIMINGS_US[key.strip()]] = float(value) / 1e3
        return True
    m = re.match(r"(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \((?:avg|min|max|std)\)):"
                 r"\s*(-?[\d.]+(?:[eE][-+]?\d+)?)(?:\s*ms)?(?:\s*\((\d+) runs\))?", msg)
    if m:  # LiteRT 2025 "BENCHMARK RESULTS" block, already in ms
        key = _RESULTS_MS[m.group(1)]
        if key in ("min_ms", "max_ms", "std_ms"):
            result.setdefault("results_block", {})[key] = float(m.group(2))
        elif result.get(key) is None:  # the µs lines, when present, are more precise
            result[key] = float(m.group(2))
        return True
    m = re.match(r"Initialized session in\s*([\d.]+)\s*ms", msg)
    if m:
        result["init_ms"] = result["init_ms"] or float(m.group(1))
        return True
    m = re.match(r"The input model file size \(MB\):\s*([\d.]+)", msg)
    if m:
        result["model_size_mb"] = float(m.group(1))
        return True
    m = re.match(r"(Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):"
                 r"\s*init=([\d.eE+-]+)\s+overall=([\d.eE+-]+)", msg)
    if m:
        memory.update(kind="peak" if m.group(1).startswith("Peak") else "delta",
                      init_mb=float(m.group(2)), overall_mb=float(m.group(3)))
        return True
    m = re.match(r"(?:Overall peak memory footprint \(MB\) via periodic monitoring|Peak memory):\s*([\d.]+)", msg)
    if m:
        memory["peak_mb"] = float(m.group(1))
        return True
    m = re.match(r"(Init|Overall) footprint:\s*([\d.]+)\s*MB", msg)
    if m:
        memory.setdefault("kind", "footprint")
        memory[m.group(1).lower() + "_mb"] = float(m.group(2))
        return True
    m = re.match(r"[-+]\s*(VmRSS|RssAnnon|RssFile \+ RssShmem)\s*:\s*([\d.]+)\s*MB", msg)
    if m:
        key = {"VmRSS": "vm_rss_mb", "RssAnnon": "rss_anon_mb"}.get(m.group(1), "rss_file_shmem_mb")
        memory[key] = float(m.group(2))
        return True
    m = re.match(r"Throughput:\s*([\d.]+)\s*MB/s", msg)
    if m:
        result["throughput_mb_s"] = float(m.group(1))
        return True
    m = re.match(r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) "
                 r"executed by the delegate(?: w/ (\d+) delegate kernels)?", msg)
    if m:
        result["delegate"] = {"name": m.group(1), "full": m.group(2) == "completely",
                              "kernels": int(m.group(3)) if m.group(3) else None}
        return True
    m = re.match(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node", msg)
    if m:
        result["delegate"] = {"name": m.group(3), "full": m.group(1) == m.group(2), "kernels": None,
                              "nodes": int(m.group(1)), "of_nodes": int(m.group(2))}
        return True
    return msg.startswith(("Created TensorFlow Lite", "Initialized TensorFlow Lite", "Note: as the benchmark",
                           "Memory status at the end", "Memory Usage:", "Peak memory usage not available"))


# -------------------------------------------------------------------------------- onnxruntime
def _profile_events(text_or_events) -> list[dict]:
    if isinstance(text_or_events, list):
        return text_or_events
    text = text_or_events.strip()
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else data.get("traceEvents", [data])
    except json.JSONDecodeError:
        pass
    events = []
    for line in text.splitlines():  # snippets: one event per line, trailing commas, maybe cut short
        line = line.strip().rstrip(",").strip()
        if line in ("", "[", "]"):
            continue
        try:
            event = json.loads(line.lstrip("[").rstrip("]") if line.startswith("[") else line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def parse_onnxruntime_profile(text_or_events) -> list[dict]:
    """Kernel events of an onnxruntime profile (a file's text, a snippet or a list of events).

    -> [{node, op_type, provider, dur_ms, ts_us, thread, node_index, input_shapes, output_shapes}];
    fence and session events are dropped; ``node`` is None where old ORT left node names empty.
    """
    rows = []
    for event in _profile_events(text_or_events):
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = event.get("args") or {}
        rows.append({
            "node": name[: -len("_kernel_time")] or None, "op_type": args.get("op_name"),
            "provider": args.get("provider"), "dur_ms": float(event.get("dur", 0)) / 1e3,
            "ts_us": event.get("ts"), "thread": event.get("tid"),
            "node_index": int(args["node_index"]) if str(args.get("node_index", "")).isdigit() else None,
            "input_shapes": args.get("input_type_shape"), "output_shapes": args.get("output_type_shape")})
    return rows


def summarize_onnxruntime_profile(rows: list[dict]) -> list[dict]:
    """Per node: calls, total and mean kernel time (ms), slowest first."""
    table = OrderedDict()
    for row in rows:
        key = (row["node"], row["op_type"])
        entry = table.setdefault(key, {"node": row["node"], "op_type": row["op_type"], "provider": row["provider"],
                                       "calls": 0, "total_ms": 0.0})
        entry["calls"] += 1
        entry["total_ms"] += row["dur_ms"]
    for entry in table.values():
        entry["avg_ms"] = entry["total_ms"] / entry["calls"]
    return sorted(table.values(), key=lambda e: -e["total_ms"])


_PERF_TEST_KEYS = {
    "Session creation time cost": "session_creation_ms", "First inference time cost": "first_inference_ms",
    "Total inference time cost": "total_inference_ms", "Total inference requests": "requests",
    "Average inference time cost total": "avg_ms", "Average inference time cost": "avg_ms",
    "Total inference run time": "total_run_ms", "Number of inferences per second": "inferences_per_s",
    "Avg CPU usage": "cpu_usage_pct", "Peak working set size": "peak_working_set_bytes", "Runs": "runs",
    "Min Latency": "min_ms", "Max Latency": "max_ms", "P50 Latency": "p50_ms", "P90 Latency": "p90_ms",
    "P95 Latency": "p95_ms", "P99 Latency": "p99_ms", "P999 Latency": "p999_ms",
}


def parse_onnxruntime_perf_test(text: str) -> list[dict]:
    """``onnxruntime_perf_test`` stdout -> one dict per run (a new run starts at "Session creation"),
    times in ms whatever unit was printed; the ``# command`` line before a run is kept as ``command``."""
    runs, current, command = [], None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            command = stripped.lstrip("#").strip() or None
            continue
        m = re.match(r"^([A-Za-z][A-Za-z0-9 ]*?)\s*:\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s*(s|ms|%|bytes)?\s*$", stripped)
        if not m or m.group(1) not in _PERF_TEST_KEYS:
            continue
        key, value, unit = _PERF_TEST_KEYS[m.group(1)], float(m.group(2)), m.group(3)
        if key == "session_creation_ms" or current is None:
            current = {"command": command}
            runs.append(current)
        if key.endswith("_ms") and unit == "s":
            value *= 1e3
        current[key] = int(value) if key in ("requests", "runs", "peak_working_set_bytes") else value
    return runs
