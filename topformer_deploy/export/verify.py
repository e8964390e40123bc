"""Run an artifact in-process (onnxruntime / LiteRT interpreter) and compare it with the PyTorch module."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Acceptance thresholds per precision: relative L2 error and argmax pixel agreement.
THRESHOLDS = {
    "fp32": {"rel_l2_error": 1e-4, "argmax_agreement": 0.999},
    "fp16": {"rel_l2_error": None, "argmax_agreement": 0.99},
}


class ArtifactRunner:
    """One loaded ``.onnx`` / ``.tflite`` artifact; ``run(inputs)`` takes and returns arrays in its own layout."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.format = self.path.suffix.lstrip(".")
        if self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self._session.get_inputs()]
        elif self.format == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            signature = next(iter(self._interpreter.get_signature_list().values()))
            self.input_names = list(signature["inputs"])
            self._output_names = list(signature["outputs"])
            self._runner = self._interpreter.get_signature_runner()
        else:
            raise ValueError(f"unknown artifact format {self.path.suffix!r} (expected .onnx or .tflite)")

    def inputs(self) -> list[dict]:
        """[{name, shape, dtype}] of the inputs, in the order ``run`` takes them."""
        if self.format == "onnx":
            return [_onnx_io(i) for i in self._session.get_inputs()]
        details = self._runner.get_input_details()
        return [_tflite_io(name, details[name]) for name in self.input_names]

    def outputs(self) -> list[dict]:
        """[{name, shape, dtype}] of the outputs, in the order ``run`` returns them."""
        if self.format == "onnx":
            return [_onnx_io(o) for o in self._session.get_outputs()]
        details = self._runner.get_output_details()
        return [_tflite_io(name, details[name]) for name in self._output_names]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path.name} takes {len(self.input_names)} inputs, got {len(inputs)}")
        feed = dict(zip(self.input_names, inputs))
        if self.format == "onnx":
            return list(self._session.run(None, feed))
        result = self._runner(**feed)
        return [np.asarray(result[name]) for name in self._output_names]


def _onnx_io(arg) -> dict:
    dtype = arg.type.removeprefix("tensor(").removesuffix(")")
    return {"name": arg.name, "shape": list(arg.shape), "dtype": {"float": "float32", "double": "float64",
                                                                  "float16": "float16"}.get(dtype, dtype)}


def _tflite_io(name: str, details: dict) -> dict:
    return {"name": name, "shape": [int(d) for d in details["shape"]], "dtype": np.dtype(details["dtype"]).name}


def run_artifact(path: str | os.PathLike, inputs: list[np.ndarray], threads: int | None = None) -> list[np.ndarray]:
    """Run ``path`` once on ``inputs`` (in the artifact's layout) and return its outputs."""
    return ArtifactRunner(path, threads).run(inputs)


def to_artifact_layout(array: np.ndarray, nhwc: bool) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1)) if nhwc and array.ndim == 4 else array


def from_artifact_layout(array: np.ndarray, nhwc: bool) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if nhwc and array.ndim == 4 else array


def compare(reference: list[np.ndarray], actual: list[np.ndarray]) -> dict:
    """Error figures over many output pairs (NCHW): max abs, relative L2 and argmax agreement over channels.

    Integer outputs (class maps) are compared by agreement only. Written so that a NaN never compares as
    good: ``nonfinite_reference`` / ``nonfinite_artifact`` count the NaN/Inf values on each side, the error
    figures propagate them (NaN, never a skipped None), and a pixel agrees only if both its class-score
    vectors are finite.
    """
    max_abs, err2, ref2, agree, pixels, bad_ref, bad_out, floats = 0.0, 0.0, 0.0, 0, 0, 0, 0, False
    for ref, out in zip(reference, actual):
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference {ref.shape}")
        if np.issubdtype(ref.dtype, np.integer):
            agree += int((ref == out).sum())
            pixels += ref.size
            continue
        floats = True
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        bad_ref += int(ref.size - np.isfinite(ref64).sum())
        bad_out += int(out.size - np.isfinite(out64).sum())
        with np.errstate(invalid="ignore", over="ignore"):
            diff = ref64 - out64
            max_abs = float(np.maximum(max_abs, np.abs(diff).max()))  # np.maximum keeps a NaN; max() drops it
            err2 += float((diff ** 2).sum())
            ref2 += float((ref64 ** 2).sum())
        if ref.ndim == 4:
            finite = np.isfinite(ref64).all(1) & np.isfinite(out64).all(1)
            agree += int(((ref.argmax(1) == out.argmax(1)) & finite).sum())
            pixels += ref[:, 0].size
    rel_l2 = None
    if floats:
        if not np.isfinite(err2 + ref2):
            rel_l2 = float("nan")
        else:
            rel_l2 = (err2 / ref2) ** 0.5 if ref2 > 0 else (0.0 if err2 == 0 else float("inf"))
    return {
        "max_abs_error": max_abs if floats else None,
        "rel_l2_error": rel_l2,
        "argmax_agreement": agree / pixels if pixels else None,
        "nonfinite_reference": bad_ref, "nonfinite_artifact": bad_out,
        "inputs": len(reference),
    }


