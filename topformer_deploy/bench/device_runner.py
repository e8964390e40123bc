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

The file also carries the post-processing an app runs after the network (the section POST-PROCESSING, whose
public face is ``topformer_deploy.postprocess``): with ``--post`` it is timed here, on the device.
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
    p.add_argument("--post", metavar="METHODS", help="after every run also compute the class map from the logits "
                   "(numpy, here), timed apart: comma-separated, from " + ", ".join(POST_METHODS))
    p.add_argument("--post-size", metavar="HxW", help="--post: class map size (default: the model input's)")
    p.add_argument("--post-layout", choices=("NCHW", "NHWC"),
                   help="--post: layout of the logits (default NHWC for TFLite, NCHW for ONNX)")
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
MARK_WARMUP, MARK_RUN, MARK_NULL, MARK_OP, MARK_POST = 1, 3, 5, 7, 9      # begin = event, end = event + 1
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


def instruction_counts(runs, path=None, pid=None, post_methods=0):
    """The runner document's ``instructions``: per timed run, every counter (``total`` = all classes), net
    of ``marker_overhead`` (what a pair of marks around nothing costs, ~10k instructions of Python); with
    ``post_methods``, ``post_per_run``: per method (in ``--post`` order) the total of each timed run's
    post-processing."""
    path = path or os.environ["TOPFORMER_DEPLOY_COUNTS"]
    classes, kinds, marks = read_marks(path, os.getpid() if pid is None else pid)
    overhead = between_marks(marks, MARK_NULL, 0)
    doc = {"classes": classes, "kinds": kinds, "marker_overhead": overhead["total"],
           "per_run": [between_marks(marks, MARK_RUN, i, overhead) for i in runs]}
    if post_methods:
        doc["post_per_run"] = [[between_marks(marks, MARK_POST, post_mark(k, i), overhead)["total"] for i in runs]
                               for k in range(post_methods)]
    return doc


def post_mark(method_index, run_index):
    """The mark index of one post-processing method's call after one run."""
    return (method_index << 16) | (run_index & 0xFFFF)


# ======================================================================== POST-PROCESSING (public API)
# What an app computes after the network: the class map at the input size from the 1/8 logits. This
# section is the one definition; ``topformer_deploy.postprocess`` is its documented public face and
# docs/postprocessing.md has the argument. Pure numpy, so the runner times it on the device itself.
#
# * ``bilinear_upsample``: PyTorch's CPU ``F.interpolate(mode="bilinear", align_corners=False)`` on float32,
#   reproduced operation for operation in one of ARITHMETICS (the CPU kernel PyTorch picks, with or without
#   fused multiply-adds - see ``topformer_deploy.postprocess.torch_arithmetic``).
# * ``dense_class_map``: its argmax over the classes - the reference.
# * ``sparse_class_map``: the same class map. Each output pixel's scores are a convex combination of a 2x2
#   block of low-resolution score vectors; where the four corners share one winner that leads every other
#   class by more than the worst-case float32 rounding error of any of those kernels (COPY_SLACK), that
#   winner is the argmax of every pixel of the block and is copied. Elsewhere only the classes that can win
#   are interpolated: in plain float32 first, and in the exact arithmetic where that pre-computation is
#   within its own error bound (SCREEN_SLACK) of a tie.
# * ``nearest_class_map`` and the bilinear-to-a-fraction methods: cheaper, not exact.

#: Post-processing methods: two exact (``sparse``, ``dense``), three that give up accuracy for speed.
POST_METHODS = ("sparse", "dense", "nearest", "bilinear-half", "bilinear-quarter")
EXACT_POST_METHODS = ("sparse", "dense")
#: PyTorch's two CPU bilinear kernels for float32 (generic NCHW / channels-last), each without or with
#: fused multiply-adds (PyTorch's AVX2 / AVX512 builds on x86 fuse them).
ARITHMETICS = ("nchw-fma", "nchw", "nhwc-fma", "nhwc")
DEFAULT_ARITHMETIC = "nchw-fma"
#: The channels-last kernel computes lanes of 8 classes in vector order and the remainder in scalar order.
NHWC_LANES = 8
#: A winner is copied where it leads by more than COPY_SLACK x max|score| + TINY at every corner: 16 units
#: of float32 roundoff, above the 10 that two scores computed with <= 5 roundings per term can be off by.
COPY_SLACK = 2.0 ** -20
#: The plain float32 pre-computation decides a pixel where its winner leads by more than this x max|score|
#: (64 units: its own error, at most 16, and the exact kernel's, 10, are 26 together).
SCREEN_SLACK = 2.0 ** -18
#: Absolute slack (covers underflow) and the magnitude above which nothing is copied (sums could overflow).
TINY = 2.0 ** -140
HUGE = 2.0 ** 120
_PLANS = {}


