"""The synthetic dataset: deterministic, labelled as documented, written as an ADE20K-style folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from topformer_deploy.artifact import MEAN, STD
from topformer_deploy.images import preprocess
from topformer_deploy.data import (CLASSES, NUM_CLASSES, generate_sample, iter_samples,
                                   write_dataset)
from topformer_deploy.errors import TopformerDeployError


def test_same_seed_same_sample_and_splits_differ():
    image, label = generate_sample(3, "val", 5, (64, 64))
    again_image, again_label = generate_sample(3, "val", 5, (64, 64))
    assert np.array_equal(image, again_image) and np.array_equal(label, again_label)
    other_image, _ = generate_sample(4, "val", 5, (64, 64))
    train_image, _ = generate_sample(3, "train", 5, (64, 64))
    assert not np.array_equal(image, other_image)
    assert not np.array_equal(image, train_image)


def test_sample_does_not_depend_on_how_many_are_drawn():
    fifth = list(iter_samples(6, (64, 64), seed=0, split="test"))[5]
    alone = next(iter_samples(1, (64, 64), seed=0, split="test", start=5))
    assert np.array_equal(fifth[0], alone[0]) and np.array_equal(fifth[1], alone[1])


def test_labels_in_range_and_classes_all_appear():
    seen = np.zeros(NUM_CLASSES, bool)
    for image, label in iter_samples(40, (96, 96), seed=1, split="train"):
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert label.shape == (96, 96) and label.dtype == np.uint8
        assert label.max() < NUM_CLASSES
        seen[np.unique(label)] = True
    assert seen.all(), [c for c, s in zip(CLASSES, seen) if not s]
    assert 8 <= NUM_CLASSES - 1 <= 20  # object/region classes besides the background


def test_unknown_split_is_a_clear_error():
    with pytest.raises(TopformerDeployError, match="unknown split"):
        generate_sample(0, "holdout", 0)


def test_write_dataset_ade_layout(tmp_path):
    out = write_dataset(tmp_path / "demo", count=3, size=(64, 80), seed=2, split="val")
    images = sorted((out / "images").glob("*.jpg"))
    labels = sorted((out / "annotations").glob("*.png"))
    assert [p.stem for p in images] == [p.stem for p in labels] == ["val_00000", "val_00001", "val_00002"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["classes"] == list(CLASSES) and info["reduce_zero_label"] is False and info["count"] == 3
    _, expected = generate_sample(2, "val", 1, (64, 80))
    with Image.open(labels[1]) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), expected)  # PNG labels are exact
    with Image.open(images[1]) as im:
        assert im.mode == "RGB" and im.size == (80, 64)
    assert not [p for p in out.rglob(".*")]  # no temp files left


def test_write_dataset_rejects_zero_count(tmp_path):
    with pytest.raises(TopformerDeployError):
        write_dataset(tmp_path, count=0)


def test_preprocess_normalises_and_resizes():
    image = np.zeros((10, 20, 3), np.uint8)
    image[..., 0] = 200
    x = preprocess(image, (10, 20))
    assert x.shape == (1, 3, 10, 20) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((200 - MEAN[0]) / STD[0])
    assert x[0, 2, 5, 5] == pytest.approx((0 - MEAN[2]) / STD[2])
    resized = preprocess(image, (32, 64))
    assert resized.shape == (1, 3, 32, 64)
    assert np.allclose(resized, resized[0, :, 0, 0][None, :, None, None])  # a flat image stays flat
    with pytest.raises(ValueError):
        preprocess(np.zeros((8, 8), np.uint8), (8, 8))


def test_module_command_writes_a_split(tmp_path, capsys):
    from topformer_deploy.data import main

    assert main([str(tmp_path / "d"), "--count", "2", "--size", "64", "--split", "test"]) == 0
    assert len(list((tmp_path / "d" / "images").glob("test_*.jpg"))) == 2
    assert "wrote 2 test images" in capsys.readouterr().out
