"""Calibration images: folders (recursive, any size/mode, corrupt files skipped), synthetic, clear errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from topformer_deploy.images import preprocess
from topformer_deploy.errors import TopformerDeployError
from topformer_deploy.export.calibration import (CalibrationError, CalibrationWarning, find_images,
                                                 load_calibration_images)

SIZE = (64, 64)


def _photo(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture()
def image_folder(tmp_path):
    """4 readable images of different sizes/modes (one in a subfolder), a corrupt jpg, a hidden file, a txt."""
    Image.fromarray(_photo(50, 70, 0)).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(_photo(80, 40, 1)[..., 0]).save(tmp_path / "b_grey.PNG")
    Image.fromarray(np.dstack([_photo(64, 64, 2), np.full((64, 64), 200, np.uint8)])).save(tmp_path / "c_rgba.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(_photo(30, 90, 3)).save(tmp_path / "sub" / "d.bmp")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.fromarray(_photo(20, 20, 4)).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_is_searched_recursively_and_skips_hidden_and_other_files(image_folder):
    names = [p.relative_to(image_folder).as_posix() for p in find_images(image_folder)]
    assert names == ["a.jpg", "b_grey.PNG", "broken.jpg", "c_rgba.png", "sub/d.bmp"]


def test_corrupt_file_and_the_shortfall_are_one_warning_each(image_folder):
    with pytest.warns(CalibrationWarning) as caught:
        images = load_calibration_images(image_folder, count=10, input_size=SIZE)
    messages = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
    assert len(messages) == 2 and "broken.jpg" in messages[0] and "only 4 usable calibration images" in messages[1]
    assert len(images) == 4
    for x in images:
        assert x.shape == (1, 3, *SIZE) and x.dtype == np.float32 and np.isfinite(x).all()


def test_warn_callback_replaces_the_warnings(image_folder):
    said = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the test
        images = load_calibration_images(image_folder, 10, SIZE, warn=said.append)
    assert len(images) == 4 and len(said) == 2
    assert said[0].startswith("skipping calibration image ") and "broken.jpg" in said[0]
    assert said[1].startswith("only 4 usable calibration images") and "(10 asked for)" in said[1]


def test_preprocessing_is_exactly_inference_preprocessing(image_folder):
    images = load_calibration_images(image_folder / "sub", 1, SIZE)
    rgb = np.asarray(Image.open(image_folder / "sub" / "d.bmp").convert("RGB"))
    np.testing.assert_array_equal(images[0], preprocess(rgb, SIZE))
    # normalised with the manifest mean/std: a pure-mean image maps to zero
    assert abs(float(preprocess(np.full((8, 8, 3), (123.675, 116.28, 103.53)).astype(np.uint8), SIZE).mean())) < 0.01


def test_grey_and_rgba_images_become_three_channels(image_folder):
    images = load_calibration_images(image_folder, 10, SIZE, warn=lambda message: None)
    for x, name in zip(images[1:3], ("b_grey.PNG", "c_rgba.png")):
        rgb = np.asarray(Image.open(image_folder / name).convert("RGB"))
        np.testing.assert_array_equal(x, preprocess(rgb, SIZE))
    grey = images[1][0] * np.asarray([58.395, 57.12, 57.375])[:, None, None] + np.asarray(
        [123.675, 116.28, 103.53])[:, None, None]
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-3)  # R == G for a grey photo


def test_count_picks_a_seeded_subset(image_folder):
    first = load_calibration_images(image_folder, 2, SIZE, seed=3, warn=lambda message: None)
    again = load_calibration_images(image_folder, 2, SIZE, seed=3, warn=lambda message: None)
    assert len(first) == 2
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_progress_is_reported(image_folder):
    calls = []
    load_calibration_images(image_folder, 3, SIZE, warn=lambda message: None,
                            progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CalibrationError, match="no calibration images"):
        load_calibration_images(tmp_path, 4, SIZE)


def test_folder_of_only_unreadable_files_is_a_clear_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(TopformerDeployError, match="all 1 files were unreadable"):
        load_calibration_images(tmp_path, 4, SIZE, warn=lambda message: None)


def test_missing_folder_and_bad_count(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration_images(tmp_path / "nope", 4, SIZE)
    with pytest.raises(CalibrationError, match=">= 1"):
        load_calibration_images(tmp_path, 0, SIZE)


def test_synthetic_source_is_deterministic_and_varied():
    a = load_calibration_images("synthetic", 3, SIZE, seed=1)
    b = load_calibration_images("synthetic", 3, SIZE, seed=1)
    assert len(a) == 3 and all(x.shape == (1, 3, *SIZE) for x in a)
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[0], a[1])