def _arithmetic(name):
    """(kernel, fused) of an ARITHMETICS name."""
    if name not in ARITHMETICS:
        raise ValueError("arithmetic must be one of %s, got %r" % (", ".join(ARITHMETICS), name))
    return name.split("-")[0], name.endswith("-fma")


def fma32(a, b, c):
    """``a * b + c`` rounded once to float32 (a fused multiply-add), elementwise on float32 arrays."""
    np = _np()
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)  # exact: 24 + 24 significant bits
    c = np.asarray(c, np.float64)
    s = p + c
    rounded = s.astype(np.float32)
    back = s - p  # TwoSum: s + err == p + c exactly
    err = (p - (s - back)) + (c - back)
    inexact = np.nonzero(err != 0)
    if len(inexact[0]):
        # float32(s) is p + c correctly rounded unless s lies exactly halfway between two float32 values:
        # then err says on which side the exact sum is
        s_i, err_i, near = s[inexact], err[inexact], rounded[inexact]
        near64 = near.astype(np.float64)
        other = np.nextafter(near, np.where(s_i > near64, np.inf, -np.inf).astype(np.float32))
        halfway = (s_i != near64) & (s_i == (near64 + other.astype(np.float64)) * 0.5)
        rounded[inexact] = np.where(halfway & ((err_i > 0) == (other > near)), other, near)
    return rounded


def axis_weights(in_size, out_size, fused=True):
    """PyTorch's source indices and weights along one axis: ``(i0, i1, lambda0, lambda1)`` per output index.

    ``src = max(0, scale * (dst + 0.5) - 0.5)`` in float32 with ``scale = in / out`` (one rounding when
    ``fused``), ``i0 = min(floor(src), in - 1)``, ``i1 = i0 + 1`` clamped to the border, ``lambda1 = src - i0``
    clamped to [0, 1], ``lambda0 = 1 - lambda1``; the identity when the sizes are equal.
    """
    np = _np()
    if in_size == out_size:
        index = np.arange(out_size)
        return index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    centre = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    if fused:
        src = fma32(np.full(out_size, scale, np.float32), centre, np.full(out_size, -0.5, np.float32))
    else:
        src = scale * centre - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lambda1 = np.minimum(np.maximum(src - i0.astype(np.float32), np.float32(0)), np.float32(1))
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (np.float32(1) - lambda1).astype(np.float32), lambda1.astype(np.float32)


def _lerp(a, b, wa, wb, fused):
    """PyTorch's ``a * wa + b * wb`` (fused: the first product is fused with the sum)."""
    return fma32(a, wa, b * wb) if fused else a * wa + b * wb


def _blend(x00, x01, x10, x11, h0, h1, w0, w1, kernel, fused, in_lanes):
    """The bilinear value from the 4 corners (top-left, top-right, bottom-left, bottom-right), as ``kernel``
    computes it: nchw interpolates along the width, then the height; nhwc sums the 4 corners with product
    weights, in vector order for classes ``in_lanes`` and in scalar order for the others."""
    np = _np()
    if kernel == "nchw":
        return _lerp(_lerp(x00, x01, w0, w1, fused), _lerp(x10, x11, w0, w1, fused), h0, h1, fused)
    w00, w01, w10, w11 = h0 * w0, h0 * w1, h1 * w0, h1 * w1
    if fused:
        vector = fma32(x00, w00, fma32(x01, w01, fma32(x11, w11, x10 * w10)))
        scalar = fma32(x11, w11, fma32(x10, w10, fma32(x00, w00, x01 * w01)))
    else:
        vector = x00 * w00 + (x01 * w01 + (x10 * w10 + x11 * w11))
        scalar = ((x00 * w00 + x01 * w01) + x10 * w10) + x11 * w11
    return np.where(in_lanes, vector, scalar)


