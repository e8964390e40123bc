"""The artifact manifest: ``<artifact>.json`` beside the artifact, describing what it expects and returns."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from ..files import write_atomic
from ..errors import TopformerDeployError

SCHEMA = "topformer-deploy/manifest"
SCHEMA_VERSION = 1
_LIBRARIES = ("topformer-deploy", "torch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "onnxsim",
              "numpy")
_REQUIRED = ("artifact", "format", "precision", "variant", "num_classes", "stage", "input", "inputs", "output")


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


def library_versions() -> dict[str, str | None]:
    """Installed versions of the tool and the libraries that shape an artifact (None when absent)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest`` beside ``artifact`` atomically (temp file + rename); returns the manifest path."""
    path = manifest_path(artifact)
    document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest}
    write_atomic(path, json.dumps(document, indent=2) + "\n")
    return path


def read_manifest(artifact: str | os.PathLike) -> dict:
    """The manifest of ``artifact``; raises TopformerDeployError if it is missing or not a valid manifest."""
    path = manifest_path(artifact)
    if not path.is_file():
        raise TopformerDeployError(f"no manifest for {artifact}: expected {path} (re-export the model)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopformerDeployError(f"cannot read manifest {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise TopformerDeployError(f"{path} is not a topformer-deploy manifest")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise TopformerDeployError(f"{path}: unsupported manifest schema_version "
                                   f"{document.get('schema_version')!r} (this tool reads {SCHEMA_VERSION})")
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        raise TopformerDeployError(f"{path}: manifest lacks {', '.join(missing)}")
    return document
