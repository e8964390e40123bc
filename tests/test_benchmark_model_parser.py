"""benchmark_model / onnxruntime output parsers on the real outputs in ../shared/fixtures/device-outputs."""
from __future__ import annotations

import json

import pytest

from topformer_deploy.bench.benchmark_model import (
    benchmark_model_argv, parse_benchmark_model, parse_onnxruntime_perf_test, parse_onnxruntime_profile,
    split_prefix, summarize_onnxruntime_profile)


@pytest.fixture()
def parse(device_outputs):
    return lambda name: parse_benchmark_model((device_outputs / name).read_text())


@pytest.fixture()
def read(device_outputs):
    return lambda name: (device_outputs / name).read_text()


# ------------------------------------------------------------------------------------ argv
def test_argv_runs_exactly_the_requested_counts():
    argv = benchmark_model_argv("/data/local/tmp/x/benchmark_model", "/data/local/tmp/x/m.tflite", threads=4,
                                warmup=3, runs=20, op_profiling=True)
    assert argv[0] == "/data/local/tmp/x/benchmark_model"
    assert {"--graph=/data/local/tmp/x/m.tflite", "--num_threads=4", "--warmup_runs=3", "--warmup_min_secs=0",
            "--num_runs=20", "--min_secs=0", "--use_xnnpack=true", "--enable_op_profiling=true"} <= set(argv)
    csv = benchmark_model_argv("bm", "m.tflite", op_profiling=True, profile_csv="/tmp/p.csv", use_xnnpack=None)
    assert "--op_profiling_output_mode=csv" in csv and "--op_profiling_output_file=/tmp/p.csv" in csv
    assert not any(a.startswith("--use_xnnpack") for a in csv)
    assert "--enable_op_profiling=true" not in benchmark_model_argv("bm", "m.tflite")


def test_argv_litert_flavor_and_bad_values():
    argv = benchmark_model_argv("bm", "m.tflite", op_profiling=True, flavor="litert")
    assert "--use_profiler=true" in argv and "--use_cpu=true" in argv
    assert not any(a.startswith(("--use_xnnpack", "--enable_op_profiling")) for a in argv)
    with pytest.raises(ValueError):
        benchmark_model_argv("bm", "m.tflite", runs=0)
    with pytest.raises(ValueError):
        benchmark_model_argv("bm", "m.tflite", flavor="tf1")


def test_split_prefix_variants():
    assert split_prefix("INFO: [./litert/tools/benchmark_litert_model.h:82] Model initialization: 4.49 ms") == (
        "INFO", "Model initialization: 4.49 ms")
    assert split_prefix("05-30 15:16:44.858  3380  3380 I tflite  : Initialized session in 126.059ms.") == (
        "INFO", "Initialized session in 126.059ms.")
    assert split_prefix("\tINFO: STARTING!") == ("INFO", "STARTING!")
    assert split_prefix("ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.")[0] == "ERROR"
    assert split_prefix("count=1 curr=751932") == (None, "count=1 curr=751932")


# ---------------------------------------------------------------------------- summaries
def test_2019_average_inference_timings_format(parse):
    r = parse("tflite_benchmark_model_2019_tf2.0era_armv7_zedboard_avg_timings_no_stats.txt")
    assert r["warmup"] == {"count": 1, "curr_ms": 751.932}
    assert r["inference"]["count"] == 50 and r["inference"]["avg_ms"] == pytest.approx(747.733)
    assert r["inference"]["std_ms"] == pytest.approx(0.293)
    assert r["inference_avg_ms"] == pytest.approx(747.733) and r["init_ms"] == pytest.approx(21.039)
    assert r["warmup_avg_ms"] == pytest.approx(751.932) and r["first_inference_ms"] == pytest.approx(751.932)
    assert r["params"]["Use gpu"] == "0" and r["params"]["Num threads"] == "1"  # "Use gpu : [0]"
    assert r["memory"] == {} and r["error"] is None and r["ops"] == []


def test_v24_tail_with_peak_memory_wording(parse):
    r = parse("tflite_benchmark_model_v2.4_android_mi11_cpu_summary.txt")
    assert r["warmup"] is None
    assert r["inference"]["count"] == 50 and r["inference"]["avg_ms"] == pytest.approx(249.684)
    assert r["inference"]["min_ms"] == pytest.approx(247.067) and r["inference"]["max_ms"] == pytest.approx(254.474)
    assert r["first_inference_ms"] == pytest.approx(360.262) and r["warmup_avg_ms"] == pytest.approx(304.586)
    assert r["memory"] == {"kind": "peak", "init_mb": 4.92969, "overall_mb": 138.809}