def _first_argmax(a):
    """``np.argmax(a, axis=0)`` (first index of the maximum, NaN counting as the maximum), computed class by
    class: numpy's own argmax along a leading axis is several times slower (but one call: for few pixels)."""
    np = _np()
    if a[0].size <= 256:
        return np.argmax(a, axis=0)
    best = a[0]
    index = np.zeros(best.shape, np.intp)
    for k in range(1, len(a)):
        np.copyto(index, k, where=a[k] > best)
        best = np.maximum(best, a[k])
    if a.dtype.kind == "f":
        nan = np.nonzero(np.isnan(best))
        if len(nan[0]):
            index[nan] = np.argmax(a[(slice(None),) + nan], axis=0)
    return index


def class_scores(logits, layout="NCHW"):
    """Scores as a contiguous float32 ``(C, h, w)`` array from ``(1, C, h, w)`` / ``(C, h, w)`` (NCHW) or
    ``(1, h, w, C)`` / ``(h, w, C)`` (NHWC) logits."""
    np = _np()
    x = np.asarray(logits)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError("post-processing takes one image, got a batch of %d" % x.shape[0])
        x = x[0]
    if x.ndim != 3:
        raise ValueError("logits must be 3-D or 4-D, got shape %s" % (list(np.shape(logits)),))
    if layout not in ("NCHW", "NHWC"):
        raise ValueError("layout must be NCHW or NHWC, got %r" % (layout,))
    if layout == "NHWC":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def bilinear_upsample(scores, size, arithmetic=DEFAULT_ARITHMETIC):
    """``(C, h, w)`` float32 scores -> ``(C, H, W)``, bit for bit as PyTorch's CPU kernel ``arithmetic``."""
    with _np().errstate(invalid="ignore", over="ignore"):  # non-finite scores give NaN as in PyTorch
        return _bilinear_upsample(scores, size, arithmetic)


def _bilinear_upsample(scores, size, arithmetic):
    np = _np()
    kernel, fused = _arithmetic(arithmetic)
    x = np.asarray(scores, np.float32)
    classes, height, width = x.shape
    r0, r1, h0, h1 = axis_weights(height, size[0], fused)
    c0, c1, w0, w1 = axis_weights(width, size[1], fused)
    h0, h1 = h0[:, None], h1[:, None]
    if kernel == "nchw":
        rows = _lerp(x[:, :, c0], x[:, :, c1], w0, w1, fused)
        return _lerp(rows[:, r0], rows[:, r1], h0, h1, fused)
    top, bottom = x[:, r0], x[:, r1]
    in_lanes = (np.arange(classes) < classes - classes % NHWC_LANES)[:, None, None]
    return _blend(top[:, :, c0], top[:, :, c1], bottom[:, :, c0], bottom[:, :, c1], h0, h1, w0, w1,
                  kernel, fused, in_lanes)


def bilinear_at(scores, size, ys, xs, arithmetic=DEFAULT_ARITHMETIC):
    """``bilinear_upsample(scores, size, arithmetic)[:, ys, xs]``, computed for those pixels only."""
    np = _np()
    kernel, fused = _arithmetic(arithmetic)
    x = np.asarray(scores, np.float32)
    r0, r1, h0, h1 = (a[ys] for a in axis_weights(x.shape[1], size[0], fused))
    c0, c1, w0, w1 = (a[xs] for a in axis_weights(x.shape[2], size[1], fused))
    in_lanes = (np.arange(len(x)) < len(x) - len(x) % NHWC_LANES)[:, None]
    return _blend(x[:, r0, c0], x[:, r0, c1], x[:, r1, c0], x[:, r1, c1], h0, h1, w0, w1, kernel, fused, in_lanes)


def dense_class_map(scores, size, arithmetic=DEFAULT_ARITHMETIC, dtype="int32"):
    """The reference: argmax over the classes of :func:`bilinear_upsample` (first index on ties)."""
    return _first_argmax(bilinear_upsample(scores, size, arithmetic)).astype(dtype)


