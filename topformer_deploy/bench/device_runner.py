#!/usr/bin/env python3
"""Device-side latency runner: time one TFLite or ONNX model with whatever runtime the device has.

This file is pushed to the device and run there on its own, so it needs only the standard library,
numpy and the runtime it drives (ai_edge_litert, tflite_runtime, tensorflow.lite or onnxruntime).
It stays Python 3.8 compatible and imports nothing from the topformer_deploy package.

It prints exactly ONE JSON document on stdout, also on failure (``"ok": false`` with a one-line
``error`` and an ``error_kind``); exit code 0 on success, 2 on failure, 130 on Ctrl-C. Anything a
runtime writes to stdout at the C level is sent to stderr so that the JSON document stays alone.
Besides the fields of the protocol (``docs/architecture.md``, "Device-side runner") a success also reports
``seed``, ``input_source``, ``max_rss_kb`` and, for several outputs, ``output_summaries``.
"""
import argparse
import hashlib
import io
import json
import os
import platform
import select
import signal
import sys
import tempfile
import time

RUNNER_VERSION = 1
TFLITE_RUNTIMES = ("litert", "tflite_runtime", "tensorflow")
RUNTIME_CHOICES = ("auto",) + TFLITE_RUNTIMES + ("onnxruntime",)
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(uint16)": "uint16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class RunnerError(Exception):
    """A failure reported as ``{"ok": false, "error": ..., "error_kind": kind}``."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a RunnerError instead of exiting."""

    def error(self, message):
        raise RunnerError("bad_input", "bad arguments: " + message)


def parse_args(argv):
    p = _Parser(prog="device_runner.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file (.tflite or .onnx)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--input", help="input data: .npy (one input) or .npz keyed by input name")
    p.add_argument("--save-output", help="save the outputs of the last run here (.npy; .npz layout if several)")
    p.add_argument("--profile", metavar="PREFIX", help="operator profile file prefix: onnxruntime's profiler, or "
                   "for TFLite every operator timed as a one-op model (PREFIX_ops.json)")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help="runtime to use (default auto)")
    p.add_argument("--time-limit", type=float, default=0, metavar="SECONDS",
                   help="end the run after this long, wherever it hangs (default: no limit)")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise RunnerError("bad_input", "--threads must be >= 1, got %d" % args.threads)
    if args.warmup < 0:
        raise RunnerError("bad_input", "--warmup must be >= 0, got %d" % args.warmup)
    if args.runs < 1:
        raise RunnerError("bad_input", "--runs must be >= 1, got %d" % args.runs)
    return args


