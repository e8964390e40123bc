"""The breakdown's artifacts: the whole network and each stage, exported with the same converter and
precision through the export job, each with the real tensors it receives on a photo as its ``--input``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..artifact import artifact_name, build_manifest, checkpoint_entry
from ..errors import TopformerDeployError
from ..export.job import describe_graph, model_fields, run_export_job
from ..files import write_atomic
from ..images import sample_photos
from ..model import TopFormer
from ..model.complexity import macs_by_stage
from ..model.stage_modules import build_stages, stage_inputs
from ..model.stages import ALL_STAGES, stage_input_names, stage_output_names
from .options import BreakdownOptions, Progress


def sample_image(height: int, width: int) -> torch.Tensor:
    """A real photo (scikit-image's astronaut, shipped with the package), preprocessed as inference does."""
    return torch.from_numpy(sample_photos((height, width), count=1)[0])


def prepare_model(model: TopFormer, fmt: str, input_size: tuple[int, int] | None = None) -> TopFormer:
    """The model exactly as the exporter converts it: BN folded, the pooling fixed for ``input_size`` (exact
    average pools or pooling matrices; None keeps the official adaptive pooling), NHWC rewrite for TFLite."""
    from ..export.prepare import fold_for_export
    from ..export.rewrite import rewrite_for_nhwc

    folded = fold_for_export(model, input_size)
    return (rewrite_for_nhwc(folded) if fmt == "tflite" else folded).eval()


def runtime_inputs(path: Path) -> list[dict]:
    """Name, shape and dtype of each input as the device runner sees them (TFLite: tensor names such as
    ``serving_default_args_0``, not the signature's), in the runtime's order."""
    if path.suffix == ".onnx":
        from ..export.verify import ArtifactRunner

        return ArtifactRunner(path).inputs()
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_input_details()
    return [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
            for d in details]


def arrange_inputs(tensors: tuple[torch.Tensor, ...], wanted: list[dict], nhwc: bool) -> dict[str, np.ndarray]:
    """Map the stage's NCHW tensors onto the runtime's inputs (by shape, in order for equal shapes)."""
    arrays = [t.detach().numpy() for t in tensors]
    if nhwc:
        arrays = [a.transpose(0, 2, 3, 1) if a.ndim == 4 else a for a in arrays]
    free = list(range(len(arrays)))
    feeds = {}
    for info in wanted:
        match = next((i for i in free if list(arrays[i].shape) == list(info["shape"])), None)
        if match is None:
            raise TopformerDeployError(f"stage input {info['name']} {info['shape']} matches none of "
                                       f"{[list(a.shape) for a in arrays]}")
        free.remove(match)
        feeds[info["name"]] = np.ascontiguousarray(arrays[match], dtype=np.float32)
    return feeds


def write_inputs(feeds: dict[str, np.ndarray], path: Path) -> Path:
    """Save the runner's ``--input``: .npy for one input, .npz keyed by input name for several."""
    path = path.with_name(path.name + (".npy" if len(feeds) == 1 else ".npz"))
    buffer = io.BytesIO()
    if len(feeds) == 1:
        np.save(buffer, next(iter(feeds.values())))
    else:
        np.savez(buffer, **feeds)
    return write_atomic(path, buffer.getvalue())


def export_breakdown_artifacts(model: TopFormer, options: BreakdownOptions, out_dir: Path, weights: str,
                               progress: Progress, checkpoint: str | None = None) -> dict[str, dict]:
    """Export the whole network and its five stages; -> {stage: {"path", "input_file", "inputs"}}."""
    h, w = options.input_size
    fmt, precision = options.fmt, options.precision
    prepared = prepare_model(model, fmt, (h, w))
    image = sample_image(h, w)
    tensors = stage_inputs(prepared, image)
    modules = build_stages(prepared, h, w)
    modules["full"], tensors["full"] = prepared, (image,)
    samples = _calibration_samples(prepared, options, progress) if precision == "int8" else None
    macs = macs_by_stage(model, h, w)
    indices = tuple(prepared.backbone.decode_out_indices)
    artifacts = {}
    for stage in ("full", *ALL_STAGES):
        # named like export's artifacts, the stage in the output's place: ..._fp32_tpm.tflite, ..._fp32_full.tflite
        target = Path(out_dir) / artifact_name(model.variant, (h, w), precision, stage, fmt)
        progress(f"exporting {stage} -> {target.name}" + (f" (int8, {len(samples[stage])} calibration samples)"
                                                           if samples else ""))
        names = (stage_input_names(stage, indices), stage_output_names(stage, indices))

        def make(staged: Path, work: Path, stage=stage, names=names) -> None:
            _convert_stage(modules[stage], tensors[stage], staged, work, options, names,
                           samples[stage] if samples else None)

        def describe(staged: Path, info: dict, verification, stage=stage) -> dict:
            inputs, outputs, graph = describe_graph(staged)
            return build_manifest(artifact=staged, fmt=fmt, precision=precision, variant=model.variant,
                                  num_classes=model.num_classes, stage=stage, inputs=inputs, outputs=outputs,
                                  input_size=(h, w), output="argmax-full" if stage == "post" else "logits",
                                  checkpoint=checkpoint_entry(checkpoint), weights=weights, verification=None,
                                  graph=graph, macs=macs, **model_fields(model, (h, w)))

        result = run_export_job(target, make, describe)
        wanted = runtime_inputs(result.path)
        feeds = arrange_inputs(tensors[stage], wanted, nhwc=fmt == "tflite")
        input_file = write_inputs(feeds, target.with_name(f"{target.stem}.inputs"))
        artifacts[stage] = {"path": result.path, "input_file": input_file, "inputs": wanted}
    return artifacts


def _convert_stage(module, inputs, staged: Path, work: Path, options: BreakdownOptions, names, samples) -> None:
    """One stage with the exporter's converters, or its int8 routes (PT2E for TFLite, ORT QDQ for ONNX)."""
    from ..export.onnx import convert_onnx

    if options.precision != "int8":
        if options.fmt == "tflite":
            from ..export.tflite import convert_tflite

            convert_tflite(module, inputs, staged, precision=options.precision, nhwc=True)
        else:
            convert_onnx(module, inputs, staged, *names, precision=options.precision)
    elif options.fmt == "tflite":
        from ..export.int8_tflite import quantize_tflite_pt2e

        quantize_tflite_pt2e(module, staged, samples)
    else:
        from ..export.int8_onnx import quantize_onnx

        fp32 = work / "fp32.onnx"
        convert_onnx(module, inputs, fp32, *names)
        quantize_onnx(fp32, staged, samples)


def _calibration_samples(prepared: TopFormer, options: BreakdownOptions, progress: Progress) -> dict[str, list]:
    """Every stage's real inputs on every calibration image: one float pass, calibrated once for all stages.

    Calibration is MinMax on both routes, so each tensor of a stage sees exactly the values it sees in the
    whole model and gets the whole int8 model's scale and zero point (the tests check this for ONNX).
    """
    if not options.calibration:
        raise TopformerDeployError("int8 breakdown needs calibration images (--calib DIR or --calib synthetic)")
    progress(f"calibration: one float pass over {len(options.calibration)} images")
    passes = [stage_inputs(prepared, torch.from_numpy(np.asarray(image, dtype=np.float32)))
              for image in options.calibration]
    samples = {stage: [tuple(t.numpy() for t in p[stage]) for p in passes] for stage in ALL_STAGES}
    samples["full"] = samples["tpm"]
    return samples