class _AxisBlocks:
    """One axis of the output cut into blocks: runs of positions sharing both source indices, split into
    chunks of at most ``span`` positions (the first run from its end, so that an integer scale factor tiles
    a canvas of ``n`` x ``span`` slots in which the output is one contiguous range, ``crop``)."""

    def __init__(self, in_size, out_size, fused):
        np = _np()
        self.i0, self.i1, self.l0, self.l1 = axis_weights(in_size, out_size, fused)
        self.span = span = max(1, -(-out_size // in_size))
        key = (self.i0 * (in_size + 1) + self.i1).tolist()
        starts = [p for p in range(out_size) if p == 0 or key[p] != key[p - 1]]
        edges = [0]
        for n, (a, b) in enumerate(zip(starts, starts[1:] + [out_size])):
            inner = list(range(b - span, a, -span))[::-1] if n == 0 else list(range(a + span, b, span))
            edges += inner + [b]
        chunks = list(zip(edges[:-1], edges[1:]))
        self.n = len(chunks)
        self.pos = np.zeros((self.n, span), np.int64)
        self.owner = np.zeros(out_size, np.int64)
        for k, (a, b) in enumerate(chunks):
            pad = span - (b - a)
            slots = [a] * pad + list(range(a, b)) if k == 0 else list(range(a, b)) + [b - 1] * pad
            self.pos[k] = slots
            first = k * span + (pad if k == 0 else 0)
            self.owner[a:b] = np.arange(first, first + b - a)
        self.s0, self.s1 = self.i0[self.pos[:, 0]], self.i1[self.pos[:, 0]]
        self.w0, self.w1 = np.ascontiguousarray(self.l0[self.pos].T), np.ascontiguousarray(self.l1[self.pos].T)
        contiguous = bool(np.all(np.diff(self.owner) == 1))
        self.crop = slice(int(self.owner[0]), int(self.owner[0]) + out_size) if contiguous else None

    def expand(self, canvas, axis):
        """The output positions of a canvas axis (a view for a tiling scale factor)."""
        if self.crop is not None:
            return canvas[self.crop] if axis == 0 else canvas[:, self.crop]
        return canvas.take(self.owner, axis)


def _count_and_sum(mask):
    """(count, sum of the class ids) of the True entries of a (C, ...) mask along its first axis. einsum's own
    loops, not BLAS: a BLAS product would be faster but may run on several threads."""
    np = _np()
    classes = len(mask)
    key = ("count-and-sum", classes)
    if key not in _PLANS:
        _PLANS[key] = np.stack([np.ones(classes, np.int32), np.arange(classes, dtype=np.int32)])
    return np.einsum("jk,k...->j...", _PLANS[key], mask.view(np.int8))


def _sparse_plan(in_size, out_size, arithmetic):
    key = (tuple(in_size), tuple(out_size), arithmetic)
    plan = _PLANS.get(key)
    if plan is None:
        kernel, fused = _arithmetic(arithmetic)
        plan = (kernel, fused, _AxisBlocks(in_size[0], out_size[0], fused), _AxisBlocks(in_size[1], out_size[1], fused))
        if len(_PLANS) > 32:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def sparse_class_map(scores, size, arithmetic=DEFAULT_ARITHMETIC, dtype="int32", stats=None):
    """The class map of :func:`dense_class_map`, bit for bit, interpolating only the blocks that need it.

    ``stats`` (a dict), when given, receives ``blocks``, ``refined`` (blocks whose 2x2 support has no
    safe common winner) and ``exact_pixels`` (pixels computed in the exact arithmetic). The result may be
    a view of a slightly larger array.
    """
    with _np().errstate(invalid="ignore", over="ignore"):
        return _sparse_class_map(scores, size, arithmetic, dtype, stats)


def _sparse_class_map(scores, size, arithmetic, dtype, stats):
    np = _np()
    x = np.asarray(scores, np.float32)
    classes = x.shape[0]
    if classes > np.iinfo(dtype).max + 1:
        raise ValueError("%d classes do not fit in %s" % (classes, np.dtype(dtype).name))
    kernel, fused, rows, cols = _sparse_plan(x.shape[1:], size, arithmetic)
    top = x.max(0)
    scale = np.maximum(np.abs(top), np.abs(x.min(0)))
    # safe: every other class is below top - slack, so only the winner reaches it (NaN reaches nothing);
    # where one class reaches, the sum of the ids that do is the winner
    count, winner = _count_and_sum(x >= top - (COPY_SLACK * scale + TINY))
    safe = (count == 1) & (scale < HUGE)
    unsafe = np.nonzero(~safe)
    winner[unsafe] = _first_argmax(x[(slice(None),) + unsafe])
    w_top, w_bottom = winner[rows.s0], winner[rows.s1]
    s_top, s_bottom = safe[rows.s0], safe[rows.s1]
    block = w_top[:, cols.s0]
    good = (s_top[:, cols.s0] & s_top[:, cols.s1] & s_bottom[:, cols.s0] & s_bottom[:, cols.s1]
            & (w_top[:, cols.s1] == block) & (w_bottom[:, cols.s0] == block) & (w_bottom[:, cols.s1] == block))
    canvas = np.empty((rows.n, rows.span, cols.n, cols.span), dtype)
    canvas.reshape(rows.n, rows.span, -1)[...] = np.repeat(block, cols.span, axis=1)[:, None, :]
    rb, qb = np.nonzero(~good)
    exact = _refine(x, winner, scale, (kernel, fused, rows, cols), rb, qb, canvas) if len(rb) else 0
    if stats is not None:
        stats.update(blocks=int(good.size), refined=int(len(rb)), exact_pixels=int(exact))
    flat = canvas.reshape(rows.n * rows.span, cols.n * cols.span)
    return cols.expand(rows.expand(flat, 0), 1)


def _refine(x, winner, scale, plan, rb, qb, canvas):
    """Class ids of the blocks (rb, qb) into ``canvas``; returns the number of pixels computed exactly."""
    np = _np()
    kernel, fused, rows, cols = plan
    classes, pixels = len(x), x.shape[1] * x.shape[2]
    xf = x.reshape(-1)
    i0, i1, j0, j1 = rows.s0[rb] * x.shape[2], rows.s1[rb] * x.shape[2], cols.s0[qb], cols.s1[qb]
    at = np.stack([i0 + j0, i0 + j1, i1 + j0, i1 + j1])  # (4 corners, B): flat low-resolution pixels
    corners = np.take(x.reshape(classes, pixels), at, axis=1)  # (C, 4, B)
    top = scale.reshape(-1).take(at).max(0)  # max |score| over the block's corners (NaN if one is NaN)
    bounded = top < HUGE
    slack = np.where(bounded, COPY_SLACK * top + TINY, np.inf).astype(np.float32)
    wins = winner.reshape(-1).take(at).astype(np.intp)  # (4, B): every corner's winner is a candidate
    candidates = _candidates(corners, slack, wins)
    count = candidates.sum(0)
    low, high = wins.min(0), wins.max(0)
    screen = slack * np.float32(SCREEN_SLACK / COPY_SLACK)  # TINY doubled too: still far below any margin
    exact = 0
    single = np.flatnonzero(count == 1)  # one class can win: the whole block is that class
    canvas[rb[single], :, qb[single], :] = low[single][:, None, None]
    two = (count == 2) & (low != high) & bounded  # the two candidates are the corners' two winners
    pairs = np.flatnonzero(two)
    if len(pairs):
        ids = np.stack([low[pairs], high[pairs]])
        values = np.take(xf, at[:, None, pairs] + ids * pixels)  # (4 corners, 2, B)
        exact += _refine_pairs(plan, rb[pairs], qb[pairs], ids, values, screen[pairs], classes, canvas)
    rest = np.flatnonzero((count > 1) & ~two)
    for sel in _candidate_groups(count[rest]):
        sel = rest[sel]
        width, number = int(count[sel].max()), count[sel]
        ids = np.argsort(~candidates[:, sel], axis=0, kind="stable")[:width]  # ascending ids first
        padding = np.arange(width)[:, None] >= number
        ids = np.where(padding, ids[number - 1, np.arange(len(sel))], ids)  # repeat the last id
        values = np.take(xf, at[:, None, sel] + ids * pixels)  # (4 corners, K, B)
        exact += _refine_blocks(plan, rb[sel], qb[sel], ids, padding, values, screen[sel], classes, canvas)
    return exact


#: Padding (block x class slots) worth one more numpy pass over a group of blocks rather than another group.
GROUP_WASTE = 256


def _candidate_groups(count):
    """Index arrays into ``count`` (candidates per block): blocks refined together, each group padded to its
    widest block. Groups of 2-4, 5-16, 17-64, ... candidates, merged while the padding stays small."""
    np = _np()
    groups, limit = [], 4
    left = np.ones(len(count), bool)
    while left.any():
        sel = np.flatnonzero(left & (count <= limit))
        left[sel] = False
        if len(sel):
            width = int(count[sel].max())
            if groups and len(groups[-1][0]) * (width - groups[-1][1]) <= GROUP_WASTE:
                groups[-1] = (np.concatenate([groups[-1][0], sel]), width)
            else:
                groups.append((sel, width))
        limit *= 4
    return [sel for sel, _ in groups]


#: With more classes than this, a cheap test first keeps only the classes that can win in some block.
FEW_CLASSES = 32


def _candidates(corners, slack, wins):
    """(C, B): the classes that can win somewhere in their block (every corner's winner among them).

    With many classes most are far below everywhere: a class whose maximum over a block's corners is more than
    the slack below the highest minimum of any class there is led by that class at every corner (one
    difference, as in :func:`_beaten`), so the full test runs only on the classes that survive this in some
    block. Both tests are sound, so their intersection is."""
    np = _np()
    classes = len(corners)
    if classes <= FEW_CLASSES:
        return ~_beaten(corners, slack, wins)
    alive = ~(corners.max(1) < corners.min(1).max(0) - slack)  # NaN: alive
    union = np.flatnonzero(alive.any(1))
    local = np.zeros(classes, np.intp)
    local[union] = np.arange(len(union))
    candidates = np.zeros(alive.shape, bool)
    candidates[union] = ~_beaten(corners[union], slack, local[wins]) & alive[union]
    return candidates


def _beaten(corners, slack, wins):
    """(C, B): classes that cannot win anywhere in their block. A class k is out if, at all four corners,
    one of these leads it by more than the slack: the winner A of the first corner, the winner B of another
    corner where it differs, the class with the highest minimum over the corners, or the mixture (A + B) / 2
    (bilinear too, so it then leads k inside the block, and max(A, B) >= the mixture). In float32: a
    difference is within 2 units of roundoff of the exact one, the sum of two within 8 (against twice the
    slack), the exact lead therefore above 10 units."""
    np = _np()
    blocks = corners.shape[2]
    a = wins[0]
    b = np.where(wins[3] != a, wins[3], np.where(wins[1] != a, wins[1], wins[2]))
    leaders = np.stack([a, b, corners.min(1).argmax(0)])  # (3, B)
    flat = (leaders * 4)[:, None, :] + np.arange(4)[:, None]  # into corners seen as (C * 4, B)
    values = np.take(corners.reshape(-1), flat * blocks + np.arange(blocks))  # (3, 4, B)
    lead = values[:, None] - corners  # (3, C, 4, B): each leader's lead over every class at every corner
    beaten = (lead.min(2) > slack).any(0)
    return beaten | ((lead[0] + lead[1]).min(1) > 2 * slack)


def _block_weights(rows, cols, rb, qb):
    """(h0, h1, w0, w1) of the pixels of blocks (rb, qb), shaped to broadcast to (rows, cols, B): blocks
    innermost (and contiguous), so that numpy's loops run along them."""
    return (rows.w0.take(rb, 1)[:, None, :], rows.w1.take(rb, 1)[:, None, :], cols.w0.take(qb, 1)[None],
            cols.w1.take(qb, 1)[None])


def _exact_winners(plan, ids, values, rb, qb, b, r, c, classes):
    """Index into ``ids`` of the exact winner at pixels (b, r, c) of blocks (rb, qb) with corner ``values``."""
    kernel, fused, rows, cols = plan
    near = values[:, :, b]  # (4, K, P)
    hr, wc = rows.pos[rb[b], r], cols.pos[qb[b], c]
    scores = _blend(near[0], near[1], near[2], near[3], rows.l0[hr], rows.l1[hr], cols.l0[wc], cols.l1[wc],
                    kernel, fused, ids[:, b] < classes - classes % NHWC_LANES)
    return _first_argmax(scores)


def _refine_pairs(plan, rb, qb, ids, values, screen, classes, canvas):
    """Blocks (all scores finite) where only two classes can win: the sign of their difference, bilinear in
    the corners' differences in plain float32 (``top + h1 * (bottom - top)``: within 16 units of roundoff
    of the exact difference), exact where that is too close to call."""
    np = _np()
    kernel, fused, rows, cols = plan
    _, h1, w0, w1 = _block_weights(rows, cols, rb, qb)
    d = values[:, 1] - values[:, 0]  # (4, B)
    top = _lerp(d[0], d[1], w0, w1, False)  # (1, sc, B)
    lead = top + h1 * (_lerp(d[2], d[3], w0, w1, False) - top)  # (sr, sc, B)
    second = lead > 0
    close = np.flatnonzero(np.abs(lead) <= screen)  # flat: numpy's N-d nonzero is several times slower
    if len(close):
        r, c, b = np.unravel_index(close, lead.shape)
        second.reshape(-1)[close] = _exact_winners(plan, ids, values, rb, qb, b, r, c, classes) == 1
    first, other = ids.astype(canvas.dtype)
    canvas[rb, :, qb, :] = (first + second * (other - first)).transpose(2, 0, 1)  # np.where: 8x slower here
    return len(close)


def _refine_blocks(plan, rb, qb, ids, padding, values, screen, classes, canvas):
    """Blocks whose winner is one of the classes ``ids`` (K, B; ``padding`` repeats a block's last id):
    every pixel, plain float32 first, exactly where that is too close to call. The plain pre-computation
    decides a pixel where only its winner comes within ``screen`` of the maximum."""
    np = _np()
    kernel, fused, rows, cols = plan
    h0, h1, w0, w1 = _block_weights(rows, cols, rb, qb)  # broadcast against (K, 1, 1, B): blocks innermost
    padded = np.where(padding, np.float32(-2.0 ** 126), values)[:, :, None, None, :]  # (4, K, 1, 1, B)
    approx = _blend(padded[0], padded[1], padded[2], padded[3], h0, h1, w0, w1, "nchw", False, True)
    near = approx >= approx.max(0) - screen  # (K, sr, sc, B); NaN or infinity: nowhere, so refined exactly
    count, win = _count_and_sum(near)  # win: the winner where it is the only class near the maximum
    close = np.flatnonzero(count != 1)
    if len(close):
        r, c, b = np.unravel_index(close, win.shape)
        win.reshape(-1)[close] = _exact_winners(plan, ids, values, rb, qb, b, r, c, classes)
    names = np.take(ids.astype(canvas.dtype).reshape(-1), win * len(rb) + np.arange(len(rb)))  # ids[win, block]
    canvas[rb, :, qb, :] = names.transpose(2, 0, 1)
    return len(close)


def nearest_indices(in_size, out_size):
    """Source index of each output index for nearest upsampling with pixel centres aligned (half-pixel)."""
    np = _np()
    return np.minimum(((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64), in_size - 1)


def nearest_class_map(scores, size, dtype="int32"):
    """Argmax at the scores' resolution, then nearest upsampling to ``size``: cheap, not exact."""
    return _resize_nearest(_first_argmax(scores), size).astype(dtype)


def _resize_nearest(classes, size):
    """``classes`` at ``size`` by :func:`nearest_indices` (sorted, so repeating each source index as often
    as it is used is the same gather - and faster, columns first so the rows are copied whole)."""
    np = _np()
    h, w = classes.shape
    wide = np.repeat(classes, np.bincount(nearest_indices(w, size[1]), minlength=w), axis=1)
    return np.repeat(wide, np.bincount(nearest_indices(h, size[0]), minlength=h), axis=0)


def class_map(logits, size, method="sparse", layout="NCHW", arithmetic=DEFAULT_ARITHMETIC, dtype="int32",
              stats=None):
    """Class ids ``(H, W)`` at ``size`` from one image's logits, by one of POST_METHODS.

    ``sparse`` and ``dense`` give the argmax of the bilinear upsampling (align_corners=False) in the
    given ``arithmetic``; ``nearest`` takes the argmax at the logits' resolution and upsamples it;
    ``bilinear-half`` / ``bilinear-quarter`` take the exact class map at half / a quarter of ``size``
    (rounded up) and upsample it with nearest neighbours. ``stats`` as for :func:`sparse_class_map`.
    """
    x = class_scores(logits, layout)
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError("output size must be positive, got %s" % (list(size),))
    if method == "sparse":
        return sparse_class_map(x, size, arithmetic, dtype, stats)
    if method == "dense":
        return dense_class_map(x, size, arithmetic, dtype)
    if method == "nearest":
        return nearest_class_map(x, size, dtype)
    if method in ("bilinear-half", "bilinear-quarter"):
        f = 2 if method == "bilinear-half" else 4
        middle = (-(-size[0] // f), -(-size[1] // f))
        return _resize_nearest(sparse_class_map(x, middle, arithmetic, dtype, stats), size)
    raise ValueError("unknown post-processing method %r: choose from %s" % (method, ", ".join(POST_METHODS)))
# ====================================================================== end of POST-PROCESSING


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
    post = PostTimer(args, fmt, model) if args.post else None

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
            if post:
                post.run(model, i, timed=i >= args.warmup, marks=marks)
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
        "post": post.document() if post else None,
    }
    if len(outputs) > 1:
        doc["output_summaries"] = [summarize_output(o) for o in outputs]
    if marks and os.environ.get("TOPFORMER_DEPLOY_COUNTS"):
        try:
            doc["instructions"] = instruction_counts(range(args.warmup, args.warmup + args.runs),
                                                     post_methods=len(post.methods) if post else 0)
        except (OSError, ValueError, KeyError) as exc:
            raise RunnerError("runtime_error", "no instruction counts: %s" % _one_line(exc))
        if post:
            for method, counts in zip(post.methods, doc["instructions"].pop("post_per_run", [])):
                doc["post"]["methods"][method]["instructions"] = counts
    return doc


class PostTimer:
    """``--post``: after every run, fetch the output and compute its class map by each method, each timed
    on its own (fetch included: what an app pays after ``invoke()`` returns)."""

    def __init__(self, args, fmt, model):
        self.methods = [m for m in args.post.split(",") if m]
        unknown = [m for m in self.methods if m not in POST_METHODS]
        if unknown or not self.methods:
            raise RunnerError("bad_input", "--post %s: choose from %s" % (args.post, ", ".join(POST_METHODS)))
        out = model.outputs[0]
        if len(out["shape"]) != 4:
            raise RunnerError("bad_input", "--post needs a model whose output is 4-D logits, got %s %s"
                              % (out["name"], out["shape"]))
        self.layout = args.post_layout or ("NHWC" if fmt == "tflite" else "NCHW")
        if args.post_size:
            try:
                self.size = tuple(int(v) for v in args.post_size.lower().split("x"))
            except ValueError:
                self.size = ()
            if len(self.size) != 2 or min(self.size) < 1:
                raise RunnerError("bad_input", "--post-size must be HxW, got %r" % args.post_size)
        else:
            shape = model.inputs[0]["shape"]
            self.size = tuple(shape[1:3] if fmt == "tflite" else shape[2:4])
        self.latencies = dict((m, []) for m in self.methods)
        self.refined = {}

    def run(self, model, index, timed, marks=False):
        for k, method in enumerate(self.methods):
            stats = {}
            if marks:  # counted on a simulated core: marks outside the timed region, as around a run
                mark(MARK_POST, post_mark(k, index))
            start = time.perf_counter()
            class_map(model.fetch_outputs()[0], self.size, method, self.layout, stats=stats)
            elapsed = (time.perf_counter() - start) * 1e3
            if marks:
                mark(MARK_POST + 1, post_mark(k, index))
            if timed:
                self.latencies[method].append(elapsed)
            self.refined[method] = stats["refined"] / stats["blocks"] if stats else None

    def document(self):
        return {"size": list(self.size), "layout": self.layout, "arithmetic": DEFAULT_ARITHMETIC,
                "methods": dict((m, {"exact": m in EXACT_POST_METHODS, "latencies_ms": self.latencies[m],
                                     "blocks_refined": self.refined.get(m)}) for m in self.methods)}


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
