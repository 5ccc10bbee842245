"""The detection DAG end to end on real COCO128 images at toy scale: Snakemake runs it, every artifact is measured."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import COCO128, copy_project

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
TINY_MODELS = {
    "yolov5n": {"yaml": "yolov5n.yaml", "imgsz": 64,
                "artifacts": ["onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "tflite-int8"]},
    "yolov5n-kd": {"yaml": "yolov5n.yaml", "imgsz": 64, "teacher": "yolov5n", "kd": "output", "kd_factor": 1.0,
                   "artifacts": ["onnx-fp32"]},
    "yolov5n-fikd": {"yaml": "yolov5n.yaml", "imgsz": 64, "teacher": "yolov5n", "kd": "feature",
                     "kd_factor": 6.0, "artifacts": ["onnx-fp32"]},
    "yolov3tiny-10101": {"yaml": "yolov3-tiny.yaml", "depth_code": "10101", "leaky_slope": 0.125,
                         "imgsz": [64, 96], "artifacts": ["onnx-fp32"]},
    "yolov5n-pruned": {"yaml": "yolov5n.yaml", "imgsz": 64, "artifacts": ["onnx-fp32"],
                       "prune": {"source": "yolov5n", "ratio": 0.15, "iterations": 2, "finetune_epochs": 1}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("detproject")
    copy_project(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    det = params["detection"]
    det["enabled"] = True  # the track is part of the DAG (Snakemake and dvc.yaml) only when enabled
    det["data"].update(path=str(COCO128), train_subset=12, val_subset=4, calib_subset=4)
    det["train"].update(epochs=1, batch_size=4, num_threads=1)
    det["models"] = TINY_MODELS
    det["evaluate"].update(warmup_runs=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "results/detection/summary.csv"],
                            cwd=project, capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def test_summary_has_a_measured_row_per_artifact(project):
    table = pd.read_csv(project / "results" / "detection" / "summary.csv", dtype={"depth_code": str})
    assert (table["task"] == "detection").all()
    expected = {(m, a) for m, spec in TINY_MODELS.items() for a in ("pytorch", *spec["artifacts"])}
    assert set(zip(table["model"], table["artifact"])) == expected and len(table) == len(expected)
    ok = table[table["status"] == "ok"]
    assert len(ok) == len(table), table[table["status"] != "ok"][["model", "artifact", "reason"]]
    assert (ok["val_images"] == 4).all()
    assert ok["map50_95"].between(0, 1).all() and ok["map50"].between(0, 1).all()
    assert (ok["infer_ms"] > 0).all() and (ok["pre_ms"] > 0).all() and (ok["post_ms"] >= 0).all()
    runtimes = dict(zip(ok["artifact"], ok["runtime"]))
    assert runtimes["onnx-int8-static"] == "CPUExecutionProvider" and runtimes["tflite-int8"] == "LiteRT-CPU"
    # int8 files are about a quarter of fp32
    sizes = dict(zip(ok[ok["model"] == "yolov5n"]["artifact"], ok[ok["model"] == "yolov5n"]["size_bytes"]))
    assert sizes["onnx-int8-dynamic"] < 0.5 * sizes["onnx-fp32"]
    # static int8 keeps the head's decoding in float, so class scores are not crushed to one value
    static = json.loads((project / "results/detection/artifacts/yolov5n/onnx-int8-static.json").read_text())
    assert static["settings"]["float_nodes"] > 0
    exported = ok[ok["artifact"] != "pytorch"]
    assert (exported["output_max_abs_diff"] >= 0).all() and (exported["score_levels"] >= 1).all()
    variant = table[table["model"] == "yolov3tiny-10101"].iloc[0]
    assert variant["imgsz"] == "64x96" and str(variant["depth_code"]) == "10101"
    assert "Seed 004" in (project / "results" / "detection" / "paper_tables.md").read_text()


def test_kd_students_trained_with_their_distillation_term(project):
    for model, kind in (("yolov5n-kd", "output"), ("yolov5n-fikd", "feature")):
        metrics = json.loads((project / "results/detection/models" / model / "train_metrics.json").read_text())
        assert metrics["kd"] == kind and metrics["teacher"].endswith("yolov5n/model.pt")
        history = pd.read_csv(project / "results/detection/models" / model / "history.csv")
        assert (history["train/dis_loss"] > 0).all()
    # the saved student is a plain detector (no teacher inside), the same size as the baseline
    base = json.loads((project / "results/detection/models/yolov5n/train_metrics.json").read_text())
    kd = json.loads((project / "results/detection/models/yolov5n-kd/train_metrics.json").read_text())
    assert kd["params"] == base["params"]
    assert kd["offline_settings"]["YOLO_OFFLINE"] == "1"


def test_pruned_model_has_fewer_channels_after_each_iteration(project):
    base = json.loads((project / "results/detection/models/yolov5n/train_metrics.json").read_text())
    pruned = json.loads((project / "results/detection/models/yolov5n-pruned/train_metrics.json").read_text())
    first, second = (sum(c) for c in pruned["pruned_bn_channels"])
    assert second < first and pruned["params"] < base["params"]
    assert pruned["pruned_from"].endswith("yolov5n/model.pt") and pruned["epochs"] == 2


def test_rerun_is_a_no_op(project):
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2",
                             "results/detection/summary.csv"], cwd=project, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Stop after epoch 1 of 2 (as a kill would), rerun: it resumes and finishes the same run."""
    from conftest import tiny_params
    from workflow.detection import kd
    from workflow.detection.pack import pack
    from workflow.detection.train import train

    params = tiny_params()
    det = params["detection"]
    det["data"].update(path=str(COCO128), train_subset=8, val_subset=4, calib_subset=2)
    det["train"].update(epochs=2, batch_size=4, num_threads=1)
    det["models"] = {"yolov5n": {"yaml": "yolov5n.yaml", "imgsz": 64}}
    pack(params, tmp_path / "data")

    class Interrupted(Exception):
        pass

    class StopAfterFirstEpoch(kd.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

            def stop(trainer):
                if trainer.epoch == 0:
                    raise Interrupted

            self.add_callback("on_fit_epoch_end", stop)

    monkeypatch.setattr(kd, "Trainer", StopAfterFirstEpoch)
    run_dir = tmp_path / "ckpt" / "yolov5n"
    with pytest.raises(Interrupted):
        train(params, "yolov5n", tmp_path / "data", tmp_path / "out", run_dir, None)
    assert (run_dir / "weights" / "last.pt").exists() and not (tmp_path / "out" / "train_metrics.json").exists()
    monkeypatch.undo()
    metrics = train(params, "yolov5n", tmp_path / "data", tmp_path / "out", run_dir, None)
    assert metrics["resumed_from"] == str(run_dir / "weights" / "last.pt")
    assert len(pd.read_csv(tmp_path / "out" / "history.csv")) == 2