def test_scientific_notation_riscv(parse):
    r = parse("tflite_benchmark_model_v2.8_op_profiling_no_delegate_riscv64.txt")
    assert r["inference"]["avg_ms"] == pytest.approx(2950.34)
    assert r["inference_avg_ms"] == pytest.approx(2950.34) and r["warmup_avg_ms"] == pytest.approx(3512.39)
    assert r["memory"] == {"kind": "delta", "init_mb": 4.21094, "overall_mb": 46.0859}
    assert r["model_size_mb"] == pytest.approx(16.9008)


def test_logcat_prefixed_lines(parse):
    r = parse("tflite_benchmark_model_v2.9_android_logcat_prefixed_nnapi.txt")
    assert r["warmup"]["count"] == 40 and r["inference"]["count"] == 75
    assert r["inference"]["avg_ms"] == pytest.approx(12.1676) and r["inference"]["std_ms"] == pytest.approx(0.325)
    assert r["init_ms"] == pytest.approx(126.059) and r["first_inference_ms"] == pytest.approx(32.942)
    assert r["delegate"] == {"name": "NNAPI", "full": False, "kernels": 44}


def test_raspberry_pi_mixed_info_prefix(parse):
    r = parse("tflite_benchmark_model_raspberrypi_xnnpack_summary_issue_xnnpack999.txt")
    assert r["warmup"]["count"] == 9 and r["inference"]["count"] == 50
    assert r["inference"]["avg_ms"] == pytest.approx(55.0432) and r["inference"]["min_ms"] == pytest.approx(53.077)
    assert r["memory"] == {"kind": "delta", "init_mb": 8.97656, "overall_mb": 18.7227}
    assert r["params"]["Enable op profiling"] == "1"


def test_2025_info_prefix_percentiles_and_memory_blocks(parse):
    r = parse("tflite_benchmark_model_2025_info_prefix_peak_mem_x86_64.log")
    inf = r["inference"]
    assert inf["count"] == 536 and inf["median_ms"] == pytest.approx(1.752)
    assert inf["p5_ms"] == pytest.approx(1.306) and inf["p95_ms"] == pytest.approx(2.515)
    assert r["warmup"]["median_ms"] == pytest.approx(1.339)
    assert r["memory"] == {"kind": "delta", "init_mb": 26.0, "overall_mb": 27.5, "peak_mb": 32.5,
                           "vm_rss_mb": 32.0, "rss_anon_mb": 16.0, "rss_file_shmem_mb": 16.0}
    assert r["delegate"] == {"name": "XNNPACK", "full": True, "kernels": None}
    assert r["params"]["Op profiling output mode."] == "csv"


def test_2025_litert_benchmark_results_block_in_ms(parse):
    r = parse("litert_benchmark_model_2025_xnnpack_op_profiling_android_sme2.txt")
    assert r["inference"]["count"] == 1000 and r["inference"]["median_ms"] == pytest.approx(1.373)
    assert r["inference_avg_ms"] == pytest.approx(1.38) and r["warmup_avg_ms"] == pytest.approx(1.39)
    assert r["first_inference_ms"] == pytest.approx(1.93)
    assert r["init_ms"] == pytest.approx(4.488)  # the ms line "Initialized session in 4.488ms" is kept
    assert r["results_block"] == {"min_ms": 1.36, "max_ms": 1.45, "std_ms": 0.01}
    assert r["memory"] == {"kind": "footprint", "init_mb": 9.07, "overall_mb": 11.25}
    assert r["throughput_mb_s"] == pytest.approx(176.96)
    assert r["delegate"]["name"] == "TfLiteXNNPackDelegate" and r["delegate"]["full"]


def test_nnapi_failure_sets_error(parse):
    r = parse("tflite_benchmark_model_v2.4_android_nnapi_failure.txt")
    assert r["inference"] is None and r["inference_avg_ms"] is None
    assert "ANEURALNETWORKS_OP_FAILED" in r["error"] and "Benchmarking failed" in r["error"]
    assert "Failed to apply NNAPI delegate." in r["errors"]
    assert r["params"]["NNAPI accelerators available"] == "qti-default,qti-dsp,qti-gpu,nnapi-reference"


def test_successful_runs_have_no_error(parse, device_outputs):
    for path in device_outputs.glob("*benchmark_model*"):
        if "failure" not in path.name:
            assert parse(path.name)["error"] is None, path.name


