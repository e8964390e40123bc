"""Simulated Arm cores (``--device sim:CORE``): exact instruction counts under qemu-user with our plugin.

Real artifacts (Tiny, 64x64), the real runner, the real qemu-aarch64 and the plugin built from its source
on the project's aarch64 userland. The fast tests need neither qemu nor the userland.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from topformer_deploy.bench.conditions import parse_cpuinfo
from topformer_deploy.bench.sim import cores, floor
from topformer_deploy.cli import main

SIZE = (64, 64)
WARMUP = "10"   # Python's adaptive interpreter settles after ~10 invokes; then runs repeat within 3e-5


# ------------------------------------------------------------------------------------------------ fast
@pytest.mark.parametrize("core, part, name", [("cortex-a53", "0xd03", "Cortex-A53"), ("cortex-a72", "0xd08", "Cortex-A72"),
                                              ("cortex-a76", "0xd0b", "Cortex-A76"), ("neoverse-n1", "0xd0c", "Neoverse-N1")])
def test_cpu_descriptions_read_as_the_real_cores(core, part, name):
    parsed = parse_cpuinfo(cores.proc_cpuinfo(core))
    assert [c["part"] for c in parsed["cpus"]] == [part] * cores.CORES[core]["cores"]
    assert {c["name"] for c in parsed["cpus"]} == {name}
    sysfs = cores.sysfs_files(core)
    assert sysfs["possible"] == sysfs["present"] == "0-3\n"
    assert int(sysfs["cpu0/cpufreq/cpuinfo_max_freq"]) == cores.CORES[core]["max_khz"]


def test_work_floor_follows_the_core_features():
    assert floor.macs_per_instruction("fp32", cores.features("cortex-a76")) == 4
    assert floor.macs_per_instruction("int8", cores.features("cortex-a76")) == 16      # SDOT
    assert floor.macs_per_instruction("int8", cores.features("cortex-a72")) == 8       # SMLAL, no dot product
    assert floor.macs_per_instruction("fp16", cores.features("cortex-a72")) == 4       # no FP16 arithmetic
    assert floor.macs_per_instruction("fp16", cores.features("cortex-a76")) == 8
    assert floor.instruction_floor(1600, "int8", {"asimddp"}, executed=400) == {
        "macs": 1600, "macs_per_instruction": 16, "instructions": 100.0, "fraction": 0.25}


def test_missing_qemu_is_one_line_naming_the_package(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}                      # no qemu-aarch64 on PATH
    (tmp_path / "x.tflite").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "topformer_deploy", "bench", "--model", "x.tflite", "--device",
                           "sim:cortex-a72"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: qemu-aarch64 not found: install the Debian package qemu-user (apt-get install qemu-user)"]


def test_unknown_core_is_refused(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"")
    result = CliRunner().invoke(main, ["bench", "--model", str(tmp_path / "x.tflite"), "--device", "sim:cortex-z9"])
    assert result.exit_code == 2 and "unknown simulated core 'cortex-z9'" in result.stderr


# ------------------------------------------------------------------------------------------- simulated
@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny at 64x64 (random live weights): TFLite fp32, int8, and fp32 with one extra 1x1 convolution."""
    from topformer_deploy.export import export_model, load_calibration_images
    from topformer_deploy.model import random_live_model

    out = tmp_path_factory.mktemp("sim-artifacts")
    model = random_live_model("tiny", num_classes=8)
    made = {"fp32": export_model(model, "tflite", out, input_size=SIZE, weights="random", verify=False).path,
            "int8": export_model(model, "tflite", out, input_size=SIZE, weights="random", verify=False,
                                 precision="int8", calibration=load_calibration_images("synthetic", 4, SIZE)).path}
    extra = random_live_model("tiny", num_classes=8)
    fuse = extra.decode_head.linear_fuse
    extra.decode_head.linear_fuse = torch.nn.Sequential(fuse, torch.nn.Conv2d(128, 128, 1)).eval()  # one more CONV_2D
    made["extra-conv"] = export_model(extra, "tflite", out / "extra", input_size=SIZE, weights="random",
                                      verify=False).path
    return made


