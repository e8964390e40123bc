"""The bench harness's own logic on an in-memory device: order of runs, pinning, partial results, clean-up."""
from __future__ import annotations

import pytest

from fakes.transport import MemoryTransport
from topformer_deploy.bench.harness import BenchOptions, run_bench, run_compare
from topformer_deploy.bench.result import validate_result


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # a private lock directory
    paths = []
    for name in ("a.onnx", "b.onnx"):
        path = tmp_path / name
        path.write_bytes(b"not a real model: the memory device never reads it")
        paths.append(path)
    return paths


def test_runs_are_pinned_to_the_big_cores_and_everything_is_removed(models):
    device = MemoryTransport()
    doc = run_bench(models[0], device, BenchOptions(runs=4, warmup=1, repeat=2))
    validate_result(doc)
    assert doc["stats"]["count"] == 8 and len(doc["repeats"]) == 2
    assert doc["conditions"]["cores"] == [0, 1] and doc["conditions"]["pinned_with"] == "taskset"
    argv = device.runner_calls[0]
    assert argv[argv.index("taskset") + 1] == "3"                    # cpu0 + cpu1, a hex mask
    assert device.files == {} and device.dirs == set()               # runner, model and temp dir gone
    assert doc["device"]["id"] == "memory-board" and doc["device"]["arch"] == "aarch64"


def test_compare_alternates_which_model_goes_first(models):
    device = MemoryTransport(latency=lambda model, call: 10.0 if model.endswith("a.onnx") else 11.0)
    doc = run_compare(models[0], models[1], device, BenchOptions(runs=3, warmup=0), rounds=4)
    order = [call[call.index("--model") + 1].rsplit("/", 1)[1] for call in device.runner_calls]
    assert order == ["0-a.onnx", "1-b.onnx", "1-b.onnx", "0-a.onnx"] * 2   # ABBA: drift hits both alike
    assert len(doc["a"]["latencies_ms"]) == len(doc["b"]["latencies_ms"]) == 12
    assert doc["b"]["stats"]["p50"] / doc["a"]["stats"]["p50"] == pytest.approx(1.1)


def test_interrupted_bench_saves_partial_results_and_cleans_up(models):
    device = MemoryTransport(interrupt_on=2)
    saved = []
    with pytest.raises(KeyboardInterrupt):
        run_bench(models[0], device, BenchOptions(runs=2, warmup=0, repeat=3), on_partial=saved.append)
    assert len(saved) == 1 and saved[0]["partial"] is True and saved[0]["stats"]["count"] == 2
    validate_result(saved[0])
    assert device.files == {} and device.dirs == set()


def test_a_hot_device_is_refused_before_anything_is_pushed(models, monkeypatch):
    from fakes import transport

    monkeypatch.setattr(transport, "PROBE", transport.PROBE.replace("45000 cpu-thermal", "91000 cpu-thermal"))
    device = MemoryTransport()
    with pytest.raises(Exception, match="91.0 C is above --max-temp 80"):
        run_bench(models[0], device, BenchOptions(runs=2))
    assert device.runner_calls == [] and device.files == {}
