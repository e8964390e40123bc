"""The latency gate: verdicts with known answers, refusals, baselines, CLI outputs."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from topformer_deploy.bench.result import build_result
from topformer_deploy.cli import main
from topformer_deploy.gate.baseline import BaselineError, load_result_or_baseline, save_baseline
from topformer_deploy.gate.compare import (IncompatibleBaselineError, gate_compared, gate_results,
                                          github_benchmark_entries)
from topformer_deploy.gate.verdict import compare_samples, parse_slowdown
from topformer_deploy.report.gate import gate_chart, gate_markdown


def samples(median=20.0, sigma=0.02, n=30, seed=0):
    return np.random.default_rng(seed).lognormal(math.log(median), sigma, n)


def make_result(latencies, variant="tiny", threads=1, device_id="pi4-bench-1", runtime_version="2.3.0",
                conditions=None, engine="python"):
    config = {"variant": variant, "format": "tflite", "precision": "fp32", "threads": threads,
              "input_size": [512, 512], "output": "logits", "stage": "full", "engine": engine}
    device = {"transport": "local", "target": "local", "id": device_id, "model": "Raspberry Pi 4 Model B Rev 1.4",
              "soc": "BCM2711", "arch": "aarch64", "os": "Linux", "cpus": []}
    cond = {"cores": None, "pinned_with": None, "temp_before_c": 45.0, "temp_after_c": 48.0, "throttled": "0x0",
            "throttled_flags": [], "loadavg": [0.1, 0.1, 0.1], "cooldown_s": 0.0, "hot": False, "allow_hot": False}
    cond.update(conditions or {})
    return build_result(config=config, device=device, runtime={"name": "ai_edge_litert", "version": runtime_version},
                        conditions=cond, warmup=5, runs=len(latencies), latencies_ms=[float(x) for x in latencies],
                        load_ms=10.0, first_ms=30.0, model={"path": "m.tflite", "sha256": "0" * 64, "manifest": None},
                        runner={"runner_version": 1, "ok": True})


def write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


# ---- verdicts on samples with known answers ----

def test_same_distribution_is_same():
    v = compare_samples(samples(seed=1), samples(seed=2))
    assert v.verdict == "same", v.reason
    assert v.ci_low < 0 < v.ci_high < 0.05


def test_twenty_percent_slower_is_regression():
    v = compare_samples(samples(seed=1), samples(seed=2) * 1.2)
    assert v.verdict == "regression"
    assert v.change == pytest.approx(0.2, abs=0.03) and v.p_value < 0.01
    assert v.ci_low > 0.1


def test_twenty_percent_faster_is_improvement():
    v = compare_samples(samples(seed=1), samples(seed=2) * 0.8)
    assert v.verdict == "improvement" and v.change < -0.15


def test_three_runs_is_inconclusive_even_for_a_big_change():
    v = compare_samples(samples(n=3, seed=1), samples(n=3, seed=2) * 2)
    assert v.verdict == "inconclusive" and "too few runs" in v.reason


def test_very_noisy_is_inconclusive():
    v = compare_samples(samples(sigma=0.4, seed=1), samples(sigma=0.4, seed=2) * 1.1)
    assert v.verdict == "inconclusive" and "noisy" in v.reason


def test_small_significant_slowdown_below_threshold_is_same():
    base, cand = samples(sigma=0.005, n=50, seed=1), samples(sigma=0.005, n=50, seed=2) * 1.03
    v = compare_samples(base, cand, max_slowdown=0.05)
    assert v.p_value < 1e-6                     # significant ...
    assert v.verdict == "same", v.reason        # ... but smaller than the threshold
    assert compare_samples(base, cand, max_slowdown=0.02).verdict == "regression"


def test_a_few_outliers_do_not_make_a_regression():
    cand = samples(seed=2)
    cand[:4] *= 5                               # four runs hit by a background job
    assert compare_samples(samples(seed=1), cand).verdict == "same"


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), ("10 %", 0.10), ("0", 0.0)])
def test_parse_slowdown(text, value):
    assert parse_slowdown(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["five", "-5%", "5%%", ""])
def test_parse_slowdown_rejects(text):
    with pytest.raises(ValueError):
        parse_slowdown(text)


# ---- gate_results: per-configuration matching, conditions, refusals ----

def test_gate_matches_on_config_key():
    base = save_baseline_doc([make_result(samples(seed=1)), make_result(samples(40, seed=3), variant="small")])
    cand = save_baseline_doc([make_result(samples(seed=2) * 1.2), make_result(samples(40, seed=4), variant="small")])
    report = gate_results(base, cand)
    verdicts = {r.config_key: r.verdict.verdict for r in report.rows}
    assert verdicts == {"tiny/tflite/fp32/t1/512x512/logits": "regression",
                        "small/tflite/fp32/t1/512x512/logits": "same"}
    assert report.status == "regression" and report.exit_code == 1


def save_baseline_doc(results):
    return {"schema": "topformer-deploy/baseline", "schema_version": 1, "device": results[0]["device"],
            "entries": {r["config_key"]: r for r in results}}


def test_pass_and_inconclusive_exit_codes():
    base = make_result(samples(seed=1))
    assert gate_results(base, make_result(samples(seed=2))).exit_code == 0
    assert gate_results(base, make_result(samples(n=4, seed=2))).exit_code == 2


@pytest.mark.parametrize("conditions,word", [({"throttled": "0x50005"}, "throttled"),
                                             ({"hot": True, "temp_after_c": 82.0}, "hot")])
def test_throttled_or_hot_candidate_is_inconclusive(conditions, word):
    base = make_result(samples(seed=1))
    report = gate_results(base, make_result(samples(seed=2) * 1.3, conditions=conditions))
    assert report.rows[0].verdict.verdict == "inconclusive" and word in report.rows[0].verdict.reason
    assert report.exit_code == 2


def test_throttled_in_the_past_only_is_usable():
    base = make_result(samples(seed=1))
    report = gate_results(base, make_result(samples(seed=2), conditions={"throttled": "0x50000"}))
    assert report.rows[0].verdict.verdict == "same"


def test_missing_baseline_entry_is_inconclusive():
    report = gate_results(make_result(samples(seed=1)), make_result(samples(seed=2), variant="base"))
    assert report.rows[0].verdict.verdict == "inconclusive" and "no baseline entry" in report.rows[0].verdict.reason


@pytest.mark.parametrize("kwargs,words", [({"device_id": "other-pi"}, "device"),
                                          ({"runtime_version": "2.4.0"}, "runtime"),
                                          ({"threads": 4}, "thread count"),
                                          ({"engine": "benchmark_model"}, "engine")])
def test_incompatible_baseline_is_refused(kwargs, words):
    with pytest.raises(IncompatibleBaselineError, match=words):
        gate_results(make_result(samples(seed=1)), make_result(samples(seed=2), **kwargs))


# ---- baselines ----

def test_save_baseline_merges_configurations(tmp_path):
    path = tmp_path / "baselines" / "rpi4.json"
    save_baseline(make_result(samples(seed=1)), path)
    save_baseline(make_result(samples(40, seed=2), variant="small"), path)
    newer = make_result(samples(21, seed=3))
    doc = save_baseline(newer, path)
    on_disk = load_result_or_baseline(path)
    assert on_disk == doc
    assert sorted(doc["entries"]) == ["small/tflite/fp32/t1/512x512/logits", "tiny/tflite/fp32/t1/512x512/logits"]
    assert doc["entries"]["tiny/tflite/fp32/t1/512x512/logits"]["latencies_ms"] == newer["latencies_ms"]
    assert doc["device"]["id"] == "pi4-bench-1"
    assert doc["recorded"]["small/tflite/fp32/t1/512x512/logits"]["runtime"]["version"] == "2.3.0"
    assert doc["recorded"]["small/tflite/fp32/t1/512x512/logits"]["conditions"]["throttled"] == "0x0"
    assert [p.name for p in path.parent.iterdir()] == ["rpi4.json"]        # no temp file left


def test_save_baseline_refuses_other_device_and_hot_runs(tmp_path):
    path = tmp_path / "rpi4.json"
    save_baseline(make_result(samples(seed=1)), path)
    before = path.read_text()
    with pytest.raises(BaselineError, match="device"):
        save_baseline(make_result(samples(seed=2), device_id="laptop"), path)
    with pytest.raises(BaselineError, match="hot"):
        save_baseline(make_result(samples(seed=2), conditions={"hot": True}), path)
    assert path.read_text() == before


@pytest.mark.parametrize("content,words", [(None, "no such file"), ("{not json", "not JSON"),
                                           ('{"schema": "something-else"}', "not a bench result"),
                                           ('{"schema": "topformer-deploy/baseline", "schema_version": 9}',
                                            "schema_version")])
def test_load_rejects_unusable_files(tmp_path, content, words):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BaselineError, match=words):
        load_result_or_baseline(path)


# ---- outputs ----

def test_github_benchmark_entries_format():
    res = make_result(samples(seed=1))
    entries = github_benchmark_entries([res])
    assert len(entries) == 1
    e = entries[0]
    assert set(e) == {"name", "unit", "value", "range", "extra"}
    assert e["name"] == "tiny/tflite/fp32/t1/512x512/logits p50" and e["unit"] == "ms"
    assert e["value"] == pytest.approx(np.median(res["latencies_ms"]), rel=1e-4)
    assert e["range"].startswith("± ") and float(e["range"][2:]) == pytest.approx(res["stats"]["std"], rel=1e-3)
    assert "Raspberry Pi 4" in e["extra"] and "runs: 30" in e["extra"]


def test_markdown_summary_content():
    report = gate_results(make_result(samples(seed=1)), make_result(samples(seed=2) * 1.2))
    md = gate_markdown(report)
    assert md.startswith("### Latency gate: :x: regression")
    assert "| configuration | baseline p50 | candidate p50 | change | CI | p | verdict |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `tiny/"))
    assert "**regression**" in row and "+2" in row            # +2x.x% change
    assert "pi4-bench-1" in md and "ai_edge_litert 2.3.0" in md


# ---- CLI ----

def run_cli(*args, env=None):
    return CliRunner().invoke(main, ["gate", *args], env=env)


def test_cli_regression_exit_1_with_outputs(tmp_path, monkeypatch):
    base = write(tmp_path / "base.json", make_result(samples(seed=1)))
    cand = write(tmp_path / "cand.json", make_result(samples(seed=2) * 1.25))
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    result = run_cli("--baseline", base, "--candidate", cand, "--max-slowdown", "5%", "--json",
                     "--github-benchmark", str(tmp_path / "gh.json"), "--summary-md", str(tmp_path / "s.md"),
                     env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "regression" and doc["configurations"][0]["verdict"] == "regression"
    gh = json.loads((tmp_path / "gh.json").read_text())
    assert gh[0]["unit"] == "ms" and gh[0]["name"].endswith("p50")
    assert (tmp_path / "s.md").read_text().startswith("### Latency gate")
    assert summary.read_text().startswith("earlier step\n### Latency gate: :x: regression")


def test_cli_same_exit_0_and_table(tmp_path):
    base = write(tmp_path / "base.json", make_result(samples(seed=1)))
    cand = write(tmp_path / "cand.json", make_result(samples(seed=2)))
    result = run_cli("--baseline", base, "--candidate", cand, "--max-slowdown", "0.05")
    assert result.exit_code == 0, result.output
    assert "same" in result.stdout and "PASS" in result.stdout


def test_cli_gates_several_candidates_against_a_baseline_file(tmp_path):
    path = tmp_path / "rpi4.json"
    save_baseline(make_result(samples(seed=1)), path)
    save_baseline(make_result(samples(40, seed=3), variant="small"), path)
    c1 = write(tmp_path / "c1.json", make_result(samples(seed=2)))
    c2 = write(tmp_path / "c2.json", make_result(samples(40, seed=4) * 0.7, variant="small"))
    result = run_cli("--baseline", str(path), "--candidate", c1, "--candidate", c2, "--json")
    assert result.exit_code == 0, result.output
    verdicts = [c["verdict"] for c in json.loads(result.stdout)["configurations"]]
    assert verdicts == ["same", "improvement"]


@pytest.mark.parametrize("kwargs,words", [({"device_id": "other-pi"}, "device"),
                                          ({"runtime_version": "2.4.0"}, "runtime"),
                                          ({"threads": 4}, "thread count")])
def test_cli_refuses_incompatible_baseline(tmp_path, kwargs, words):
    base = write(tmp_path / "base.json", make_result(samples(seed=1)))
    cand = write(tmp_path / "cand.json", make_result(samples(seed=2), **kwargs))
    result = run_cli("--baseline", base, "--candidate", cand)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: baseline for tiny/") and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    cand = write(tmp_path / "cand.json", make_result(samples(seed=2)))
    proc = subprocess.run([sys.executable, "-m", "topformer_deploy", "gate", "--baseline", str(bad),
                           "--candidate", cand], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: not JSON (Expecting property name enclosed in "
                                                "double quotes at line 1)"]
    result = run_cli("--baseline", cand, "--candidate", cand, "--max-slowdown", "lots")
    assert result.exit_code == 2 and "not a fraction" in result.stderr


def test_cross_config_compares_two_variants(tmp_path):
    base = write(tmp_path / "tiny.json", make_result(samples(seed=1)))
    cand = write(tmp_path / "small.json", make_result(samples(seed=2) * 1.8, variant="small"))
    plain = run_cli("--baseline", base, "--candidate", cand, "--json")
    assert plain.exit_code == 2 and "no baseline entry" in plain.stdout
    result = run_cli("--baseline", base, "--candidate", cand, "--cross-config", "--json")
    assert result.exit_code == 1, result.output
    row = json.loads(result.stdout)["configurations"][0]
    assert row["config_key"] == "tiny/tflite/fp32/t1/512x512/logits -> small/tflite/fp32/t1/512x512/logits"
    assert row["verdict"] == "regression"


def test_chart_is_written(tmp_path):
    report = gate_results(make_result(samples(seed=1)), make_result(samples(seed=2) * 1.2))
    gate_chart(report, tmp_path / "gate.png")
    assert (tmp_path / "gate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gate.png"]


def test_cross_config_may_compare_two_runtimes_but_not_two_devices():
    base = make_result(samples(seed=1))
    other_build = make_result(samples(seed=2), variant="small", runtime_version="2.4.0")
    report = gate_results(base, other_build, cross_config=True)
    assert report.rows[0].verdict.verdict in {"same", "regression", "improvement", "inconclusive"}
    with pytest.raises(IncompatibleBaselineError, match="device"):
        gate_results(base, make_result(samples(seed=2), variant="small", device_id="other"), cross_config=True)
    with pytest.raises(IncompatibleBaselineError, match="runtime"):
        gate_results(base, make_result(samples(seed=2), runtime_version="2.4.0"))


# ---- interleaved A/B results (bench --compare) ----

def compare_doc(base_ms, head_ms, variant="tiny", device_id="pi4-bench-1"):
    return {"schema": "topformer-deploy/bench-compare", "schema_version": 1, "created": "2026-01-01T00:00:00+00:00",
            "interleave": {"rounds": 6, "runs_per_round": 5, "order": "ABBA"}, "partial": False,
            "a": make_result(base_ms, device_id=device_id), "b": make_result(head_ms, variant=variant, device_id=device_id)}


def test_gate_compared_judges_each_head_against_its_own_base():
    report = gate_compared([compare_doc(samples(seed=1), samples(seed=2)),
                            compare_doc(samples(seed=3), samples(seed=4) * 1.3, variant="small")])
    assert [(r.config_key.split("/")[0], r.verdict.verdict) for r in report.rows] == [
        ("tiny", "same"), ("tiny", "regression")]
    assert report.rows[1].config_key.endswith("-> small/tflite/fp32/t1/512x512/logits")
    assert report.status == "regression" and report.device["id"] == "pi4-bench-1"
    with pytest.raises(IncompatibleBaselineError, match="several devices"):
        gate_compared([compare_doc(samples(seed=1), samples(seed=2)),
                       compare_doc(samples(seed=1), samples(seed=2), device_id="other-pi")])


def test_cli_compare_results(tmp_path):
    same = write(tmp_path / "tiny.json", compare_doc(samples(seed=1), samples(seed=2)))
    slower = write(tmp_path / "tiny2.json", compare_doc(samples(seed=3), samples(seed=4) * 1.2))
    result = run_cli("--compare", same, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["configurations"][0]["verdict"] == "same"
    result = run_cli("--compare", same, "--compare", slower, "--github-benchmark", str(tmp_path / "gh.json"))
    assert result.exit_code == 1 and "REGRESSION" in result.stdout
    entries = json.loads((tmp_path / "gh.json").read_text())                 # the heads' medians
    assert [e["value"] for e in entries] == [pytest.approx(np.median(samples(seed=2)), rel=1e-4),
                                             pytest.approx(np.median(samples(seed=4) * 1.2), rel=1e-4)]


@pytest.mark.parametrize("args,words", [(["--compare", "{same}", "--baseline", "{same}"], "either"),
                                        ([], "either"),
                                        (["--baseline", "{same}"], "go together"),
                                        (["--compare", "{plain}"], "not a bench --compare result")])
def test_cli_compare_bad_input_is_one_line_exit_2(tmp_path, args, words):
    paths = {"same": write(tmp_path / "ab.json", compare_doc(samples(seed=1), samples(seed=2))),
             "plain": write(tmp_path / "one.json", make_result(samples(seed=1)))}
    result = run_cli(*[a.format(**paths) for a in args])
    assert result.exit_code == 2 and words in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_github_benchmark_entries_of_a_simulated_core_are_instructions():
    res = make_result(samples(seed=1))
    res["instructions"] = {"per_run_total": [4_241_593, 4_241_600, 4_241_590]}
    (entry,) = github_benchmark_entries([res])
    assert entry["name"] == "tiny/tflite/fp32/t1/512x512/logits instructions"
    assert entry["unit"] == "instructions" and entry["value"] == 4_241_593
