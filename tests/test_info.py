"""MAC counting (cross-checked by hand) and the `info` command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from topformer_deploy import build_model
from topformer_deploy.model.complexity import count_macs, model_complexity

CLI = [sys.executable, "-m", "topformer_deploy"]


def test_conv_macs_match_hand_count():
    conv = torch.nn.Conv2d(16, 64, 3, stride=2, padding=1)
    macs, out = count_macs(conv, torch.zeros(1, 16, 32, 32))
    assert out.shape == (1, 64, 16, 16)
    assert macs == 64 * 16 * 16 * (16 * 3 * 3)  # out channels x out pixels x (in channels x k x k)
    dw = torch.nn.Conv2d(32, 32, 5, padding=2, groups=32)
    macs, _ = count_macs(dw, torch.zeros(1, 32, 8, 8))
    assert macs == 32 * 8 * 8 * 25


def test_attention_matmul_macs_match_hand_count():
    attn = build_model("tiny").backbone.trans.transformer_blocks[0].attn
    dim, n, heads, kd, d = 208, 8 * 8, 4, 16, 32
    convs = n * (dim * heads * kd * 2 + dim * heads * d + heads * d * dim)  # to_q, to_k, to_v, proj
    matmuls = heads * n * n * kd + heads * n * n * d  # q @ k, attn @ v
    macs, _ = count_macs(attn, torch.zeros(1, dim, 8, 8))
    assert macs == convs + matmuls


@pytest.mark.parametrize("variant,giga", [("tiny", 0.53), ("small", 1.11), ("base", 1.75)])
def test_total_macs_near_reference(variant, giga):
    rows = model_complexity(build_model(variant), 512, 512)
    total = sum(r.macs for r in rows)
    assert abs(total / 1e9 - giga) / giga <= 0.05
    assert abs(sum(r.mac_share for r in rows) - 1) < 1e-9


def test_info_json_reports_exact_params_and_sase_share():
    out = subprocess.run(CLI + ["info", "--variant", "tiny", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["total_params"] == 1_389_654
    sase = next(s for s in data["stages"] if s["stage"] == "sase")
    assert 0.70 <= sase["param_share"] <= 0.78  # the paper's ~74%
    assert data["post_macs"] == 150 * 512 * 512 * 4


def test_info_non_square_input_and_checkpoint(tiny_checkpoint):
    out = subprocess.run(CLI + ["info", "--checkpoint", str(tiny_checkpoint), "--input-size", "512x384", "--json"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["variant"] == "tiny" and data["input_size"] == [512, 384]


def test_info_names_the_official_config_of_a_cityscapes_checkpoint():
    from conftest import OFFICIAL

    checkpoint = str(OFFICIAL / "official_topformer_tinycity_seed3.pth")
    out = subprocess.run(CLI + ["info", "--checkpoint", checkpoint, "--json"], capture_output=True, text=True,
                         check=True)
    data = json.loads(out.stdout)
    assert data["official_configs"] == ["topformer_tiny_1024x512_80k_2x8_city.py"]
    assert data["model"]["config"]["head_is_dw"] is False and data["total_params"] == 1_389_011
    table = subprocess.run(CLI + ["info", "--checkpoint", checkpoint], capture_output=True, text=True, check=True)
    assert "official config: topformer_tiny_1024x512_80k_2x8_city.py" in table.stdout


@pytest.mark.parametrize("args,needle", [
    (["--variant", "huge"], "Invalid value for '--variant'"),
    (["--variant", "tiny", "--input-size", "16"], "too small"),
    (["--variant", "tiny", "--input-size", "9000x512"], "too large"),
    (["--variant", "tiny", "--input-size", "12xx"], "is not a size"),
    (["--checkpoint", "/nonexistent.pth"], "checkpoint not found"),
])
def test_info_bad_input_is_one_clear_line(args, needle):
    out = subprocess.run(CLI + ["info", *args], capture_output=True, text=True)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_checkpoint_through_cli(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    out = subprocess.run(CLI + ["info", "--checkpoint", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_cli_variant_names_match_the_model_table():
    from topformer_deploy.cli.options import VARIANT_NAMES
    from topformer_deploy.model import VARIANTS

    assert set(VARIANT_NAMES) == set(VARIANTS)
