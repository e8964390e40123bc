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

    Integer outputs (class maps) are compared by agreement only.
    """
    max_abs, err2, ref2, agree, pixels = 0.0, 0.0, 0.0, 0, 0
    for ref, out in zip(reference, actual):
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference {ref.shape}")
        if np.issubdtype(ref.dtype, np.integer):
            agree += int((ref == out).sum())
            pixels += ref.size
            continue
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        max_abs = max(max_abs, float(np.abs(ref64 - out64).max()))
        err2 += float(((ref64 - out64) ** 2).sum())
        ref2 += float((ref64 ** 2).sum())
        if ref.ndim == 4:
            agree += int((ref.argmax(1) == out.argmax(1)).sum())
            pixels += ref[:, 0].size
    floats = ref2 > 0 or max_abs > 0
    return {
        "max_abs_error": max_abs if floats else None,
        "rel_l2_error": (err2 ** 0.5) / max(ref2 ** 0.5, 1e-30) if floats else None,
        "argmax_agreement": agree / pixels if pixels else None,
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
    figures["passed"] = passes(figures, precision)
    return figures


def passes(figures: dict, precision: str) -> bool:
    limits = THRESHOLDS[precision]
    if limits["rel_l2_error"] is not None and figures["rel_l2_error"] is not None \
            and not figures["rel_l2_error"] <= limits["rel_l2_error"]:
        return False
    agreement = figures["argmax_agreement"]
    return agreement is None or agreement >= limits["argmax_agreement"]
