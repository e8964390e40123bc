"""load_checkpoint: official and friendly layouts, inference of variant/classes, and clear refusals."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from topformer_deploy import CheckpointError, build_model, load_checkpoint


@pytest.fixture(scope="module")
def official_state(tiny_checkpoint):
    return torch.load(tiny_checkpoint, weights_only=True)["state_dict"]


def _same_weights(model, state) -> bool:
    ours = model.state_dict()
    return all(torch.equal(ours[k], state[k].float()) for k in state)


@pytest.mark.parametrize("wrap", ["state_dict", "state_dict_ema", "model", "raw", "module_prefix"])
def test_accepts_official_and_friendly_layouts(tmp_path, official_state, wrap):
    if wrap == "raw":
        obj = dict(official_state)
    elif wrap == "module_prefix":
        obj = {"state_dict": {"module." + k: v for k, v in official_state.items()}}
    else:
        obj = {"meta": {"epoch": 1}, wrap: dict(official_state)}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = load_checkpoint(path)
    assert model.variant == "tiny" and model.num_classes == 150
    assert _same_weights(model, official_state)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "float16 tensors must be cast"


def test_infers_variant_and_classes(tmp_path):
    torch.manual_seed(0)
    model = build_model("small", num_classes=21)
    path = tmp_path / "small21.pth"
    torch.save({"meta": {}, "state_dict": model.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert (loaded.variant, loaded.num_classes) == ("small", 21)


def test_wrong_variant_names_the_one_that_fits(tiny_checkpoint):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny_checkpoint, variant="base")
    message = str(err.value)
    assert "shape conflicts" in message and "fits variant 'tiny'" in message
    assert "\n" not in message


def test_missing_and_unexpected_keys_are_named(tmp_path, official_state):
    state = dict(official_state)
    del state["decode_head.conv_seg.bias"]
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: decode_head\.conv_seg\.bias.*unexpected keys: backbone\.extra\.weight"):
        load_checkpoint(path, variant="tiny")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/topformer_deploy_pwned",))


def test_refuses_malicious_pickle(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit()}, path)
    if os.path.exists("/tmp/topformer_deploy_pwned"):
        os.remove("/tmp/topformer_deploy_pwned")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/topformer_deploy_pwned")


def test_refuses_plain_pickle_and_corrupt_files(tmp_path):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"state_dict": {"a": 1}, "obj": _Exploit()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_unknown_variant_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="unknown variant 'huge'"):
        load_checkpoint(tiny_checkpoint, variant="huge")


# --- the architecture read from the checkpoint ----------------------------------------------------------

CITY_TINY = "official_topformer_tinycity_seed3.pth"


def test_cityscapes_tiny_loads_with_its_dense_head():
    from conftest import official_fixture

    model = load_checkpoint(official_fixture(CITY_TINY))
    assert (model.variant, model.num_classes, model.config.head_is_dw) == ("tiny", 19, False)
    described = model.describe()
    assert described["official_configs"] == ["topformer_tiny_1024x512_80k_2x8_city.py"]
    assert described["config_source"]["assumed"]["key_dim"] == 16
    assert load_checkpoint(official_fixture(CITY_TINY), variant="tiny").config == model.config  # the backbone


def test_wrong_variant_for_a_cityscapes_checkpoint_names_the_backbone_conflict():
    from conftest import official_fixture

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(official_fixture(CITY_TINY), variant="base")
    message = str(err.value)
    assert "does not fit TopFormer-base with 19 classes" in message and "backbone.tpm.layer2" in message
    assert "fits variant 'tiny'" in message and "\n" not in message


def test_custom_architecture_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("small", num_classes=5, num_heads=3, depths=2, mlp_ratio=4, head_is_dw=True)
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.variant == "custom"
    assert loaded.describe()["official_configs"] == []
    assert _same_weights(loaded, model.state_dict())


def test_a_tpm_the_official_strides_cannot_describe_is_refused(tmp_path, official_state):
    state = {k: v for k, v in official_state.items()
             if not k.startswith(("backbone.tpm.layer8.", "backbone.tpm.layer9."))}
    path = tmp_path / "short.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="official stride pattern"):
        load_checkpoint(path)


@pytest.mark.parametrize("fields, message", [
    ({"heads": 4}, "unknown config field heads"),
    ({"head_channels": 96}, "must equal head_channels"),
    ({"channels": (16, 32, 64, 128)}, r"channels\[3\] = 128 but TPM layer 8 outputs 96"),
    ({"embed_out_indice": (0, 4, 6, 8)}, r"strides \(2, 8, 16, 32\)"),
])
def test_build_model_refuses_configs_it_cannot_build(fields, message):
    with pytest.raises(ValueError, match=message):
        build_model("tiny", **fields)