# --------------------------------------------------------------------------- op profiles
def test_op_table_with_start_column_nnapi(parse):
    r = parse("tflite_benchmark_model_v2.4_android_mi11_nnapi_op_profiling.txt")
    init = r["op_profile"]["init"]
    assert [(o["node_type"], o["times_called"]) for o in init["run_order"]] == [
        ("ModifyGraphWithDelegate", 1), ("AllocateTensors", 2)]
    assert len(r["ops"]) == 11 == r["op_profile"]["run"]["nodes_executed"]
    first = r["ops"][0]
    assert first == {"node_type": "STRIDED_SLICE", "start_ms": 0.021, "first_ms": 2.167, "avg_ms": 2.118,
                     "pct": 1.335, "cdf_pct": 1.335, "mem_kb": 0.0, "times_called": 1,
                     "name": "[model/tf.strided_slice/StridedSlice]:0"}
    assert r["ops"][6]["name"] == "[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231"
    assert [(o["node_type"], o["count"], o["avg_ms"]) for o in r["ops_by_type"]] == [
        ("TfLiteNnapiDelegate", 3, 149.483), ("STRIDED_SLICE", 6, 8.347), ("RESIZE_NEAREST_NEIGHBOR", 2, 0.879)]
    assert r["op_profile"]["run"]["timings"]["avg_ms"] == pytest.approx(158.715)
    assert len(r["op_profile"]["run"]["top"]) == 10


def test_op_table_without_delegate_riscv(parse):
    r = parse("tflite_benchmark_model_v2.8_op_profiling_no_delegate_riscv64.txt")
    assert len(r["ops"]) == 31 and r["ops"][-1]["node_type"] == "SOFTMAX"
    assert sum(o["node_type"] == "CONV_2D" for o in r["ops"]) == 15
    assert r["ops_by_type"][0] == {"node_type": "CONV_2D", "count": 15, "avg_ms": 2651.853, "pct": 89.897,
                                   "cdf_pct": 89.897, "mem_kb": 0.0, "times_called": 15}
    assert sum(o["avg_ms"] for o in r["ops"]) == pytest.approx(2949.9, rel=0.01)


def test_xnnpack_table_with_rst_indentation_and_no_start_column(parse):
    r = parse("tflite_benchmark_model_v2.13_xnnpack_op_profiling_arm_tc2_fvp.txt")
    assert len(r["ops"]) == 115 == r["op_profile"]["run"]["nodes_executed"]
    assert "start_ms" not in r["ops"][0]
    assert r["ops"][0]["node_type"] == "Convolution (NHWC, QU8) IGEMM"
    assert r["ops"][0]["name"] == "Delegate/Convolution (NHWC, QU8) IGEMM:0"
    assert r["ops"][-1]["node_type"] == "TFLite_Detection_PostProcess" and r["ops"][-1]["avg_ms"] == 1.339
    types = {o["node_type"] for o in r["ops_by_type"]}
    assert {"Add (ND, QU8)", "Copy (NC, X8)", "Sigmoid (NC, QU8)", "CONCATENATION"} <= types
    assert len(r["ops_by_type"]) == 8 and r["inference"]["avg_ms"] == pytest.approx(7.45497)


def test_litert_2025_op_rows_with_zero_times_called(parse):
    r = parse("litert_benchmark_model_2025_xnnpack_op_profiling_android_sme2.txt")
    assert [o["node_type"] for o in r["ops"]] == [
        "LiteRT::Run[buffer registration]", "AllocateTensors", "Static Reshape (NC)",
        "Fully Connected (NC, F32) GEMM", "LiteRT::Run[Buffer sync]"]
    assert r["ops"][1]["times_called"] == 0 and r["ops"][3]["avg_ms"] == 1.269 and r["ops"][3]["pct"] == 97.059
    assert r["ops_by_type"][0]["node_type"] == "Fully Connected (NC, F32) GEMM"


def test_overlong_node_type_summary(parse):
    r = parse("tflite_op_profiling_summary_overlong_node_type_no_delegate.txt")
    assert r["op_profile"]["run"]["nodes_executed"] == 64
    assert [(o["node_type"], o["count"], o["avg_ms"]) for o in r["ops_by_type"]] == [
        ("CONV_2D", 34, 266.475), ("DEPTHWISE_CONV_2D", 13, 83.74), ("TFLite_Detection_PostProcess", 1, 3.579),
        ("CONCATENATION", 2, 0.483), ("LOGISTIC", 1, 0.233)]


