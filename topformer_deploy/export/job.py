"""The job every artifact goes through: made in a staging folder, verified, described, then published.

``run_export_job`` is shared by the fp32/fp16 export, the int8 export and the breakdown's stage artifacts.
Nothing appears under the artifact's name until it passed verification: the converter writes into a hidden
staging folder beside the target (same file system, so publishing is a rename), the manifest is written
there too, and publishing is renames only: the side files and the manifest before the artifact itself,
whose rename is the commit. A failure at any step (a full disk included) removes the staging folder and
leaves nothing behind; if native code kills the process, the watchdog of :mod:`.native` does it.

Also here, what both export routes share: the argument checks, the converter call, the verification
inputs and the whole-network manifest.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
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
    """``out_dir`` as a Path, created if needed and checked by creating a file in it; a clear error otherwise."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TopformerDeployError(f"cannot create output directory {out_dir}: {exc.strerror}") from exc
    try:
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as exc:
        raise TopformerDeployError(f"cannot write to output directory {out_dir}: {exc.strerror}") from exc
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

    The converters' banners and logs (native stdout/stderr) are silenced meanwhile, so ``--json`` stays clean;
    a watchdog removes the staging folder if native code kills the process (:mod:`.native`). Any failure is
    one TopformerDeployError: a file that cannot be written (full disk, read-only) names the target, any other
    exception names the step and adds the converter's last meaningful line.
    """
    from .native import quiet_native_output

    current = ["convert"]

    def step(name: str) -> None:
        current[0] = name.split()[0]  # "calibrate 3/32" -> "calibrate"
        if progress is not None:
            progress(name)

    native = None
    try:
        with staging_dir(output_directory(target.parent), target.stem) as work:
            native = quiet_native_output(f"exporting {target.name}", remove=[work],
                                         orphans=[(manifest_path(target), target)])
            with native:
                staged = work / target.name
                step("convert")
                info = make(staged, work) or {}
                verification = None
                if verify is not None:
                    step("verify")
                    verification = verify(staged, info)
                step("write")
                manifest = describe(staged, info, verification)
                files = {suffix: work / name for suffix, name in (side_files or {}).items()}
                return publish(staged, target, manifest, files)
    except TopformerDeployError:
        raise
    except Exception as exc:  # converters, quantizers and runtimes raise anything: one line
        cannot_write = isinstance(exc, OSError) and exc.errno in WRITE_ERRORS
        raise TopformerDeployError(write_failure(target, exc) if cannot_write else job_failure(
            target, current[0], exc, native.last_line() if native else None)) from exc


#: errno values that mean "this file system will not take the file" (full, quota, too big, read-only, denied).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def write_failure(target: Path, exc: OSError) -> str:
    """``cannot write <target>: No space left on device (1.2 MB free there); nothing was written`` (a library's
    own file outside the output directory, e.g. a temp file in /tmp, is named instead of the target)."""
    failed = Path(exc.filename) if exc.filename else target
    where = target if failed.absolute().is_relative_to(target.parent.absolute()) else failed
    free = ""
    if exc.errno == errno.ENOSPC:
        with contextlib.suppress(OSError):
            free = f" ({shutil.disk_usage(where.parent).free / 1e6:.1f} MB free there)"
    return f"cannot write {where}: {exc.strerror or exc}{free}; nothing was written"


def job_failure(target: Path, step: str, exc: BaseException, native_line: str | None) -> str:
    """One line for an unexpected exception in the job: the step, the exception, what native code said."""
    said = f" (native output: {native_line[:300]})" if native_line and native_line not in str(exc) else ""
    return f"exporting {target.name} failed at '{step}': {one_line(exc)}{said}; nothing was written"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def publish(staged: Path, target: Path, manifest: dict, side_files: dict[str, Path]) -> ExportResult:
    """Move a staged artifact into place, the artifact last.

    Everything is written inside the staging folder first (the manifest too), so a full disk fails there
    and changes nothing visible; publishing is renames only: the old artifact out, then the side files, the
    manifest and the artifact in (a failed rename takes back the ones done).
    """
    moves = [(path, target.with_name(target.name + suffix)) for suffix, path in side_files.items()]
    moves += [(write_manifest(staged, manifest), manifest_path(target)), (staged, target)]
    for path, _ in moves:
        make_readable(path)
    target.unlink(missing_ok=True)                  # never a new manifest beside an old artifact
    done: list[Path] = []
    try:
        for path, final in moves:
            os.replace(path, final)
            done.append(final)
    except BaseException:
        for final in done:
            final.unlink(missing_ok=True)
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
    """Run the converter on ``module`` (inside the job, which turns its failures into one line)."""
    if fmt == "onnx":
        from .onnx import convert_onnx

        convert_onnx(module, example, path, [INPUT_NAME], [output_name(output)], opset=opset, precision=precision)
    else:
        from .tflite import convert_tflite

        convert_tflite(module, example, path, precision=precision, nhwc=True)


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


def checked_modules(model, fmt: str, output: str, input_size: tuple[int, int], checkpoint=None):
    """(module to convert, reference module) of the unfolded ``model``, refused before any conversion when
    its weights are not finite (CheckpointError) or when PyTorch's own logits on a random input are not
    (VerificationError: the weights overflow float32; an int8 calibration on such ranges can even crash)."""
    import torch

    from ..model.weights import check_finite_weights
    from .prepare import export_modules, fold_for_export

    check_finite_weights(model, str(checkpoint or "the model"))
    folded = fold_for_export(model)
    with torch.no_grad():
        logits = folded(torch.from_numpy(verification_inputs(input_size, 1, 0)[0]))
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise VerificationError(f"verification failed: PyTorch's own outputs hold {bad} NaN/Inf values of "
                                f"{logits.numel()} on a random input (the weights overflow float32); "
                                "nothing was exported")
    return export_modules(folded, fmt, output, input_size)
