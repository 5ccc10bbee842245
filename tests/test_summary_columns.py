"""results/summary.csv: every column means one thing. One precision vocabulary across runtimes, a 95 %
interval beside each top-1, peak RSS of the process that measured the row, the mean ± std over seeds."""
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, base_params
from workflow.aggregate import COLUMNS, accuracy_columns, artifact_columns, bench_columns, seed_means, to_markdown


@pytest.mark.parametrize("artifact, report, expected", [
    ("onnx-int8-dynamic", {"format": "onnx", "precision": "int8", "quant_method": "dynamic"}, ("int8", "dynamic")),
    ("tflite-int8-dynamic", {"format": "tflite", "precision": "dynamic_int8", "quant_method": "dynamic"},
     ("int8", "dynamic")),
    ("onnx-int8-static", {"format": "onnx", "precision": "int8", "quant_method": "static"}, ("int8", "static")),
    ("tflite-int8-full", {"format": "tflite", "precision": "int8", "quant_method": "full_integer"}, ("int8", "static")),
    ("tflite-fp16", {"format": "tflite", "precision": "fp16", "quant_method": None}, ("fp16", None)),
    ("onnx-int8-qat", {"format": "onnx", "precision": "int8"}, ("int8", "qat")),
])
def test_one_precision_vocabulary_across_runtimes(artifact, report, expected):
    columns = artifact_columns(base_params(), artifact, report)
    assert (columns["precision"], columns["quant_method"]) == expected


def runner_result(first_peak, process_peak):
    timed = {"latency_ms": {"mean": 1.0, "p50": 1.0, "p90": 1.1, "p99": 1.5}, "throughput_fps": 900.0}
    return {"settings": {"threads": [1, 2]}, "first_run_ms": 3.0,
            "threads": {"1": {**timed, "peak_rss_mb_so_far": first_peak}, "2": {**timed, "throughput_fps": 1500.0}},
            "memory": {"peak_rss_mb": process_peak}, "runtime": {"providers_active": ["XNNPACK"]},
            "host": {"cpu_model": "x"}}


def test_peak_rss_is_the_rows_own_setting():
    """The row's latency is at the sweep's first thread count, measured first in its own process: its peak RSS
    is the process's peak at that point, not after the later thread counts and stream workers."""
    columns = bench_columns({"params": 1, "macs": 1, "size_bytes": 1}, runner_result(61.0, 95.0))
    assert columns["peak_rss_mb"] == 61.0 and columns["threads"] == 1 and columns["throughput_best_threads"] == 2


def test_runner_peak_rss_is_its_own_not_the_parents():
    """On Linux ru_maxrss survives exec: a runner started by a big stage process reported that stage's peak."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('r', sys.argv[1]); "
            "r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r); print(r.peak_rss_mb())")
    ballast = bytearray(400 * 1024 * 1024)  # this process: > 400 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run([sys.executable, "-c", code, str(REPO / "workflow" / "device_runner.py")],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < 300, child.stdout
    del ballast


def test_top1_carries_its_wilson_interval_and_the_input_size():
    columns = accuracy_columns({"top1": 0.421, "test_images": 1000, "imgsz": "32x32"})
    assert columns["top1_ci_low"] == pytest.approx(0.3908, abs=1e-4)
    assert columns["top1_ci_high"] == pytest.approx(0.4518, abs=1e-4) and columns["imgsz"] == "32x32"


def summary(seeds):
    rows = []
    for seed, top1, p50 in seeds:
        for delegate, shift in (("xnnpack", 0.0), ("none", 1.0)):
            rows.append({**dict.fromkeys(COLUMNS), "model": "mobilenetv2-rgb", "artifact": "tflite-fp32",
                         "delegate": delegate, "device": "local", "threads": 1, "status": "ok", "seed": seed,
                         "top1": top1, "top1_ci_low": top1 - 0.03, "top1_ci_high": top1 + 0.03,
                         "latency_p50_ms": p50 + shift})
    return pd.DataFrame(rows, columns=COLUMNS)


def test_several_seeds_report_mean_and_std_beside_the_per_seed_rows():
    table = summary([(0, 0.42, 1.0), (1, 0.44, 1.2), (2, 0.40, 0.8)])
    means = seed_means(table).set_index("delegate")
    assert means.loc["xnnpack", "seeds"] == "0 1 2"
    assert means.loc["xnnpack", "top1"] == "0.42 ± 0.02" and means.loc["none", "latency_p50_ms"] == "2 ± 0.2"
    md = to_markdown(table)
    assert "## Mean ± std over seeds" in md and md.count("| mobilenetv2-rgb") == 6 + 2  # per-seed rows, then means
    assert "## Mean ± std" not in to_markdown(summary([(0, 0.42, 1.0)]))  # one seed: no second table
