"""The job every artifact goes through: made in a staging folder, verified, described, then published.

``run_export_job`` is shared by the fp32/fp16 export, the int8 export and the breakdown's stage artifacts.
Nothing appears under the artifact's name until it passed verification: the converter writes into a hidden
staging folder beside the target (same file system, so publishing is a rename), and publishing writes the
side files and the manifest before the artifact itself, whose rename is the commit. A failure at any step
removes the staging folder and leaves no manifest behind.

Also here, what both export routes share: the argument checks, the converter call, the verification
inputs and the whole-network manifest.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import images
from ..artifact import FORMATS, OUTPUTS, build_manifest, checkpoint_entry, manifest_path, write_manifest
from ..errors import TopformerDeployError
from ..files import make_readable, staging_dir

Progress = Callable[[str], None]
PRECISIONS = {"onnx": ("fp32", "fp16", "int8"), "tflite": ("fp32", "fp16", "int8")}
INPUT_NAME = "image"


class VerificationError(TopformerDeployError):
    """The converted artifact does not match PyTorch closely enough; nothing was written."""

    exit_code = 4


@dataclass
class ExportResult:
    """A published artifact: its path, its manifest's path and the manifest."""

    path: Path
    manifest_path: Path
    manifest: dict


def output_directory(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, created if needed; a clear error when it cannot be."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TopformerDeployError(f"cannot create output directory {out_dir}: {exc.strerror}") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise TopformerDeployError(f"cannot write to output directory {out_dir}: permission denied")
    return out_dir


def run_export_job(target: Path, make: Callable[[Path, Path], dict | None], describe: Callable[..., dict], *,
                   verify: Callable[[Path, dict], dict | None] | None = None, side_files: dict[str, str] | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """Make, verify, describe and publish one artifact at ``target``.

    * ``make(staged, work) -> info``: write the artifact at ``staged`` (scratch files go in ``work``);
      ``info`` (a dict, or None) is passed on.
    * ``verify(staged, info) -> figures``: run it against the reference; raise VerificationError to refuse it.
    * ``describe(staged, info, verification) -> manifest``: the manifest (see :mod:`topformer_deploy.artifact`).
    * ``side_files``: ``{suffix: file name in work}`` published beside the artifact as ``<artifact><suffix>``.

    The converters' banners and logs (native stdout/stderr) are silenced meanwhile, so ``--json`` stays clean.
    """
    from .offline import quiet_native_output

    step = progress or (lambda name: None)
    with staging_dir(output_directory(target.parent), target.stem) as work, quiet_native_output():
        staged = work / target.name
        step("convert")
        info = make(staged, work) or {}
        verification = None
        if verify is not None:
            step("verify")
            verification = verify(staged, info)
        step("write")
        manifest = describe(staged, info, verification)
        return publish(staged, target, manifest, {suffix: work / name for suffix, name in (side_files or {}).items()})


def publish(staged: Path, target: Path, manifest: dict, side_files: dict[str, Path]) -> ExportResult:
    """Move a staged artifact into place: old artifact out, side files and manifest in, the artifact last."""
    target.unlink(missing_ok=True)                  # never a new manifest beside an old artifact
    written: list[Path] = []
    try:
        for suffix, path in side_files.items():
            final = target.with_name(target.name + suffix)
            make_readable(path)
            os.replace(path, final)
            written.append(final)
        written.append(write_manifest(target, manifest))
        make_readable(staged)
        os.replace(staged, target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return ExportResult(target, manifest_path(target), manifest)


def describe_graph(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(inputs, outputs, graph facts) of an artifact as its runtime and its file report them."""
    from .verify import ArtifactRunner

    runner = ArtifactRunner(path)
    fmt = runner.format
    if fmt == "tflite":
        from .tflite import tflite_op_histogram

        histogram, names = tflite_op_histogram(path), ("TRANSPOSE", "RESHAPE", "PAD")
    else:
        from .onnx import onnx_op_histogram

        histogram, names = onnx_op_histogram(path), ("Transpose", "Reshape", "Pad")
    graph = {"op_histogram": histogram, **{f"{op.lower()}_count": histogram.get(op, 0) for op in names}}
    return runner.inputs(), runner.outputs(), graph


def model_fields(model, input_size: tuple[int, int]) -> dict:
    """The manifest's ``model`` (the architecture, its official configs) and ``pooling`` (how the pyramid
    pooling was written for this input size) of an artifact of ``model``."""
    from .prepare import pooling_record

    return {"model": model.describe(), "pooling": pooling_record(model, input_size)}


def describe_full_model(staged: Path, model, fmt, precision, output, input_size, checkpoint, weights,
                        verification) -> dict:
    """The manifest of a whole-network artifact (both export routes)."""
    from ..model.complexity import macs_by_stage

    inputs, outputs, graph = describe_graph(staged)
    return build_manifest(artifact=staged, fmt=fmt, precision=precision, variant=model.variant,
                          num_classes=model.num_classes, stage="full", inputs=inputs, outputs=outputs,
                          input_size=input_size, output=output, checkpoint=checkpoint_entry(checkpoint),
                          weights=weights, verification=verification, graph=graph,
                          macs=macs_by_stage(model, *input_size), **model_fields(model, input_size))


def convert(module, example: tuple, path: Path, fmt: str, precision: str, output: str, opset=None) -> None:
    """Run the converter on ``module``; its failures become one-line TopformerDeployErrors."""
    try:
        if fmt == "onnx":
            from .onnx import convert_onnx

            convert_onnx(module, example, path, [INPUT_NAME], [output_name(output)], opset=opset,
                         precision=precision)
        else:
            from .tflite import convert_tflite

            convert_tflite(module, example, path, precision=precision, nhwc=True)
    except TopformerDeployError:
        raise
    except Exception as exc:  # converters raise anything; report it in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TopformerDeployError(f"{fmt} conversion failed: {type(exc).__name__}: {first[:300]}") from exc


def check_arguments(fmt, precision, output, weights, checkpoint) -> None:
    """The checks every export route shares: format, precision, output kind, where the weights come from."""
    if fmt not in FORMATS:
        raise TopformerDeployError(f"unknown format {fmt!r}: choose onnx or tflite")
    if precision not in PRECISIONS[fmt]:
        raise TopformerDeployError(f"{fmt} export supports precision {', '.join(PRECISIONS[fmt])}, not {precision}")
    if output not in OUTPUTS:
        raise TopformerDeployError(f"unknown output {output!r}: choose {', '.join(OUTPUTS)}")
    if weights not in ("checkpoint", "random"):
        raise TopformerDeployError(f"weights must be 'checkpoint' or 'random', got {weights!r}")
    if weights == "checkpoint" and checkpoint is None:
        raise TopformerDeployError("weights='checkpoint' needs the checkpoint path (or pass weights='random')")


def output_name(output: str) -> str:
    """The graph output's name: ``logits``, or ``classes`` for a class map."""
    return "logits" if output == "logits" else "classes"


def verification_inputs(input_size: tuple[int, int], random_count: int = 2, photo_count: int = 3) -> list[np.ndarray]:
    """Seeded random batches plus scikit-image's bundled photos, all NCHW and normalised."""
    return images.random_inputs((1, 3, *input_size), random_count) + images.sample_photos(input_size, photo_count)
