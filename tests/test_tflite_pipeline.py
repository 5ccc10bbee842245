"""End to end: Snakemake converts both models to TFLite, LiteRT evaluates and times them with XNNPACK on and off.

Needs the LiteRT runtime of workflow/device_runner.py (`--runtime litert --xnnpack on|off`).
"""
import sys

import pandas as pd
import pytest

from conftest import CIFAR_NPZ, cifar_project, sh

pytestmark = pytest.mark.slow

ARTIFACTS = ["onnx-fp32", "tflite-fp32", "tflite-int8-full"]
TINY = ["targets=[onnx, tflite]", "data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=512",
        "data.test_subset=256", "data.calib_subset=32", "artifacts.tflite-int8-full.tflite.io_type=uint8",
        "train.epochs=1", "train.num_threads=1", "train.schedule.cosine_epochs=1", "train.schedule.milestones=[]",
        "export.parity_samples=16", "benchmark.warmup_runs=2", "benchmark.min_runs=10", "benchmark.min_duration_s=0",
        "benchmark.threads=[1]", "benchmark.samples=4", "benchmark.litert_xnnpack=[true, false]",
        *(f"models.{m}.artifacts=[{', '.join(ARTIFACTS)}]" for m in ("mobilenetv2-rgb", "mobilenetv2-yuv420"))]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = cifar_project(tmp_path_factory, "tflite-project", TINY)
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv")
    return project


@pytest.fixture(scope="module")
def summary(project):
    return pd.read_csv(project / "results" / "summary.csv")


def test_finished_run_is_a_no_op(project):
    """No stage rewrites another's output (onnx2tf used to rewrite the fp32 ONNX it converted)."""
    out = sh(project, sys.executable, "-m", "snakemake", "-n", "--cores", "2", "results/summary.csv").stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_tflite_rows_per_delegate_with_measured_accuracy(summary):
    tflite = summary[summary["format"] == "tflite"]
    # 2 models x 2 TFLite artifacts x XNNPACK on/off
    assert len(tflite) == 8 and (tflite["status"] == "ok").all(), tflite[["artifact", "status", "reason"]]
    assert sorted(tflite.groupby(["model", "artifact"])["delegate"].apply(sorted).tolist()) == \
        [["none", "xnnpack"]] * 4
    assert (tflite["runtime"] == "litert").all() and (tflite["latency_p50_ms"] > 0).all()
    assert set(tflite["precision"]) == {"fp32", "int8"} and set(tflite["input_format"]) == {"rgb", "yuv420"}
    full = tflite[tflite["precision"] == "int8"]
    assert (full["quant_method"] == "static").all() and (full["calibration"] == "minmax").all()  # one vocabulary
    onnx = summary[summary["artifact"] == "onnx-fp32"].set_index("model")
    for _, row in tflite.iterrows():
        # accuracy measured from the .tflite file; the same value on both delegate rows
        tolerance = 0.01 if row["precision"] == "fp32" else 0.05
        assert abs(row["top1"] - onnx.loc[row["model"], "top1"]) <= tolerance
        assert row["size_bytes"] > 0 and row["params"] == onnx.loc[row["model"], "params"]
    assert (full["size_bytes"] < 0.5 * tflite[tflite["precision"] == "fp32"]["size_bytes"].max()).all()
    assert (summary.loc[summary["format"] == "onnx", "delegate"] == "CPUExecutionProvider").all()
