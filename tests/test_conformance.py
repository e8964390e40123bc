"""Conformance: our TopFormer reproduces the official implementation's outputs, unfolded and folded, for every
official fixture - the ADE20K variants and the other official configs (Cityscapes Tiny and Base, Pascal Context
60 Small, COCO-Stuff Tiny), each loaded with its architecture read from the checkpoint.

The 480x360 Tiny case (uneven adaptive pooling windows) and the Cityscapes Tiny case (dense head) ship in
tests/data with a subset of their arrays; the others are read from ../shared when it is beside the checkout.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import official_fixture
from topformer_deploy import build_model, fold_batchnorm, load_checkpoint

ADE_TINY = "topformer_tiny_512x512_160k_2x8_ade20k.py"
#: (variant, classes, an official config it must be recognised as, checkpoint, reference)
CASES = [
    ("tiny", 150, ADE_TINY, "official_topformer_tiny_seed0.pth", "official_topformer_tiny_512x512_seed0_ref.npz"),
    ("small", 150, "topformer_small_512x512_160k_2x8_ade20k.py", "official_topformer_small_seed0.pth",
     "official_topformer_small_256x256_seed0_ref.npz"),
    ("base", 150, "topformer_base_512x512_160k_2x8_ade20k.py", "official_topformer_base_seed0.pth",
     "official_topformer_base_256x256_seed0_ref.npz"),
    ("tiny", 150, ADE_TINY, "official_topformer_tiny_seed1.pth", "official_topformer_tiny_480x360_seed1_ref.npz"),
    ("tiny", 19, "topformer_tiny_1024x512_80k_2x8_city.py", "official_topformer_tinycity_seed3.pth",
     "official_topformer_tinycity_256x512_seed3_ref.npz"),
    ("base", 19, "topformer_base_1024x512_80k_2x8city.py", "official_topformer_basecity_seed5.pth",
     "official_topformer_basecity_256x512_seed5_ref.npz"),
    ("small", 60, "topformer_small_480x480_80k_2x8_pascalcontext.py", "official_topformer_smallpc60_seed9.pth",
     "official_topformer_smallpc60_480x480_seed9_ref.npz"),
    ("tiny", 171, "topformer_tiny_512x512_80k_2x8_cocostuff10k.py", "official_topformer_tinycoco_seed15.pth",
     "official_topformer_tinycoco_256x256_seed15_ref.npz"),
]
ATOL = 1e-4


def stage_outputs(model, image: torch.Tensor) -> dict[str, np.ndarray]:
    """Every intermediate the official reference stores, computed stage by stage."""
    with torch.no_grad():
        tokens = model.tpm(image)
        pooled = model.backbone.ppa(tokens)
        semantics = model.backbone.trans(pooled)
        injected = model.sim(tokens, semantics)
        logits = model.head(injected)
    out = {f"tpm.{i}": t for i, t in enumerate(tokens)}
    out.update({"ppa": pooled, "trans": semantics, "logits": logits})
    out.update({f"backbone_out.{i}": t for i, t in enumerate(injected)})
    # The official SimpleHead sums in place into its first input (``outs += pred``), so the reference's
    # backbone_out.0 was recorded after that sum; our head leaves its input alone and exposes the sum.
    with torch.no_grad():
        out["backbone_out.0"] = model.decode_head.aggregate(injected)
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
@pytest.mark.parametrize("variant,classes,config,ckpt,ref", CASES, ids=[c[4].split("_", 2)[2][:-8] for c in CASES])
def test_matches_official_outputs(variant, classes, config, ckpt, ref, folded):
    model = load_checkpoint(official_fixture(ckpt))
    assert model.variant == variant and model.num_classes == classes
    assert config in model.describe()["official_configs"]
    if folded:
        model = fold_batchnorm(model)
    reference = np.load(official_fixture(ref))
    image = torch.from_numpy(reference["input"].astype(np.float32))
    ours = stage_outputs(model, image)
    expected_keys = {k for k in reference.files if k != "input"}
    assert "logits" in expected_keys and expected_keys <= set(ours), "reference holds arrays we do not compute"
    for key in sorted(expected_keys):
        assert ours[key].shape == reference[key].shape, key
        err = float(np.max(np.abs(ours[key] - reference[key])))
        assert err <= ATOL, f"{key}: max abs error {err:.3g}"
    with torch.no_grad():
        whole = model(image).numpy()
    np.testing.assert_allclose(whole, reference["logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant,expected", [("tiny", 1_389_654), ("small", 3_034_662), ("base", 5_062_646)])
def test_parameter_counts(variant, expected):
    model = build_model(variant)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("variant,classes,fields,expected,config", [
    ("tiny", 19, {"head_is_dw": False}, 1_389_011, "topformer_tiny_1024x512_80k_2x8_city.py"),
    ("base", 19, {"out_channels": (0, 128, 128, 128), "head_channels": 128}, 4_839_667,
     "topformer_base_1024x512_80k_2x8city.py"),
    ("small", 60, {}, 3_017_292, "topformer_small_480x480_80k_2x8_pascalcontext.py"),
    ("base", 59, {}, 5_039_259, "topformer_base_480x480_80k_2x8_pascalcontext_59.py"),
    ("tiny", 171, {}, 1_392_363, "topformer_tiny_512x512_80k_2x8_cocostuff10k.py"),
])
def test_official_configs_build_with_their_exact_parameter_counts(variant, classes, fields, expected, config):
    """The reference's table: build_model takes the config fields the official files change."""
    model = build_model(variant, num_classes=classes, **fields)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.describe()["official_configs"] == [config]


def test_official_module_paths_map_one_to_one(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    ours = build_model("tiny").state_dict()
    assert set(state) == set(ours)
    assert "backbone.trans.transformer_blocks.0.attn.to_q.c.weight" in ours
    assert not any(k.startswith("backbone.SIM.0.") for k in ours)


def test_any_number_of_classes():
    model = build_model("small", num_classes=7)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 192)).shape == (1, 7, 16, 24)


def test_fold_removes_batchnorm_and_keeps_outputs():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=19)
    for m in model.modules():  # non-trivial statistics so folding is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "input model was modified"
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = model(x), folded(x)
    rel = float((a - b).norm() / a.norm())
    assert rel <= 1e-5, rel
