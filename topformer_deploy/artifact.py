"""The artifact contract: what an exported model promises whoever runs it. Imports no torch.

An artifact is one ``.tflite`` or ``.onnx`` file with its manifest, ``<artifact>.json``, beside it. Export
writes both (the manifest first, the artifact last, so an artifact is never seen without its manifest);
bench, breakdown and eval read the manifest to know the model's input layout, preprocessing, output
semantics and where it came from. The format is drawn in ``docs/architecture.md``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import TopformerDeployError
from .files import write_json

SCHEMA = "topformer-deploy/manifest"
SCHEMA_VERSION = 1
FORMATS = ("onnx", "tflite")
#: Layout of 4-D tensors at each format's graph boundary.
LAYOUTS = {"tflite": "NHWC", "onnx": "NCHW"}
#: What a full-model artifact returns: 1/8 logits, the 1/8 class map, or the class map at input size.
OUTPUTS = ("logits", "argmax", "argmax-full")

#: ImageNet/ADE20K normalisation of RGB pixels in [0, 255] (official mmseg configs).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
COLOR_ORDER = "RGB"
VALUE_RANGE = (0, 255)

_REQUIRED = ("artifact", "format", "precision", "variant", "num_classes", "stage", "input", "inputs", "output")
_LIBRARIES = ("topformer-deploy", "torch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "onnxsim",
              "numpy")


def artifact_name(variant: str, input_size: tuple[int, int], precision: str, output: str, fmt: str,
                  keep_float: tuple[str, ...] = ()) -> str:
    """``topformer_tiny_512x512_fp32_logits.tflite``; mixed int8 adds ``_float-sase`` (the stages kept float)."""
    height, width = input_size
    suffix = f"_float-{'-'.join(keep_float)}" if keep_float else ""
    return f"topformer_{variant}_{height}x{width}_{precision}_{output}{suffix}.{fmt}"


def manifest_path(artifact: str | os.PathLike) -> Path:
    """``model.tflite`` -> ``model.tflite.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (every document's ``created``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the tool and of the libraries that shape an artifact (None when absent)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions


def input_size_of(manifest: dict) -> tuple[int, int]:
    """(height, width) of the network input an artifact was exported for (stage artifacts included)."""
    if manifest.get("input_size"):
        height, width = manifest["input_size"]
        return int(height), int(width)
    shape, layout = manifest["input"]["shape"], manifest["input"].get("layout", "NHWC")
    return (int(shape[2]), int(shape[3])) if layout == "NCHW" else (int(shape[1]), int(shape[2]))


def build_manifest(*, artifact: Path, fmt: str, precision: str, variant: str, num_classes: int, stage: str,
                   inputs: list[dict], outputs: list[dict], input_size: tuple[int, int], output: str,
                   checkpoint: dict | str, weights: str, verification: dict | None, graph: dict,
                   **extra) -> dict:
    """A manifest for the file ``artifact`` (hashed here) from what the runtime reports of its I/O.

    ``inputs`` / ``outputs`` are ``[{name, shape, dtype}]`` in the runtime's order; a full model's first
    input also gets the preprocessing it expects. ``graph`` holds the operator histogram and counts.
    """
    layout = LAYOUTS[fmt]
    inputs = [{**i, "layout": layout if len(i["shape"]) == 4 else None} for i in inputs]
    first_in, first_out = dict(inputs[0]), outputs[0]
    if stage == "full":
        first_in.update(color_order=COLOR_ORDER, value_range=list(VALUE_RANGE), mean=list(MEAN), std=list(STD))
    return {
        "artifact": artifact.name, "format": fmt, "precision": precision, "variant": variant,
        "num_classes": int(num_classes), "stage": stage, "input": first_in, "inputs": inputs,
        "output": {**first_out, "layout": layout if len(first_out["shape"]) == 4 else "NHW", "semantics": output,
                   "scale": "1/1" if output == "argmax-full" else "1/8"},
        "input_size": list(input_size), "checkpoint": checkpoint, "weights": weights,
        "sha256": sha256_file(artifact), "size_bytes": artifact.stat().st_size,
        "versions": library_versions(), "verification": verification, **graph, **extra,
        "created": now_iso(),
    }


def checkpoint_entry(path: str | os.PathLike | None) -> dict | str:
    """The manifest's ``checkpoint``: the file's absolute path (the manifest is read from anywhere) and
    sha256 (readers check it is still that file), or ``"random"`` for random weights."""
    return {"path": str(Path(path).absolute()), "sha256": sha256_file(path)} if path else "random"


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest`` (schema fields added) beside ``artifact`` atomically; returns its path."""
    return write_json(manifest_path(artifact), {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest})


def read_manifest(artifact: str | os.PathLike, required: bool = True) -> dict | None:
    """The validated manifest of ``artifact``; without one, an error (or None when not ``required``)."""
    path = manifest_path(artifact)
    if not path.is_file():
        if not required:
            return None
        raise TopformerDeployError(f"no manifest for {artifact}: expected {path} (re-export the model)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TopformerDeployError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise TopformerDeployError(f"{path} is not a topformer-deploy manifest")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise TopformerDeployError(f"{path}: unsupported manifest schema_version "
                                   f"{document.get('schema_version')!r} (this tool reads {SCHEMA_VERSION})")
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        raise TopformerDeployError(f"{path}: manifest lacks {', '.join(missing)}")
    return document


def declared_inputs(artifact: str | os.PathLike) -> list[dict]:
    """``[{name, shape, dtype}]`` of the inputs as the file itself declares them (what a runtime loads), read
    without a runtime: the flatbuffer's first subgraph (TFLite) or the graph's non-initializer inputs (ONNX)."""
    path = Path(artifact)
    if path.suffix.lower() == ".tflite":
        from ai_edge_litert import schema_py_generated as schema

        names = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
        graph = schema.Model.GetRootAs(path.read_bytes(), 0).Subgraphs(0)
        tensors = [graph.Tensors(graph.Inputs(i)) for i in range(graph.InputsLength())]
        return [{"name": t.Name().decode(), "shape": [int(d) for d in t.ShapeAsNumpy()],
                 "dtype": names.get(t.Type(), str(t.Type()))} for t in tensors]
    model = memoryview(path.read_bytes())
    graph = next((value for field, value in _protobuf_fields(model) if field == 7), None)   # ModelProto.graph
    if graph is None:
        raise ValueError("no graph in the ONNX file")
    fields = list(_protobuf_fields(graph))
    constants = {bytes(v) for f, tensor in fields if f == 5 for f2, v in _protobuf_fields(tensor) if f2 == 8}
    inputs = []
    for value_info in (value for field, value in fields if field == 11):                    # GraphProto.input
        info = dict(_protobuf_fields(value_info))                                           # name 1, type 2
        tensor = dict(_protobuf_fields(dict(_protobuf_fields(info[2]))[1]))                 # TypeProto.tensor_type
        dims = [dict(_protobuf_fields(d)) for f, d in _protobuf_fields(tensor.get(2, b"")) if f == 1]
        name = bytes(info[1])
        if name not in constants:
            inputs.append({"name": name.decode(), "shape": [d[1] if 1 in d else bytes(d.get(2, b"")).decode()
                                                            for d in dims],
                           "dtype": _ONNX_DTYPES.get(tensor.get(1), str(tensor.get(1)))})
    return inputs


#: ONNX TensorProto.DataType -> numpy dtype name
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def _protobuf_fields(message):
    """``(field number, value)`` of a protobuf message's wire format: varints as ints, the rest as memoryviews
    (ONNX graphs are read this way: the onnx package takes seconds to import, for four fields)."""
    message = memoryview(message)
    i = 0
    while i < len(message):
        key, i = _varint(message, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(message, i)
        elif wire in (1, 2, 5):
            size, i = (8, i) if wire == 1 else (4, i) if wire == 5 else _varint(message, i)
            value, i = message[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


def _varint(data, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def inputs_mismatch(manifest: dict, inputs: list[dict]) -> str | None:
    """How ``inputs`` (``[{shape, dtype}]``, as a file or a runtime reports them) differ from what ``manifest``
    records - its inputs and, for a whole network, its input size - or None when they agree. Names are not
    compared (runtimes name TFLite inputs after the signature or the tensor)."""
    def described(items):
        return sorted(f"{list(i['shape'])} {i['dtype']}" for i in items)

    try:
        recorded, actual, first = described(manifest["inputs"]), described(inputs), described([manifest["input"]])
        if recorded != actual:
            return f"its inputs are {', '.join(actual)}, the manifest records {', '.join(recorded)}"
        if first[0] not in recorded:
            return f"the manifest's input {first[0]} is none of its inputs ({', '.join(recorded)})"
        if manifest.get("stage", "full") != "full":
            return None
        shape, layout = manifest["input"]["shape"], manifest["input"].get("layout", "NHWC")
        size = (int(shape[2]), int(shape[3])) if layout == "NCHW" else (int(shape[1]), int(shape[2]))
        recorded_size = input_size_of(manifest)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return f"the manifest's inputs cannot be read ({type(exc).__name__}: {exc})"
    if recorded_size != size:
        return (f"its input is {size[0]}x{size[1]}, the manifest records an input size of "
                f"{recorded_size[0]}x{recorded_size[1]}")
    return None


def check_artifact(artifact: str | os.PathLike, manifest: dict) -> None:
    """Refuse an artifact that is not the one its manifest describes (an edited manifest, a replaced or damaged
    file): its sha256 and the inputs it declares must be the recorded ones. Run before it is timed, so that no
    result is ever filed under a configuration the file is not."""
    path = Path(artifact)
    where = f"{path} does not match its manifest {manifest_path(path).name}"
    actual, recorded = sha256_file(path), manifest.get("sha256")
    if actual != recorded:
        said = f"records {recorded[:16]}..." if isinstance(recorded, str) and recorded else "records none"
        raise TopformerDeployError(f"{where}: its sha256 is {actual[:16]}..., the manifest {said} (the file or the "
                                   "manifest changed after export); export it again")
    try:
        declared = declared_inputs(path)
    except ImportError:
        return  # no reader here: the inputs the runtime reports are compared after the first run instead
    except Exception as exc:  # noqa: BLE001 - flatbuffers / protobuf raise anything on a file they cannot read
        raise TopformerDeployError(f"{where}: cannot read its inputs ({type(exc).__name__}: {exc})") from None
    problem = inputs_mismatch(manifest, declared)
    if problem:
        raise TopformerDeployError(f"{where}: {problem}; export it again")


def quantize_array(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Real values -> what an int8 (or uint8) graph boundary takes (``real = scale * (q - zero_point)``)."""
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, limits.min, limits.max).astype(dtype)


def dequantize_array(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An int8 boundary tensor -> its real values."""
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
