"""End to end on real CIFAR-10 images: a teacher, output- and feature-distilled students (RGB and
YUV), a pruned model and QAT artifacts, run by Snakemake into summary.csv, then bench/optimizations.py."""
import json
import sys

import pandas as pd
import pytest
import yaml

from conftest import cifar_project, sh
from test_pipeline import TINY

pytestmark = pytest.mark.slow


def optimization_matrix(project):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"]["epochs"] = 2
    params["data"]["train_subset"] = 1024
    params["benchmark"]["threads"] = [1]
    models = params["models"]
    params["models"] = {m: models[m] for m in ("mobilenetv2-rgb", "mobilenetv2-yuv420", "mobilenetv2-teacher",
                                             "mobilenetv2-rgb-kd-output", "mobilenetv2-yuv420-kd-feature",
                                             "mobilenetv2-rgb-pruned")}
    params["models"]["mobilenetv2-teacher"]["epochs"] = 1
    params["artifacts"] = {"onnx-fp32": {}, "onnx-int8-qat": {"qat": {"epochs": 1, "steps": 5, "lr": 0.001}}}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = cifar_project(tmp_path_factory, "optimizations", TINY)
    optimization_matrix(project)
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv")
    return project


def test_summary_has_kd_pruned_and_qat_rows_measured_from_artifacts(project):
    table = pd.read_csv(project / "results" / "summary.csv").set_index(["model", "artifact"])
    assert (table["status"] == "ok").all(), table[table["status"] != "ok"]["reason"]
    assert (table["runtime"] == "onnxruntime").all() and (table["top1"] > 0).all()
    kd_out = table.loc[("mobilenetv2-rgb-kd-output", "onnx-fp32")]
    assert (kd_out["teacher"], kd_out["kd_type"], kd_out["kd_alpha"]) == ("mobilenetv2-teacher", "output", 1.0)
    kd_feat = table.loc[("mobilenetv2-yuv420-kd-feature", "onnx-fp32")]
    assert (kd_feat["kd_type"], kd_feat["input_format"], kd_feat["epochs"]) == ("feature", "yuv420", 3)
    pruned, base = table.loc[("mobilenetv2-rgb-pruned", "onnx-fp32")], table.loc[("mobilenetv2-rgb", "onnx-fp32")]
    assert (pruned["prune_ratio"], pruned["prune_iteration"]) == (0.15, 2)
    assert pruned["params"] < 0.8 * base["params"] and pruned["macs"] < base["macs"]
    assert pd.isna(base["teacher"]) and pd.isna(base["prune_ratio"])
    for fmt in ("rgb", "yuv420"):
        qat = table.loc[(f"mobilenetv2-{fmt}", "onnx-int8-qat")]
        assert (qat["quant_method"], qat["precision"], qat["format"]) == ("qat", "int8", "onnx")
        assert qat["size_bytes"] < 0.5 * table.loc[(f"mobilenetv2-{fmt}", "onnx-fp32")]["size_bytes"]
    report = json.loads((project / "results/models/mobilenetv2-rgb-pruned/prune_report.json").read_text())
    assert len(report["iterations"]) == 3 and all(len(layer["channels"]) == 3 for layer in report["channels"])


def test_optimization_benchmark_reads_the_run(project):
    out = project / "bench" / "results" / "optimizations.json"
    sh(project, sys.executable, "bench/optimizations.py", "--params", "params.yaml", "--results", "results",
       "--out", str(out))
    figures = json.loads(out.read_text())
    assert {r["artifact"] for r in figures["quantization"]} == {"onnx-int8-qat"}
    assert all(r["top1_change"] is not None for r in figures["quantization"])
    kd = {r["student"]: r for r in figures["distillation"]}
    assert kd["mobilenetv2-rgb-kd-output"]["baseline"] == "mobilenetv2-rgb"
    assert kd["mobilenetv2-rgb-kd-output"]["epochs_student"] == 3
    (prune,) = figures["pruning"]
    assert prune["from"] == "mobilenetv2-rgb" and prune["params_ratio"] < 0.8 and prune["top1_change"] is not None