def bench(tmp_path, *args) -> dict:
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    result = CliRunner().invoke(main, ["bench", *args, "--warmup", WARMUP, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.sim
def test_instructions_per_inference_are_counted_and_repeat(sim_ready, tiny, tmp_path):
    doc = bench(tmp_path, "--model", str(tiny["fp32"]), "--device", "sim:cortex-a72", "--runs", "3")
    counts = doc["instructions"]
    assert counts["runs"] == 3 and counts["spread"] <= 1e-4
    assert sum(counts["median"][c] for c in counts["classes"]) == pytest.approx(counts["total"], rel=1e-4)
    assert counts["median"]["fmla_f32"] > 0.3 * counts["total"]                    # XNNPACK's fp32 kernels
    assert 0.2 < counts["floor"]["fraction"] < 1.0 and counts["floor"]["macs_per_instruction"] == 4
    sim = doc["device"]["simulation"]
    assert sim["core"] == "cortex-a72" and sim["midr"] == "0x410fd083" and "asimddp" not in sim["features"]
    assert doc["device"]["id"] == "sim-cortex-a72" and doc["device"]["arch"] == "aarch64"
    again = bench(tmp_path, "--model", str(tiny["fp32"]), "--device", "sim:cortex-a72", "--runs", "3")
    assert again["instructions"]["total"] == pytest.approx(counts["total"], rel=1e-4)   # another qemu process


@pytest.mark.sim
def test_post_processing_methods_are_counted_on_the_core(sim_ready, tiny, tmp_path):
    doc = bench(tmp_path, "--model", str(tiny["fp32"]), "--device", "sim:cortex-a72", "--runs", "2",
                "--post", "sparse", "--post", "nearest", "--post", "dense")
    methods = doc["post"]["methods"]
    counted = {m: methods[m]["instructions_median"] for m in ("sparse", "nearest", "dense")}
    assert all(len(methods[m]["instructions"]) == 2 for m in counted)              # one count per timed run
    assert 0 < counted["nearest"] < counted["sparse"] < counted["dense"], counted
    for m in counted:  # numpy's calls repeat to about 1% (its allocations vary a little), not exactly as TFLite
        assert max(methods[m]["instructions"]) <= 1.03 * min(methods[m]["instructions"]), methods[m]


@pytest.mark.sim
def test_int8_uses_the_dot_product_on_cortex_a76(sim_ready, tiny, tmp_path):
    fp32 = bench(tmp_path, "--model", str(tiny["fp32"]), "--device", "sim:cortex-a76")["instructions"]
    int8 = bench(tmp_path, "--model", str(tiny["int8"]), "--device", "sim:cortex-a76")["instructions"]
    assert int8["total"] < 0.7 * fp32["total"]
    assert int8["median"]["sdot_udot"] > 0 and fp32["median"]["sdot_udot"] == 0
    on_a72 = bench(tmp_path, "--model", str(tiny["int8"]), "--device", "sim:cortex-a72")["instructions"]
    assert on_a72["median"]["sdot_udot"] == 0 and on_a72["median"]["smlal_umlal"] > 0   # no dot product there


@pytest.mark.sim
def test_fp16_runs_in_fp16_on_cortex_a76_only_and_keeps_the_classes(sim_ready, tmp_path):
    """The fp16 artifact asks XNNPACK for FP16 inference: the A76 (FP16 arithmetic) does it, the A72 cannot
    and computes in FP32. On the trained demo model the A76's FP16 class map agrees with the host's FP32."""
    import numpy as np

    from topformer_deploy.export import export_model
    from topformer_deploy.images import sample_photos
    from topformer_deploy.model import load_checkpoint

    demo = Path(__file__).resolve().parents[1] / "models" / "topformer_tiny_demo.pth"
    size = (128, 128)
    model = load_checkpoint(demo)
    paths = {p: export_model(model, "tflite", tmp_path / p, input_size=size, precision=p, checkpoint=demo).path
             for p in ("fp32", "fp16")}
    photo = sample_photos(size, 1)[0]
    np.save(tmp_path / "photo.npy", photo.transpose(0, 2, 3, 1))
    runs = {}
    for precision, core in (("fp32", "cortex-a76"), ("fp16", "cortex-a76"), ("fp16", "cortex-a72")):
        out = tmp_path / f"{precision}-{core}.npy"
        runs[precision, core] = bench(tmp_path, "--model", str(paths[precision]), "--device", f"sim:{core}", "--runs",
                                      "1", "--input", str(tmp_path / "photo.npy"), "--save-output", str(out))
        runs[precision, core]["output"] = np.load(out)
    fp32, fp16 = runs["fp32", "cortex-a76"]["instructions"], runs["fp16", "cortex-a76"]["instructions"]
    assert fp16["median"]["fmla_f16"] > 0 and fp16["median"]["fmla_f32"] == 0
    assert fp16["total"] < 0.75 * fp32["total"]
    assert runs["fp16", "cortex-a72"]["instructions"]["median"]["fmla_f16"] == 0      # no FP16 arithmetic there
    with torch.no_grad():
        reference = model(torch.from_numpy(photo)).numpy().argmax(1)
    agreement = float((runs["fp16", "cortex-a76"]["output"].argmax(-1) == reference).mean())
    assert agreement >= 0.98, agreement


@pytest.mark.sim
def test_deterministic_gate_passes_the_same_model_and_flags_an_extra_convolution(sim_ready, tiny, tmp_path):
    base = tmp_path / "base.json"
    same = CliRunner().invoke(main, ["bench", "--compare", str(tiny["fp32"]), str(tiny["fp32"]), "--device",
                                     "sim:cortex-a72", "--warmup", WARMUP, "--runs", "2", "--rounds", "2",
                                     "--json", str(base)])
    assert same.exit_code == 0, same.output
    doc = json.loads(base.read_text())
    for side, name in (("a", "base_a.json"), ("b", "cand_b.json")):
        (tmp_path / name).write_text(json.dumps(doc[side]))
    gate = CliRunner().invoke(main, ["gate", "--baseline", str(tmp_path / "base_a.json"), "--candidate",
                                     str(tmp_path / "cand_b.json"), "--json"])
    assert gate.exit_code == 0, gate.output
    row = json.loads(gate.stdout)["configurations"][0]
    assert row["verdict"] == "same" and row["unit"] == "instructions" and abs(row["change"]) <= 1e-3
    slower = bench(tmp_path, "--model", str(tiny["extra-conv"]), "--device", "sim:cortex-a72", "--runs", "2")
    (tmp_path / "cand_extra.json").write_text(json.dumps(slower))
    gate = CliRunner().invoke(main, ["gate", "--baseline", str(tmp_path / "base_a.json"), "--candidate",
                                     str(tmp_path / "cand_extra.json"), "--json"])
    assert gate.exit_code == 1, gate.output
    row = json.loads(gate.stdout)["configurations"][0]
    assert row["verdict"] == "regression" and row["change"] > 0.01
    other_core = bench(tmp_path, "--model", str(tiny["fp32"]), "--device", "sim:cortex-a76", "--runs", "2")
    (tmp_path / "a76.json").write_text(json.dumps(other_core))
    gate = CliRunner().invoke(main, ["gate", "--baseline", str(tmp_path / "base_a.json"), "--candidate",
                                     str(tmp_path / "a76.json")])
    assert gate.exit_code == 2 and "device" in gate.stderr                 # another core is another device


@pytest.mark.sim
def test_breakdown_stage_counts_add_up_to_the_whole(sim_ready, tmp_path):
    out = tmp_path / "bd.json"
    result = CliRunner().invoke(main, ["breakdown", "--variant", "tiny", "--to", "tflite", "--input-size", "64",
                                       "--device", "sim:cortex-a72", "--warmup", "2", "--out", str(tmp_path / "a"),
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    counts = doc["instructions"]
    assert counts["reconciled"] and abs(counts["reconciliation"] - 1) <= 0.02, counts
    assert all(r["instructions"] > 0 for r in doc["stages"])
    view = doc["operator_view"]
    assert view["available"] and set(view["instructions"]["stages"]) == {"tpm", "sase", "sim", "head"}
    assert view["instructions"]["unattributed"] <= 0.05 * view["instructions"]["total"]
    assert "M instructions" in result.output and "heaviest operators" in result.output
    post = {row["method"]: row for row in doc["post_methods"]}                      # default --post sparse
    assert set(post) == {"in-graph (tflite)", "sparse"}
    assert all(r["instructions"] > 0 and r["network_plus_post_instructions"] > counts["whole"] for r in post.values())
    assert "post M instructions" in result.output


def test_the_plugin_source_ships_with_the_package():
    from importlib import resources

    source = resources.files("topformer_deploy.bench.sim").joinpath("insn_counter.c").read_text()
    assert "qemu_plugin_install" in source and "#include <qemu-plugin.h>" not in source
    assert Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text().count("insn_counter.c") == 1
