"""The detection track's stages (their parity with Snakemake: tests/test_dag_parity.py); it stays out of
the default target unless enabled."""
from conftest import tiny_params
from workflow.dag import stages


def test_students_wait_for_their_teacher_and_int8_for_fp32():
    params = tiny_params()
    params["detection"]["enabled"] = True
    det_stages = {s.name: s for s in stages(params) if s.name.startswith("det-")}
    kd = det_stages["det-train-yolov5n-kd-output"]
    assert "results/detection/models/yolov5s/model.pt" in kd.deps and "--teacher" in kd.cmd
    static = det_stages["det-export-yolov5n-onnx-int8-static"]
    assert "results/detection/artifacts/yolov5n/onnx-fp32.onnx" in static.deps


def test_detection_is_off_the_default_target_unless_enabled():
    params = tiny_params()
    assert not params["detection"]["enabled"]
    assert not [s for s in stages(params) if s.name.startswith("det-")]
    params["detection"]["enabled"] = True
    assert any(s.name == "det-aggregate" for s in stages(params))


def test_pruning_source_must_be_a_detection_model(tmp_path):
    from conftest import assert_one_line_error, run_module, write_params

    params = tiny_params()
    params["detection"]["models"]["pruned"] = {"yaml": "yolov5n.yaml", "imgsz": 320,
                                               "prune": {"source": "nosuch", "ratio": 0.15, "iterations": 2,
                                                         "finetune_epochs": 1}}
    result = run_module("dag", "--params", write_params(tmp_path / "params.yaml", params), "--out",
                        tmp_path / "dvc.yaml")
    assert_one_line_error(result, "detection.models.pruned.prune.source", "nosuch")
