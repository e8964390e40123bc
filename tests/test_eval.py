"""Metrics against hand-computed confusion matrices, and `eval` end to end on a few tiny images."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from topformer_deploy import build_model
from topformer_deploy.cli import main
from topformer_deploy.data import NUM_CLASSES, generate_sample, write_dataset
from topformer_deploy.eval.evaluate import evaluate_models, label_convention
from topformer_deploy.eval.metrics import confusion_matrix, prepare_labels, scores
from topformer_deploy.eval.sensitivity import stage_sensitivity
from topformer_deploy.images import preprocess

SIZE = (64, 64)


# ----------------------------------------------------------------------------------------------- metrics
def test_confusion_matrix_by_hand():
    label = np.array([[0, 0, 1], [1, 2, 2], [-1, 2, 1]])
    pred = np.array([[0, 1, 1], [1, 2, 0], [2, 2, 2]])
    cm = confusion_matrix(pred, label, 3)
    # rows = truth, columns = prediction; the -1 pixel is ignored
    assert cm.tolist() == [[1, 1, 0],
                           [0, 2, 1],
                           [1, 0, 2]]
    result = scores(cm)
    # IoU = TP / (row + column - TP): class0 1/(2+2-1), class1 2/(3+3-2), class2 2/(3+3-2)
    assert result["per_class_iou"] == pytest.approx([1 / 3, 0.5, 0.5])
    assert result["miou"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 8)
    assert result["pixels"] == 8


def test_absent_class_left_out_of_the_mean_but_false_positives_count():
    label = np.array([0, 0, 1, 1])
    cm = confusion_matrix(np.array([0, 0, 1, 1]), label, 4)
    result = scores(cm)
    assert result["per_class_iou"] == [1.0, 1.0, None, None]
    assert result["miou"] == 1.0
    wrong = scores(confusion_matrix(np.array([0, 3, 1, 1]), label, 4))
    assert wrong["per_class_iou"][3] == 0.0  # predicted, never labelled: IoU 0, in the mean
    assert wrong["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_predictions_out_of_range_are_rejected():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([5]), np.array([0]), 3)


def test_label_conventions():
    raw = np.array([0, 1, 2, 255])
    assert prepare_labels(raw, reduce_zero_label=True, ignore_index=255).tolist() == [-1, 0, 1, -1]
    assert prepare_labels(raw, reduce_zero_label=False, ignore_index=0).tolist() == [-1, 1, 2, 255]
    assert prepare_labels(raw, reduce_zero_label=False, ignore_index=None).tolist() == [0, 1, 2, 255]
    assert label_convention(None) == (True, 255)  # ADE20K
    assert label_convention({"reduce_zero_label": False, "ignore_index": 255}) == (False, 255)
    assert label_convention({"reduce_zero_label": False}, ignore_index=None, reduce_zero_label=True) == (True, None)


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "val", count=3, size=SIZE, seed=7, split="val")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight TopFormer-Tiny for the demo's classes, in the official float16 layout."""
    torch.manual_seed(0)
    model = build_model("tiny", NUM_CLASSES)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_demo_random.pth"
    torch.save({"meta": {"note": "test"}, "state_dict": {k: v.half() if v.is_floating_point() else v
                                                         for k, v in model.state_dict().items()}}, path)
    return path


