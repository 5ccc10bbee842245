"""Seed 000's full configuration at fixture size, from a fresh copy of the repository: ImageNet class folders
(tests/data/imagenet), the ImageNet protocol, MobileNetV2 width 1.0 at 224x224 in RGB and YUV 4:2:0, through
export, quantization, evaluation and benchmark, and seed 000's pre-processing table with the 224 px models."""
import json
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import cifar_project, sh

OVERLAY = "config/papers/yuv420_mobilenetv2/imagenet-fixture.yaml"
MODELS = ("mobilenetv2-rgb", "mobilenetv2-yuv420")
# CI-sized: the overlay's every-artifact matrix cut to the fp32 ONNX file and ORT static int8, one epoch
CI_CUTS = ["train.epochs=1", "train.schedule.cosine_epochs=1", "benchmark.threads=[1]",
           "benchmark.pipeline.resolutions=[[640, 360], [1920, 1080]]", "benchmark.pipeline.min_duration_s=0.1",
           *(f"models.{m}.artifacts=[onnx-fp32, onnx-int8-static]" for m in MODELS)]


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    project = cifar_project(tmp_path_factory, "imagenet-fixture", ["--file", OVERLAY, *CI_CUTS])
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv",
       "results/papers/yuv420_mobilenetv2/table.md", timeout=1500)
    return project


@pytest.mark.slow
def test_224px_rows_measured_from_every_artifact(fixture_run):
    summary = pd.read_csv(fixture_run / "results" / "summary.csv")
    assert set(summary["model"]) == set(MODELS) and (summary["status"] == "ok").all(), summary
    assert set(summary["artifact"]) == {"onnx-fp32", "onnx-int8-static"}
    assert (summary["test_images"] == 28).all() and summary["top1"].between(0, 1).all()
    for model in MODELS:
        for artifact in ("onnx-fp32", "onnx-int8-static"):
            evaluated = json.loads((fixture_run / f"results/eval/{model}/{artifact}.json").read_text())
            assert evaluated["test_images"] == 28 and len(evaluated["per_class_top1"]) == 14
            assert np.isclose(summary.set_index(["model", "artifact"]).loc[(model, artifact), "top1"],
                              evaluated["top1"])
        metrics = json.loads((fixture_run / f"results/models/{model}/train_metrics.json").read_text())
        assert metrics["train_images"] == 47 and metrics["width_mult"] == 1.0
    # width 1.0 at 224 x 224: MobileNetV2's ~300 M multiply-accumulates (14 classes), not the 32 px variant's
    assert (summary["macs"] > 290e6).all() and (summary["params"] > 2.2e6).all()


@pytest.mark.slow
def test_packed_data_follow_the_imagenet_policy(fixture_run):
    train = json.loads((fixture_run / "data/packed/train/manifest.json").read_text())
    assert train["layout"] == "jpeg" and train["count"] == 47 and train["kept_verbatim"] == 47
    for fmt, layout in (("rgb", "HWC"), ("yuv420", "I420")):
        manifest = json.loads((fixture_run / f"data/packed/{fmt}/manifest.json").read_text())
        assert (manifest["height"], manifest["width"], manifest["layout"]) == (224, 224, layout)
        assert manifest["eval_transform"]["resize_short_side"] == 256


@pytest.mark.slow
def test_preprocessing_table_runs_with_the_224px_models(fixture_run):
    table = pd.read_csv(fixture_run / "results/pipeline/local/table.csv")
    assert list(table["width"]) == [640, 1920] and (table["status"] == "ok").all()
    assert (table["rgb_infer_ms"] > 0).all() and (table["yuv_infer_ms"] > 0).all()
    paper = pd.read_csv(fixture_run / "results/papers/yuv420_mobilenetv2/table.csv").set_index("metric")
    assert paper.loc["latency RGB 640x360", "reproduced"] > 0 and paper.loc["latency YUV 4:2:0 1920x1080", "reproduced"] > 0
    # the seed's 224 px YUV model: 0.3 G MACs published, what this run's model measures
    assert abs(paper.loc["MACs per image, YUV 4:2:0", "reproduced"] - 0.3) < 0.015