def verify_artifact(path: str | os.PathLike, reference_module: nn.Module, inputs_nchw: list[np.ndarray],
                    precision: str = "fp32", nhwc: bool | None = None, threads: int | None = None) -> dict:
    """Run the artifact and ``reference_module`` on every input; return the figures and ``passed``.

    ``inputs_nchw`` are single-input batches (a list of arrays per run for multi-input modules).
    ``nhwc`` defaults to True for ``.tflite`` (4-D inputs/outputs are NHWC at its boundary).
    """
    runner = ArtifactRunner(path, threads)
    nhwc = runner.format == "tflite" if nhwc is None else nhwc
    references, actuals = [], []
    reference_module = reference_module.eval()
    for item in inputs_nchw:
        arrays = list(item) if isinstance(item, (list, tuple)) else [item]
        with torch.no_grad():
            ref = reference_module(*[torch.from_numpy(a) for a in arrays])
        refs = [r.numpy() for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
        outs = runner.run([to_artifact_layout(a, nhwc) for a in arrays])
        for r, o in zip(refs, outs):
            o = from_artifact_layout(o, nhwc)
            references.append(r)
            actuals.append(o.astype(r.dtype) if np.issubdtype(r.dtype, np.integer) else o)
    figures = compare(references, actuals)
    figures["inputs"] = len(inputs_nchw)
    figures["thresholds"] = THRESHOLDS[precision]
    figures["passed"] = passes(figures, figures["thresholds"])
    return figures


def passes(figures: dict, thresholds: dict) -> bool:
    """True only if every value is finite and every thresholded figure was measured and is within its limit.

    ``thresholds``: ``{figure: limit or None}``; ``*_error`` figures are upper limits, the others lower.
    Each test is written ``value <= limit`` / ``value >= limit``, which is False for NaN.
    """
    if nonfinite(figures):
        return False
    checked = 0
    for key, limit in thresholds.items():
        value = figures.get(key)
        if limit is None or value is None:
            continue
        if not (value <= limit if key.endswith("_error") else value >= limit):
            return False
        checked += 1
    return checked > 0


def nonfinite(figures: dict) -> bool:
    """Whether either side of a comparison produced NaN or Inf."""
    return bool(figures.get("nonfinite_reference") or figures.get("nonfinite_artifact"))


def failure_message(figures: dict, precision: str) -> str:
    """One line saying why ``figures`` failed: non-finite outputs first, else the figures against the limits."""
    if figures.get("nonfinite_reference"):
        reason = (f"PyTorch's own outputs hold {figures['nonfinite_reference']} NaN/Inf values "
                  "(the weights overflow float32 on these inputs)")
    elif figures.get("nonfinite_artifact"):
        reason = f"the artifact's outputs hold {figures['nonfinite_artifact']} NaN/Inf values"
    else:
        parts = [f"{key} {figures[key]:.3g}" for key in ("max_abs_error", "rel_l2_error", "argmax_agreement")
                 if figures.get(key) is not None]
        limits = ", ".join(f"{k} {'<=' if k.endswith('_error') else '>='} {v}"
                           for k, v in figures["thresholds"].items() if v is not None)
        reason = f"{', '.join(parts) or 'nothing measured'} (needs {limits})"
    return f"verification failed ({precision}): {reason}; no artifact was written"