def model_format(path):
    """'tflite' or 'onnx', from the extension or else the TFLite flatbuffer identifier."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tflite", ".lite"):
        return "tflite"
    if ext == ".onnx":
        return "onnx"
    with open(path, "rb") as f:
        head = f.read(8)
    return "tflite" if head[4:8] == b"TFL3" else "onnx"


# ----------------------------------------------------------------------------------------- runtimes
def _load_tflite_interpreter(choice):
    """(Interpreter class, runtime name, version) for the first TFLite runtime found."""
    order = TFLITE_RUNTIMES if choice == "auto" else (choice,)
    tried = []
    for name in order:
        try:
            if name == "litert":
                import ai_edge_litert
                from ai_edge_litert.interpreter import Interpreter
                return Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")
            if name == "tflite_runtime":
                import tflite_runtime
                from tflite_runtime.interpreter import Interpreter
                return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
            import tensorflow as tf
            return tf.lite.Interpreter, "tensorflow.lite", tf.__version__
        except ImportError as exc:
            tried.append("%s (%s)" % (name, exc))
    raise RunnerError("no_runtime", "no TFLite runtime available; tried " + "; ".join(tried)
                      + " - install one, e.g. pip install ai-edge-litert")


class TfliteModel:
    """A TFLite interpreter with inputs set once; ``invoke()`` is what gets timed."""

    def __init__(self, path, threads, choice):
        interpreter_cls, self.runtime, self.version = _load_tflite_interpreter(choice)
        t0 = time.perf_counter()
        try:
            self.interp = interpreter_cls(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # the runtimes raise ValueError / RuntimeError with varied texts
            raise RunnerError("bad_model", "cannot load %s: %s" % (path, _one_line(exc)))
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.inputs = [_tensor_info(d["name"], d["shape"], d["dtype"], d) for d in self.interp.get_input_details()]
        self.outputs = [_tensor_info(d["name"], d["shape"], d["dtype"], d) for d in self.interp.get_output_details()]

    def set_inputs(self, arrays):
        for detail, array in zip(self.interp.get_input_details(), arrays):
            self.interp.set_tensor(detail["index"], array)

    def run(self):
        self.interp.invoke()

    def fetch_outputs(self):
        return [self.interp.get_tensor(d["index"]).copy() for d in self.interp.get_output_details()]

    def end_profiling(self):
        return None


class OnnxModel:
    """An onnxruntime session (CPU, sequential); ``run()`` is what gets timed."""

    def __init__(self, path, threads, profile_prefix):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError("no_runtime", "onnxruntime is not available (%s) - pip install onnxruntime" % exc)
        self.runtime, self.version = "onnxruntime", ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise RunnerError("bad_model", "cannot load %s: %s" % (path, _one_line(exc)))
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.profiling = bool(profile_prefix)
        self.inputs = [_ort_info(i) for i in self.session.get_inputs()]
        self.outputs = [_ort_info(o) for o in self.session.get_outputs()]
        self.feeds = {}
        self.last = None

    def set_inputs(self, arrays):
        self.feeds = dict((info["name"], array) for info, array in zip(self.inputs, arrays))

    def run(self):
        self.last = self.session.run(None, self.feeds)

    def fetch_outputs(self):
        return [_np().asarray(x) for x in self.last]

    def end_profiling(self):
        return self.session.end_profiling() if self.profiling else None


# ------------------------------------------------------------------------------ TFLite operator profile
#: A PAD feeding one of these is timed with it: XNNPACK folds a zero PAD into the next convolution.
PAD_FUSING_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _flatbuffer_tools():
    """(flatbuffer_utils, schema module) of the installed LiteRT (or TensorFlow) package."""
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
        return flatbuffer_utils, schema
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils
        return flatbuffer_utils, schema
    except ImportError:
        raise RunnerError("no_runtime", "TFLite operator profiling needs the flatbuffer tools of ai_edge_litert "
                                        "(pip install ai-edge-litert) or tensorflow; tflite_runtime has none")


def one_op_models(path):
    """Split a .tflite into one-op models: [(first op index, op name, output shape, model bytes)].

    Each model holds one operator of subgraph 0 (a zero PAD together with the convolution it feeds, as
    XNNPACK runs them), its constant buffers only, and its non-constant inputs as model inputs.
    """
    import copy
    flatbuffer_utils, schema = _flatbuffer_tools()
    model = flatbuffer_utils.read_model(path)
    graph = model.subgraphs[0]
    names = dict((v, k) for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))

    def op_name(op):
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def is_constant(t):
        buffer = model.buffers[graph.tensors[t].buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))

    readers = {}
    for op in graph.operators:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    groups, i = [], 0
    while i < len(graph.operators):
        op = graph.operators[i]
        nxt = graph.operators[i + 1] if i + 1 < len(graph.operators) else None
        fused = (op_name(op) == "PAD" and nxt is not None and op_name(nxt) in PAD_FUSING_OPS
                 and list(nxt.inputs)[:1] == [op.outputs[0]] and readers.get(op.outputs[0]) == 1)
        groups.append([i, i + 1] if fused else [i])
        i += 2 if fused else 1
    result = []
    for group in groups:
        ops = [graph.operators[k] for k in group]
        produced = set(t for op in ops for t in op.outputs)
        used = []
        for op in ops:
            for t in list(op.inputs) + list(op.outputs):
                if t >= 0 and t not in used:
                    used.append(t)
        tensor_map, buffers, tensors = {}, [model.buffers[0]], []
        for t in used:
            tensor = copy.copy(graph.tensors[t])
            if is_constant(t):
                buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
            tensor_map[t] = len(tensors)
            tensors.append(tensor)
        sub = copy.copy(graph)
        sub.tensors = tensors
        sub.operators = []
        for op in ops:
            new = copy.copy(op)
            new.inputs = [tensor_map[t] if t >= 0 else t for t in op.inputs]
            new.outputs = [tensor_map[t] for t in op.outputs]
            sub.operators.append(new)
        sub.inputs = [tensor_map[t] for t in used if t not in produced and not is_constant(t)]
        sub.outputs = [tensor_map[t] for t in ops[-1].outputs]
        one = copy.copy(model)
        one.subgraphs, one.buffers, one.signatureDefs = [sub], buffers, []
        one.metadata, one.metadataBuffer = [], []
        for entry in model.metadata or []:  # XNNPACK's FP16 hint must reach each op, as in the whole model
            if entry.name in (b"reduced_precision_support", "reduced_precision_support"):
                kept = copy.copy(entry)
                buffers.append(model.buffers[entry.buffer])
                kept.buffer = len(buffers) - 1
                one.metadata.append(kept)
        last = ops[-1]
        result.append((group[0], "+".join(op_name(op) for op in ops),
                       [int(d) for d in graph.tensors[last.outputs[0]].shape],
                       bytes(flatbuffer_utils.convert_object_to_bytearray(one))))
    return result


def profile_tflite_ops(path, threads, choice, rounds, reps=3, seed=0, counted=False):
    """Median latency of every operator of a .tflite, each run as its own one-op model (same runtime).

    The ``rounds`` sweeps each load every one-op model afresh and time ``reps`` invocations, so the
    operators share the machine's drift and only one interpreter lives at a time (memory stays low).
    Returns ``{"kind": "tflite-one-op", "rows": [{"index", "name", "output_shape", "ms"}...], ...}``.
    ``counted`` (a simulated core, one round, one rep): each row also gets its ``instructions`` (all
    counters of its invocation, net of the marks' cost).
    """
    np = _np()
    interpreter_cls, runtime, version = _load_tflite_interpreter(choice)
    models = one_op_models(path)
    times = [[] for _ in models]
    errors = {}
    rng = np.random.default_rng(seed)
    for _ in range(max(1, rounds)):
        for k, (index, name, shape, content) in enumerate(models):
            if k in errors:
                continue
            try:
                interp = interpreter_cls(model_content=content, num_threads=threads)
                interp.allocate_tensors()
                for detail in interp.get_input_details():
                    info = _tensor_info(detail["name"], detail["shape"], detail["dtype"], detail)
                    interp.set_tensor(detail["index"], random_input(info, rng))
                interp.invoke()
                for _ in range(reps):
                    if counted:
                        mark(MARK_OP, k)
                    start = time.perf_counter()
                    interp.invoke()
                    times[k].append((time.perf_counter() - start) * 1e3)
                    if counted:
                        mark(MARK_OP + 1, k)
            except (RuntimeError, ValueError) as exc:
                errors[k] = _one_line(exc)
            interp = None
    rows = []
    marks = read_marks(os.environ["TOPFORMER_DEPLOY_COUNTS"], os.getpid())[2] if counted else {}
    overhead = between_marks(marks, MARK_NULL, 0) if (MARK_NULL, 0) in marks else None
    for k, (index, name, shape, _) in enumerate(models):
        row = {"index": index, "name": name, "output_shape": shape}
        if k in errors:
            row["error"] = errors[k]
        else:
            ordered = sorted(times[k])
            row["ms"] = ordered[len(ordered) // 2]
            if counted:
                row["instructions"] = between_marks(marks, MARK_OP, k, overhead)
        rows.append(row)
    return {"kind": "tflite-one-op", "runtime": {"name": runtime, "version": str(version)}, "threads": threads,
            "rounds": max(1, rounds), "reps": reps, "rows": rows,
            "total_ms": sum(r.get("ms", 0.0) for r in rows)}


# ------------------------------------------------------------------------------------------- inputs
def _np():
    import numpy
    return numpy


def _tensor_info(name, shape, dtype, detail=None):
    np = _np()
    dims = [int(d) if isinstance(d, (int, np.integer)) else None for d in list(shape)]
    info = {"name": str(name), "shape": dims, "dtype": np.dtype(dtype).name if _is_numpy_dtype(dtype) else str(dtype)}
    if detail is not None:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if scale:
            info["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return info


def _ort_info(node_arg):
    return _tensor_info(node_arg.name, node_arg.shape, ORT_DTYPES.get(node_arg.type, node_arg.type))


def _is_numpy_dtype(dtype):
    try:
        _np().dtype(dtype)
        return True
    except TypeError:
        return False


def random_input(info, rng):
    """Seeded uniform data in the tensor's dtype: pixels 0..255 for floats, the full range for 8-bit."""
    np = _np()
    shape = [d if d is not None and d > 0 else 1 for d in info["shape"]]
    dtype = np.dtype(info["dtype"])
    if dtype.kind == "f":
        return rng.uniform(0.0, 255.0, size=shape).astype(dtype)
    if dtype.kind in "iu" and dtype.itemsize == 1:
        limits = np.iinfo(dtype)
        return rng.integers(int(limits.min), int(limits.max) + 1, size=shape, dtype=dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise RunnerError("bad_input", "cannot make random data for input %r of dtype %s" % (info["name"], dtype))


def load_inputs(path, infos):
    """Arrays for ``infos`` from a .npy (one input) or .npz (by input name) file, checked and cast."""
    np = _np()
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunnerError("bad_input", "cannot read --input %s: %s" % (path, _one_line(exc)))
    if isinstance(data, np.ndarray):
        if len(infos) != 1:
            raise RunnerError("bad_input", "the model has %d inputs: give an .npz keyed by %s"
                              % (len(infos), ", ".join(i["name"] for i in infos)))
        arrays = [data]
    else:
        with data:
            if len(infos) == 1 and infos[0]["name"] not in data.files and len(data.files) == 1:
                arrays = [data[data.files[0]]]
            else:
                missing = [i["name"] for i in infos if i["name"] not in data.files]
                if missing:
                    raise RunnerError("bad_input", "--input %s lacks input(s) %s (has %s)"
                                      % (path, ", ".join(missing), ", ".join(data.files)))
                arrays = [data[i["name"]] for i in infos]
    return [_conform(array, info) for array, info in zip(arrays, infos)]


def _conform(array, info):
    np = _np()
    dtype = np.dtype(info["dtype"])
    expected = info["shape"]
    if array.ndim != len(expected) or any(e is not None and e > 0 and e != a for e, a in zip(expected, array.shape)):
        raise RunnerError("bad_input", "input %r has shape %s, the model wants %s"
                          % (info["name"], list(array.shape), expected))
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise RunnerError("bad_input", "input %r has dtype %s, the model wants %s"
                              % (info["name"], array.dtype, dtype))
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


# ------------------------------------------------------------------------------------------ outputs
def summarize_output(array):
    np = _np()
    a = np.ascontiguousarray(array)
    return {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            "mean": float(a.astype(np.float64).mean()) if a.size else 0.0}


def save_outputs(path, arrays, infos):
    """One output -> .npy, several -> .npz keyed by output name; written to a temp file, then moved."""
    np = _np()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".runner-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if len(arrays) == 1:
                np.save(f, arrays[0])
            else:
                np.savez(f, **dict((i["name"], a) for i, a in zip(infos, arrays)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------ simulated cores: instruction marks
#: On a simulated core (``sim:CORE``: qemu-user with the project's counting plugin) the environment sets
#: TOPFORMER_DEPLOY_MARKERS=1 and TOPFORMER_DEPLOY_COUNTS=<the plugin's output file>. A mark is a guest
#: ``lseek(<fd of /dev/null>, MARK_MAGIC | event << 24 | index, 0)``, which the plugin takes as "snapshot
#: the counters" and the kernel as a seek of /dev/null that does nothing (no exception: the Python between
#: two marks stays short and repeats exactly). Marks sit outside the timed region.
MARK_MAGIC = 0x7466647000000000
MARK_WARMUP, MARK_RUN, MARK_NULL, MARK_OP = 1, 3, 5, 7      # begin = event, end = event + 1
_MARK_FD = []


def markers_enabled():
    return os.environ.get("TOPFORMER_DEPLOY_MARKERS") == "1"


def mark(event, index=0):
    if not _MARK_FD:
        _MARK_FD.append(os.open(os.devnull, os.O_RDONLY))
    os.lseek(_MARK_FD[0], MARK_MAGIC | (event << 24) | (index & 0xFFFFFF), 0)


def read_marks(path, pid):
    """(classes, kinds, {(event, index): counts}) from the plugin's snapshot lines of process ``pid``.

    The classes are disjoint and add up to ``total``; the kinds (FMLA, SDOT, SMLAL...) are subsets of them.
    """
    header, marks = None, {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("pid") != pid:
                continue  # a forked child's lines (it inherits the plugin and the file)
            if rec["ev"] == "start":
                header = rec
            elif rec["ev"] == "mark":
                marks[(rec["label"] >> 24, rec["label"] & 0xFFFFFF)] = rec["counts"]
    if header is None:
        raise ValueError("no snapshot of this process in %s" % path)
    return list(header["classes"]), list(header.get("kinds", [])), marks


def between_marks(marks, event, index, overhead=None):
    """Every counter between the begin and end marks of (event, index), less the marks' own ``overhead``."""
    begin, end = marks[(event, index)], marks[(event + 1, index)]
    return dict((k, end[k] - begin[k] - (overhead[k] if overhead else 0)) for k in end)


def instruction_counts(runs, path=None, pid=None):
    """The runner document's ``instructions``: per timed run, every counter (``total`` = all classes), net
    of ``marker_overhead`` (what a pair of marks around nothing costs, ~10k instructions of Python)."""
    path = path or os.environ["TOPFORMER_DEPLOY_COUNTS"]
    classes, kinds, marks = read_marks(path, os.getpid() if pid is None else pid)
    overhead = between_marks(marks, MARK_NULL, 0)
    return {"classes": classes, "kinds": kinds, "marker_overhead": overhead["total"],
            "per_run": [between_marks(marks, MARK_RUN, i, overhead) for i in runs]}


# -------------------------------------------------------------------------------------------- main
def measure(args):
    """Load, warm up, time; return the success document."""
    try:
        np = _np()
    except ImportError as exc:
        raise RunnerError("no_runtime", "numpy is not available (%s)" % exc)
    if not os.path.isfile(args.model):
        raise RunnerError("bad_model", "model file not found: %s" % args.model)
    fmt = model_format(args.model)
    if fmt == "tflite" and args.runtime == "onnxruntime":
        raise RunnerError("bad_input", "--runtime onnxruntime cannot run a TFLite model")
    if fmt == "onnx" and args.runtime in TFLITE_RUNTIMES:
        raise RunnerError("bad_input", "--runtime %s cannot run an ONNX model" % args.runtime)
    for flag, path in (("--save-output", args.save_output), ("--profile", args.profile)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise RunnerError("bad_input", "%s %s: no such directory" % (flag, path))

    if fmt == "tflite":
        model = TfliteModel(args.model, args.threads, args.runtime)
    else:
        model = OnnxModel(args.model, args.threads, args.profile)

    if args.input:
        arrays = load_inputs(args.input, model.inputs)
    else:
        rng = np.random.default_rng(args.seed)
        arrays = [random_input(info, rng) for info in model.inputs]
    model.set_inputs(arrays)

    first_ms = None
    latencies = []
    marks = markers_enabled()
    if marks:  # the marks' own cost: a pair around nothing, with the timing code of a run between
        mark(MARK_NULL)
        start = time.perf_counter()
        elapsed = (time.perf_counter() - start) * 1e3
        mark(MARK_NULL + 1)
    try:
        for i in range(args.warmup + args.runs):
            event = MARK_RUN if i >= args.warmup else MARK_WARMUP
            if marks:
                mark(event, i)
            start = time.perf_counter()
            model.run()
            elapsed = (time.perf_counter() - start) * 1e3
            if marks:
                mark(event + 1, i)
                sys.stderr.write("tfd-progress: %d/%d\n" % (i + 1, args.warmup + args.runs))
                sys.stderr.flush()
            if first_ms is None:
                first_ms = elapsed
            if i >= args.warmup:
                latencies.append(elapsed)
    except (RuntimeError, ValueError) as exc:
        raise RunnerError("runtime_error", "inference failed: %s" % _one_line(exc))

    outputs = model.fetch_outputs()
    if args.save_output:
        try:
            save_outputs(args.save_output, outputs, model.outputs)
        except OSError as exc:
            raise RunnerError("bad_input", "cannot write --save-output %s: %s" % (args.save_output, _one_line(exc)))
    profile_file = model.end_profiling()
    profile_kind = "onnxruntime"
    if fmt == "tflite" and args.profile:  # counted instructions repeat exactly: one round, one rep is enough
        profile = profile_tflite_ops(args.model, args.threads, args.runtime, rounds=1 if marks else min(args.runs, 5),
                                     reps=1 if marks else 3, counted=marks)
        profile_file, profile_kind = args.profile + "_ops.json", profile["kind"]
        with open(profile_file, "w") as f:
            json.dump(profile, f)
    doc = {
        "runner_version": RUNNER_VERSION, "ok": True,
        "runtime": {"name": model.runtime, "version": str(model.version)},
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "system": platform.system(),
        "model": {"path": args.model, "format": fmt, "inputs": model.inputs, "outputs": model.outputs},
        "threads": args.threads, "warmup": args.warmup, "runs": args.runs, "seed": args.seed,
        "input_source": args.input or "random",
        "load_ms": model.load_ms, "first_ms": first_ms, "latencies_ms": latencies,
        "outputs_saved": args.save_output or None,
        "output_summary": summarize_output(outputs[0]) if outputs else None,
        "profile": {"kind": profile_kind, "file": os.path.abspath(profile_file)} if profile_file else None,
        "max_rss_kb": _max_rss_kb(),
    }
    if len(outputs) > 1:
        doc["output_summaries"] = [summarize_output(o) for o in outputs]
    if marks and os.environ.get("TOPFORMER_DEPLOY_COUNTS"):
        try:
            doc["instructions"] = instruction_counts(range(args.warmup, args.warmup + args.runs))
        except (OSError, ValueError, KeyError) as exc:
            raise RunnerError("runtime_error", "no instruction counts: %s" % _one_line(exc))
    return doc


def _max_rss_kb():
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss // 1024) if sys.platform == "darwin" else int(rss)


def _one_line(exc):
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:500]


def failure(kind, message):
    return {"runner_version": RUNNER_VERSION, "ok": False, "error": _one_line(message), "error_kind": kind}


def main(argv=None):
    """Run and print the one JSON document; returns the exit code."""
    out = _claim_stdout()
    try:
        args = parse_args(argv)
        start_watchdog(out, args.time_limit)
        doc, code = measure(args), 0
    except RunnerError as exc:
        doc, code = failure(exc.kind, str(exc)), 2
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the JSON document
        doc, code = failure("runtime_error", "interrupted"), 130
    except Exception as exc:  # last resort: the protocol promises JSON even for bugs
        doc, code = failure("runtime_error", "%s: %s" % (type(exc).__name__, _one_line(exc))), 2
    out.write(json.dumps(doc) + "\n")
    out.flush()
    return code


def start_watchdog(out, time_limit=0):
    """Make this process die with the connection that started it: a forked watchdog SIGKILLs it when the reader
    of its stdout is gone (the ssh or adb link closed: the bench timed out, was interrupted, or the link dropped)
    or after ``time_limit`` seconds, and ends itself when this process ends. Without it a runner hung in native
    code outlives its connection, re-parented to init, still running on the device's cores."""
    try:
        out_fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    if not hasattr(os, "fork") or not hasattr(select, "poll"):
        return None
    runner = os.getpid()
    alive_read, alive_write = os.pipe()      # its write end closes when this process ends, however it ends
    pid = os.fork()
    if pid:
        os.close(alive_read)
        return pid
    code = 0
    try:
        os.close(alive_write)
        for fd in (0, 1, 2):                  # hold nothing but the two fds it watches
            os.close(fd)
        poller = select.poll()
        poller.register(out_fd, select.POLLERR | select.POLLHUP)     # a pipe's write end: POLLERR when unread
        poller.register(alive_read, select.POLLIN | select.POLLHUP)
        end = time.monotonic() + time_limit if time_limit and time_limit > 0 else None
        while True:
            wait_ms = None if end is None else max(0, int((end - time.monotonic()) * 1000))
            events = poller.poll(wait_ms)
            if any(fd == alive_read for fd, _ in events):
                break                                        # the runner ended on its own
            if events or (end is not None and time.monotonic() >= end):
                os.kill(runner, signal.SIGKILL)
                break
    except BaseException:  # noqa: BLE001 - a watchdog never raises into the runner's code
        code = 1
    os._exit(code)


def _claim_stdout():
    """A private handle on the real stdout; fd 1 (used by native code and print) goes to stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real file descriptors (e.g. embedded interpreter): keep sys.stdout
        return sys.stdout
    sys.stdout = sys.stderr
    return io.TextIOWrapper(os.fdopen(saved, "wb"), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