def test_csv_op_profile_with_unquoted_commas(parse):
    r = parse("tflite_benchmark_model_op_profiling_csv_xnnpack_x86_64.csv")
    assert len(r["ops"]) == 45 == r["op_profile"]["run"]["nodes_executed"]
    assert r["ops"][0] == {"node_type": "Convolution (NHWC, F32) IGEMM", "first_ms": 0.096, "avg_ms": 0.132631,
                           "pct": 7.45678, "cdf_pct": 7.45678, "mem_kb": 0.0, "times_called": 1,
                           "name": "Delegate/Convolution (NHWC, F32) IGEMM:0"}
    assert r["ops"][43]["node_type"] == "Sum (ND) Reduce"
    assert [(o["node_type"], o["count"]) for o in r["ops_by_type"]] == [
        ("Fully Connected (NC, F32) GEMM", 22), ("Convolution (NHWC, F32) DWConv", 21),
        ("Convolution (NHWC, F32) IGEMM", 1), ("Sum (ND) Reduce", 1)]
    assert r["op_profile"]["init"]["run_order"][0]["mem_kb"] == 15104
    assert r["op_profile"]["run"]["timings"]["avg_ms"] == pytest.approx(1.77866)


# ----------------------------------------------------------------------------- onnxruntime
def test_ort_profile_2025_with_thread_scheduling_stats(read):
    rows = parse_onnxruntime_profile(read("onnxruntime_profile_json_2025_snippet_thread_scheduling_stats.json.txt"))
    assert rows == [{"node": "/model/attn_mask_reformat/attn_mask_subgraph/Shape", "op_type": "Shape",
                     "provider": "DmlExecutionProvider", "dur_ms": 0.069, "ts_us": 2579165, "thread": 152600,
                     "node_index": 3, "input_shapes": [{"int64": [1, 200]}], "output_shapes": [{"int64": [2]}]}]


def test_ort_profile_v04_with_empty_node_names(read):
    rows = parse_onnxruntime_profile(read("onnxruntime_profile_json_v0.4.0_snippet_empty_node_names.json.txt"))
    assert [(r["node"], r["op_type"], r["dur_ms"], r["provider"]) for r in rows] == [(None, "Conv", 12.944, None)]


def test_ort_profile_v15_fence_triplets(read):
    rows = parse_onnxruntime_profile(read("onnxruntime_profile_json_v1.5_era_snippet_cpu_ep.json.txt"))
    assert [(r["node"], r["op_type"], r["dur_ms"]) for r in rows] == [("Add_27", "Add", 0.042),
                                                                      ("PRelu_28", "PRelu", 0.08)]
    summary = summarize_onnxruntime_profile(rows + rows)
    assert [(s["node"], s["calls"]) for s in summary] == [("PRelu_28", 2), ("Add_27", 2)]
    assert summary[0]["avg_ms"] == pytest.approx(0.08) and summary[0]["total_ms"] == pytest.approx(0.16)


def test_ort_profile_accepts_a_whole_file_and_event_lists(read):
    lines = read("onnxruntime_profile_json_v1.5_era_snippet_cpu_ep.json.txt").strip().rstrip(",")
    events = json.loads("[" + lines + "]")
    assert len(parse_onnxruntime_profile("[" + lines + "]")) == 2
    assert len(parse_onnxruntime_profile(events)) == 2
    assert len(parse_onnxruntime_profile(json.dumps({"traceEvents": events}))) == 2


def test_perf_test_modern_percentiles(read):
    [run] = parse_onnxruntime_perf_test(read("onnxruntime_perf_test_android_sme2_c1pro_percentiles.txt"))
    assert run["avg_ms"] == pytest.approx(98.961997) and run["first_inference_ms"] == 196
    assert run["p50_ms"] == pytest.approx(99.5086) and run["min_ms"] == pytest.approx(95.8204)
    assert run["p999_ms"] == pytest.approx(101.519) and run["runs"] == 5 and run["requests"] == 5
    assert run["cpu_usage_pct"] == 11 and run["peak_working_set_bytes"] == 271122432
    assert run["session_creation_ms"] == pytest.approx(217.932)


def test_perf_test_two_old_runs_separated_by_prompts(read):
    acl, cpu = parse_onnxruntime_perf_test(read("onnxruntime_perf_test_v1.3.1_armv8_acl_vs_cpu.txt"))
    assert "-e acl" in acl["command"] and acl["avg_ms"] == pytest.approx(144.871) and acl["requests"] == 10
    assert "-e acl" not in cpu["command"] and "avg_ms" not in cpu  # the paste stops early
    assert cpu["total_inference_ms"] == pytest.approx(843.236)


def test_perf_test_without_space_after_colon(read):
    [run] = parse_onnxruntime_perf_test(read("onnxruntime_perf_test_v1.3_era_armv8_no_space_after_colon.txt"))
    assert run["avg_ms"] == pytest.approx(83.8059) and run["requests"] == 7160
    assert run["session_creation_ms"] == pytest.approx(133.189) and run["total_run_ms"] == pytest.approx(600102)