def _direct_scores(checkpoint_path, data_dir, count):
    """The same figures computed without evaluate.py's model plumbing."""
    from topformer_deploy import load_checkpoint

    model = load_checkpoint(checkpoint_path)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    from PIL import Image
    for i in range(count):
        image = np.asarray(Image.open(data_dir / "images" / f"val_{i:05d}.jpg").convert("RGB"))
        _, label = generate_sample(7, "val", i, SIZE)
        with torch.no_grad():
            logits = model(torch.from_numpy(preprocess(image, SIZE)))
        pred = F.interpolate(logits, size=SIZE, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
        cm += confusion_matrix(pred, label.astype(np.int64), NUM_CLASSES)
    return scores(cm)


def test_evaluate_checkpoint_matches_direct_computation(checkpoint, demo_data):
    seen = []
    rows = evaluate_models([str(checkpoint)], demo_data, on_image=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    (row,) = rows
    expected = _direct_scores(checkpoint, demo_data, 3)
    assert row["miou"] == pytest.approx(expected["miou"])
    assert row["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    assert row["agreement"] == 1.0 and row["reference"] == str(checkpoint)
    assert row["format"] == "pytorch" and row["input_size"] == "native" and row["images"] == 3
    assert row["reduce_zero_label"] is False  # taken from dataset.json


def test_agreement_between_two_different_models(checkpoint, demo_data, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": build_model("tiny", NUM_CLASSES).state_dict()}, other)
    rows = evaluate_models([str(checkpoint), str(other)], demo_data, num_images=2, input_size=(64, 64))
    assert rows[0]["agreement"] == 1.0
    assert 0.0 <= rows[1]["agreement"] < 1.0  # two random nets disagree somewhere
    assert rows[1]["input_size"] == [64, 64] and rows[1]["images"] == 2


def test_ade20k_convention_gives_the_same_figures(checkpoint, demo_data, tmp_path):
    """The same labels stored ADE20K-style (0 = ignore, class k as k + 1, no dataset.json) score the same."""
    import shutil

    from PIL import Image

    ade = tmp_path / "ade"
    shutil.copytree(demo_data / "images", ade / "images")
    (ade / "annotations").mkdir()
    for png in (demo_data / "annotations").glob("*.png"):
        Image.fromarray((np.asarray(Image.open(png)) + 1).astype(np.uint8)).save(ade / "annotations" / png.name)
    demo = evaluate_models([str(checkpoint)], demo_data)[0]
    ade_row = evaluate_models([str(checkpoint)], ade)[0]  # ADE20K defaults: reduce_zero_label, ignore 255
    assert ade_row["reduce_zero_label"] is True and ade_row["ignore_index"] == 255
    assert ade_row["miou"] == pytest.approx(demo["miou"]) and ade_row["pixel_accuracy"] == demo["pixel_accuracy"]


def test_eval_cli_json_and_table(checkpoint, demo_data):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert 0.0 <= row["miou"] <= 1.0 and not math.isnan(row["pixel_accuracy"])
    table = runner.invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data),
                                 "--num-images", "1", "--per-class"])
    assert table.exit_code == 0, table.output
    assert "mIoU" in table.stdout and checkpoint.name in table.stdout and "sky" in table.stdout


def test_eval_cli_class_count_mismatch_is_one_line(checkpoint, demo_data):
    # with ADE20K's convention the demo data has 10 classes, the model 11: a clear error, no traceback
    result = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data),
                                       "--reduce-zero-label"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "11 classes" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--data", "{empty}"], "images/ and annotations/"),
    (["--data", "{data}", "--ignore-index", "abc"], "not a label value"),
])
def test_eval_cli_bad_input(checkpoint, demo_data, tmp_path, args, message):
    args = [a.format(empty=tmp_path, data=demo_data) for a in args]
    result = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), *args])
    assert result.exit_code == 2 and message in result.stderr


def test_eval_cli_sensitivity_takes_one_checkpoint(checkpoint, demo_data):
    result = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--model", str(checkpoint),
                                       "--data", str(demo_data), "--sensitivity"])
    assert result.exit_code == 2 and "exactly one float checkpoint" in result.stderr


def test_eval_cli_missing_checkpoint(demo_data, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "nope.pth"), "--data", str(demo_data)])
    assert result.exit_code == 2 and result.stderr.startswith("error: checkpoint not found")


def test_stage_sensitivity_reports_drop_per_stage(checkpoint, demo_data, tmp_path):
    """The hook the int8 export fills: here a stand-in 'quantizer' that zeroes one stage's classifier-free
    weights, so each stage's drop is measurable and the plumbing is exercised for real."""
    from topformer_deploy import load_checkpoint

    def damage_stage(ckpt, stage):
        model = load_checkpoint(ckpt)
        prefix = {"tpm": "backbone.tpm.", "sase": "backbone.trans.", "sim": "backbone.SIM.",
                  "head": "decode_head."}[stage]
        state = {k: (v * 0.5 if k.startswith(prefix) and v.is_floating_point() else v)
                 for k, v in model.state_dict().items()}
        out = tmp_path / f"{stage}.pth"
        torch.save({"state_dict": state}, out)
        return str(out)

    rows = stage_sensitivity(str(checkpoint), demo_data, damage_stage, stages=["tpm", "head"], num_images=1)
    assert [r["stage"] for r in rows] == ["none (float)", "tpm", "head"]
    assert rows[0]["miou_drop_points"] == 0.0
    for row in rows[1:]:
        assert row["miou_drop_points"] == pytest.approx(100 * (rows[0]["miou"] - row["miou"]))
        assert row["reference"] == str(checkpoint)


def test_shipped_demo_model_segments_held_out_images(tmp_path):
    """models/topformer_tiny_demo.pth still fits the generator: well above chance on unseen val images."""
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "models" / "topformer_tiny_demo.pth"
    data = write_dataset(tmp_path / "val", count=8, size=(256, 256), seed=0, split="val")
    (row,) = evaluate_models([str(demo)], data)
    assert row["miou"] > 0.5 and row["pixel_accuracy"] > 0.8  # random weights score about 0.05 / 0.1


