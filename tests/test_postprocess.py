"""Post-processing: the dense reference reproduces PyTorch's bilinear kernel bit for bit, and the sparse method
gives the same class maps - on real photos through the demo model, random logits, ties, near-ties, odd sizes."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from topformer_deploy import postprocess as pp
from topformer_deploy.bench import device_runner as pp_runner
from topformer_deploy.data import generate_sample
from topformer_deploy.images import preprocess, sample_photos

DEMO = Path(__file__).resolve().parents[1] / "models" / "topformer_tiny_demo.pth"
#: (classes, logits h, w, output H, W): x8 (also 360x640 from 45x80), odd and non-integer ratios, a
#: downscale, an axis of equal size, one pixel, small outputs (PyTorch's channels-last kernel), 150 classes
SHAPES = [(11, 64, 64, 512, 512), (5, 45, 80, 360, 640), (3, 7, 9, 50, 61), (4, 13, 11, 13, 40),
          (3, 20, 30, 7, 11), (20, 8, 8, 64, 64), (150, 16, 16, 128, 128), (2, 1, 1, 5, 7), (12, 9, 10, 73, 81),
          (6, 33, 17, 255, 130), (9, 4, 4, 4, 4)]


def torch_scores(x: np.ndarray, size, channels_last: bool = False) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0].numpy()


def torch_classes(x: np.ndarray, size) -> np.ndarray:
    return torch_scores(x, size).argmax(0)


def check_exact(x: np.ndarray, size, arithmetic: str | None = None) -> dict:
    """sparse == dense == PyTorch's argmax, for ``x`` (C, h, w); returns the sparse method's stats."""
    arithmetic = arithmetic or pp.torch_arithmetic(x.shape[0], x.shape[1:], size)
    stats = {}
    dense = pp.dense_class_map(x, size, arithmetic)
    sparse = pp.sparse_class_map(x, size, arithmetic, stats=stats)
    assert sparse.shape == dense.shape == tuple(size)
    assert np.array_equal(sparse, dense), f"{np.count_nonzero(sparse != dense)} pixels differ"
    assert np.array_equal(dense, torch_classes(x, size))
    return stats


# ------------------------------------------------------------------------------------ the reference itself
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_scores_are_pytorchs_bit_for_bit(shape):
    c, h, w, height, width = shape
    x = (np.random.default_rng(1).standard_normal((c, h, w)) * 5).astype(np.float32)
    arithmetic = pp.torch_arithmetic(c, (h, w), (height, width))
    assert np.array_equal(pp.bilinear_upsample(x, (height, width), arithmetic), torch_scores(x, (height, width)))


def test_channels_last_input_uses_the_other_kernel_and_is_reproduced():
    x = (np.random.default_rng(2).standard_normal((20, 16, 16)) * 5).astype(np.float32)
    arithmetic = pp.torch_arithmetic(20, (16, 16), (128, 128), channels_last=True)
    assert arithmetic.startswith("nhwc")
    assert np.array_equal(pp.bilinear_upsample(x, (128, 128), arithmetic), torch_scores(x, (128, 128), True))


def test_the_arithmetics_really_differ():
    """Were they all the same, matching PyTorch would prove nothing about the order of operations."""
    x = (np.random.default_rng(3).standard_normal((11, 9, 10)) * 5).astype(np.float32)
    outputs = [pp.bilinear_upsample(x, (73, 81), a) for a in pp.ARITHMETICS]
    for i in range(len(outputs)):
        for j in range(i):
            assert np.count_nonzero(outputs[i] != outputs[j]) > 100


def test_bilinear_at_is_the_dense_scores_at_those_pixels():
    x = (np.random.default_rng(4).standard_normal((13, 7, 9)) * 5).astype(np.float32)
    ys, xs = np.array([0, 5, 49, 20]), np.array([60, 0, 33, 7])
    for arithmetic in pp.ARITHMETICS:
        full = pp.bilinear_upsample(x, (50, 61), arithmetic)
        assert np.array_equal(pp.bilinear_at(x, (50, 61), ys, xs, arithmetic), full[:, ys, xs])


def test_source_indices_and_weights_at_the_borders():
    i0, i1, l0, l1 = pp.axis_weights(45, 360)
    assert (i0[:4] == 0).all() and (l1[:4] == 0).all()  # half-pixel offset: clamped to the first row
    assert i0[4] == 0 and l1[4] == np.float32(1 / 16) and l1[11] == np.float32(15 / 16)
    assert (i0[-4:] == 44).all() and (i1[-4:] == 44).all()  # the last row has no neighbour below
    assert (l0 + l1 == 1).all()
    same = pp.axis_weights(7, 7)
    assert same[0].tolist() == list(range(7)) and (same[2] == 1).all() and (same[3] == 0).all()


def round_to_float32(value: Fraction) -> np.float32:
    """``value`` rounded to the nearest float32, ties to even (exactly)."""
    guess = np.float32(float(value))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    def key(f):
        return abs(Fraction(float(f)) - value), int(np.array(f).view(np.uint32)) & 1
    return min(candidates, key=key)


def test_fma32_rounds_once():
    m = np.float32(2.0 ** -23)
    # a * b lies just below half a unit of c: rounding a * b + c to float64 first lands exactly halfway,
    # and float32(that) would round up (to even) - the fused result rounds down
    a = np.array([2.0 ** -12 * (1 + 3 * 2.0 ** -23)], np.float32)
    b = np.array([2.0 ** -12 * (1 - 3 * 2.0 ** -23)], np.float32)
    c = np.array([1 + m], np.float32)
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    fused = pp.fma32(a, b, c)
    exact = round_to_float32(Fraction(float(a[0])) * Fraction(float(b[0])) + Fraction(float(c[0])))
    assert fused[0] == exact == np.float32(1 + m) and naive[0] != exact
    assert pp.fma32(-a, b, -c)[0] == -exact
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(300).astype(np.float32), rng.random(300).astype(np.float32)
    c = (rng.standard_normal(300) * np.float32(2.0) ** rng.integers(-30, 30, 300)).astype(np.float32)
    got = pp.fma32(a, b, c)
    for i in range(300):
        assert got[i] == round_to_float32(Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i])))


# ------------------------------------------------------------------------------------ sparse == dense == torch
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_logits(shape):
    c, h, w, height, width = shape
    x = (np.random.default_rng(6).standard_normal((c, h, w)) * 3).astype(np.float32)
    check_exact(x, (height, width))


@pytest.mark.parametrize("arithmetic", pp.ARITHMETICS)
def test_every_arithmetic_on_random_and_smooth_logits(arithmetic):
    rng = np.random.default_rng(7)
    noisy = (rng.standard_normal((6, 12, 10)) * 3).astype(np.float32)
    yy, xx = np.mgrid[0:12, 0:10]
    smooth = np.stack([np.sin(yy / 3 + k) + np.cos(xx / 4 - k) for k in range(6)]).astype(np.float32)
    for x in (noisy, smooth):
        for size in ((96, 80), (37, 53)):
            assert np.array_equal(pp.sparse_class_map(x, size, arithmetic), pp.dense_class_map(x, size, arithmetic))


def test_exact_ties_take_the_first_class():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((5, 8, 8))).astype(np.float32)
    x[3] = x[1]  # class 3 ties with class 1 everywhere: 3 never wins
    x[4] = x[:4].max(0)  # class 4 ties with the winner at every low-resolution pixel (wins between them)
    stats = check_exact(x, (64, 64))
    assert stats["refined"] == stats["blocks"]  # a tie is never copied
    assert not (pp.sparse_class_map(x, (64, 64)) == 3).any()
    constant = np.ones((4, 6, 6), np.float32)
    assert (pp.sparse_class_map(constant, (48, 48)) == 0).all()


def test_near_ties_one_unit_apart():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((4, 10, 10)) * 2 + 100).astype(np.float32)
    x[2] = np.nextafter(x[1], np.float32(np.inf))  # 1 ulp above class 1 at every pixel
    x[3] = np.where(rng.random((10, 10)) < 0.5, np.nextafter(x[2], np.float32(-np.inf)), x[2])
    for size in ((80, 80), (33, 71)):
        check_exact(x, size)


def test_scores_that_cross_between_pixels():
    """Two classes whose interpolated scores are equal or nearly equal exactly where pixels fall."""
    ramp = np.linspace(-1, 1, 16, dtype=np.float32)
    x = np.zeros((3, 16, 16), np.float32)
    x[0] = ramp[None, :]
    x[1] = -ramp[None, :]
    x[2] = np.float32(1e-7) * ramp[:, None] - np.float32(0.5)
    check_exact(x, (128, 128))
    big = x * np.float32(1e6) + np.float32(3e7)  # large values: rounding is coarse
    check_exact(big, (128, 128))
    check_exact(big, (101, 77))


def test_non_finite_scores_follow_the_reference():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 8, 8)).astype(np.float32)
    x[2, 3, 3] = np.nan
    x[1, 5, 6] = np.inf
    x[0, 0, 0] = -np.inf
    x[3, 7, 7] = 3e38  # sums of this overflow: never copied
    x[1, 2, 5] = np.nan
    two = x[:2].copy()  # two classes: a block where both can win holds a NaN
    for scores in (x, two):
        for arithmetic in pp.ARITHMETICS:
            assert np.array_equal(pp.sparse_class_map(scores, (64, 64), arithmetic),
                                  pp.dense_class_map(scores, (64, 64), arithmetic))
        arithmetic = pp.torch_arithmetic(len(scores), (8, 8), (64, 64))
        assert np.array_equal(pp.dense_class_map(scores, (64, 64), arithmetic), torch_classes(scores, (64, 64)))


def test_many_classes_take_the_cheap_test_first_and_stay_exact(monkeypatch):
    """150 classes as a segmentation gives them: a few region classes, the rest far below (the cheap test
    drops those), plus a class tied with a region class everywhere, one just below another, NaN and inf."""
    tested = []
    full_test = pp_runner._beaten
    monkeypatch.setattr(pp_runner, "_beaten", lambda corners, *a: tested.append(len(corners)) or full_test(corners, *a))
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:12, 0:12]
    x = (rng.standard_normal((150, 12, 12)) - 8).astype(np.float32)
    for k, (cy, cx) in enumerate([(2, 3), (9, 9), (5, 10), (10, 2)]):
        x[10 + 30 * k] = (5 - 0.6 * np.hypot(yy - cy, xx - cx)).astype(np.float32)
    x[120] = x[10]                                                 # tied everywhere: 10 wins (first index)
    x[135] = np.nextafter(x[40], np.float32(-np.inf))              # one unit below class 40
    assert len(x) > pp_runner.FEW_CLASSES
    for size in ((96, 96), (61, 77)):
        stats = check_exact(x, size)
        assert 0 < stats["refined"] < stats["blocks"]
        assert not (pp.sparse_class_map(x, size) == 120).any()
    assert tested and max(tested) <= 10                            # the full test saw only the surviving classes
    x[140, 4, 4], x[70, 8, 1], x[3, 0, 11] = np.nan, np.inf, -np.inf   # non-finite: the reference's answer
    for arithmetic in pp.ARITHMETICS:
        assert np.array_equal(pp.sparse_class_map(x, (96, 96), arithmetic), pp.dense_class_map(x, (96, 96), arithmetic))


# ------------------------------------------------------------------------------------------------ real photos
@pytest.fixture(scope="module")
def demo_model():
    from topformer_deploy import load_checkpoint

    torch.set_num_threads(1)
    return load_checkpoint(str(DEMO)).eval()


def logits_of(model, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image)).numpy()


@pytest.mark.parametrize("size", [(256, 256), (320, 448)])
def test_real_photos_through_the_demo_model(demo_model, size):
    images = sample_photos(size, count=3) + [preprocess(generate_sample(0, "val", i, size)[0], size)
                                             for i in range(3)]
    refined = []
    for image in images:
        logits = logits_of(demo_model, image)
        for out in (size, (size[0] - 17, size[1] + 9)):  # the input size, and a label size of its own
            stats = check_exact(logits[0], out)
            refined.append(stats["refined"] / stats["blocks"])
        nhwc = np.ascontiguousarray(logits.transpose(0, 2, 3, 1))
        assert np.array_equal(pp.class_map(nhwc, size, layout="NHWC"), pp.class_map(logits, size))
    assert 0 < np.mean(refined) < 0.5  # real segmentations: most blocks are copied, some are not


# ---------------------------------------------------------------------------------------------- the others
def test_nearest_and_fraction_methods_match_their_pytorch_recipes():
    x = (np.random.default_rng(11).standard_normal((7, 16, 12)) * 3).astype(np.float32)
    winners = torch.from_numpy(x).argmax(0)[None, None].float()
    for size in ((128, 96), (100, 75)):
        nearest = F.interpolate(winners, size=size, mode="nearest-exact")[0, 0].numpy()
        assert np.array_equal(pp.class_map(x, size, "nearest"), nearest)
        for method, f in (("bilinear-half", 2), ("bilinear-quarter", 4)):
            middle = (-(-size[0] // f), -(-size[1] // f))
            coarse = torch.from_numpy(torch_classes(x, middle)).float()[None, None]
            expected = F.interpolate(coarse, size=size, mode="nearest-exact")[0, 0].numpy()
            assert np.array_equal(pp.class_map(x, size, method, arithmetic=pp.torch_arithmetic(7, (16, 12), middle)),
                                  expected)


def test_class_map_layouts_dtypes_and_bad_input():
    x = (np.random.default_rng(12).standard_normal((1, 5, 6, 7))).astype(np.float32)
    out = pp.class_map(x, (48, 56))
    assert out.dtype == np.int32 and out.shape == (48, 56)
    assert np.array_equal(pp.class_map(x[0], (48, 56), dtype="uint8"), out)
    assert np.array_equal(pp.class_map(x.transpose(0, 2, 3, 1), (48, 56), layout="NHWC"), out)
    for method in pp.POST_METHODS:
        assert pp.class_map(x, (48, 56), method).shape == (48, 56)
    with pytest.raises(ValueError, match="unknown post-processing method"):
        pp.class_map(x, (48, 56), "bicubic")
    with pytest.raises(ValueError, match="layout"):
        pp.class_map(x, (48, 56), layout="CHW")
    with pytest.raises(ValueError, match="one image"):
        pp.class_map(np.zeros((2, 5, 6, 7), np.float32), (48, 56))
    with pytest.raises(ValueError, match="arithmetic"):
        pp.class_map(x, (48, 56), arithmetic="fast")
    with pytest.raises(ValueError, match="do not fit"):
        pp.sparse_class_map(np.zeros((300, 2, 2), np.float32), (8, 8), dtype="uint8")