# ----------------------------------------------------------------------------------------------- artifacts
class _Exports(dict):
    """fp32 exports of the test checkpoint at 64x64 with their manifests, each made on first use."""

    def __init__(self, checkpoint, out):
        super().__init__()
        self.checkpoint, self.out = checkpoint, out

    def __missing__(self, fmt):
        from topformer_deploy import load_checkpoint
        from topformer_deploy.export import export_model

        path = export_model(load_checkpoint(self.checkpoint), fmt, self.out, input_size=SIZE,
                            checkpoint=self.checkpoint).path
        self[fmt] = path
        return path


@pytest.fixture(scope="module")
def artifacts(checkpoint, tmp_path_factory):
    return _Exports(checkpoint, tmp_path_factory.mktemp("artifacts"))


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("tflite", marks=pytest.mark.slow)])
def test_eval_fp32_artifacts_match_the_checkpoint(fmt, checkpoint, demo_data, artifacts):
    result = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--model", str(artifacts[fmt]),
                                       "--data", str(demo_data), "--input-size", "64", "--json"])
    assert result.exit_code == 0, result.output
    torch_row, row = json.loads(result.stdout)
    assert row["format"] == fmt and row["precision"] == "fp32" and row["input_size"] == [64, 64]
    assert row["reference"] == str(checkpoint)
    assert row["agreement"] >= 0.999  # fp32 conversion: (almost) every pixel the same class
    assert abs(row["miou"] - torch_row["miou"]) < 0.002


def test_broken_artifact_is_one_clear_line(demo_data, artifacts, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    manifest = artifacts["onnx"].with_name(artifacts["onnx"].name + ".json")
    (tmp_path / "broken.onnx.json").write_text(manifest.read_text())
    result = CliRunner().invoke(main, ["eval", "--model", str(broken), "--data", str(demo_data)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot load {broken}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_agreement_reference_comes_from_the_manifest(demo_data, artifacts, checkpoint):
    (row,) = evaluate_models([str(artifacts["onnx"])], demo_data, num_images=1)
    assert row["reference"] == str(checkpoint) and row["agreement"] >= 0.999


# ----------------------------------------------------------------------------------------- post-processing
def test_each_post_processing_method_is_one_row(demo_data, tmp_path):
    """The trained demo model scored by every method: the exact ones agree fully with the reference's exact
    map and with each other, the cheap ones give up some agreement; an in-graph class map gets one row."""
    from pathlib import Path

    from topformer_deploy.postprocess import POST_METHODS

    demo = str(Path(__file__).resolve().parents[1] / "models" / "topformer_tiny_demo.pth")
    data = write_dataset(tmp_path / "val", count=2, size=(128, 128), seed=0, split="val")
    rows = {r["post"]: r for r in evaluate_models([demo], data, post=POST_METHODS)}
    assert list(rows) == list(POST_METHODS) and all(r["name"] == "topformer_tiny_demo.pth" for r in rows.values())
    assert rows["sparse"]["agreement"] == rows["dense"]["agreement"] == 1.0
    assert rows["sparse"]["miou"] == rows["dense"]["miou"]
    assert 0.9 < rows["nearest"]["agreement"] < 1.0
    assert rows["nearest"]["agreement"] < rows["bilinear-quarter"]["agreement"] < 1.0
    with pytest.raises(Exception, match="unknown post-processing method"):
        evaluate_models([demo], data, post=("bicubic",))


def test_eval_cli_post_option(checkpoint, demo_data):
    result = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data), "--num-images",
                                       "1", "--post", "sparse", "--post", "nearest", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["post"] for r in json.loads(result.stdout)] == ["sparse", "nearest"]
    table = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data),
                                      "--num-images", "1", "--post", "nearest"])
    assert table.exit_code == 0 and "nearest" in table.stdout
    bad = CliRunner().invoke(main, ["eval", "--model", str(checkpoint), "--data", str(demo_data), "--post", "x"])
    assert bad.exit_code == 2 and "'x' is not one of" in bad.stderr


@pytest.mark.slow
def test_in_graph_class_maps_get_one_row(checkpoint, demo_data, artifacts):
    from topformer_deploy import load_checkpoint
    from topformer_deploy.export import export_model

    in_graph = export_model(load_checkpoint(checkpoint), "onnx", artifacts.out / "argmax", input_size=SIZE,
                            output="argmax-full", checkpoint=checkpoint, verify=False).path
    rows = evaluate_models([str(checkpoint), str(in_graph)], demo_data, num_images=2, post=("sparse", "nearest"))
    assert [(r["format"], r["post"], r["output"]) for r in rows] == [
        ("pytorch", "sparse", "logits"), ("pytorch", "nearest", "logits"), ("onnx", "in-graph", "argmax-full")]
    assert rows[2]["agreement"] > 0.99  # onnxruntime's resize + argmax against PyTorch's exact map
