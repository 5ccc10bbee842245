"""The detection track's DVC stages and Snakemake jobs agree; it stays out of the default target unless enabled."""
from conftest import tiny_params
from test_dag_parity import snakemake_jobs, workdir_with
from workflow.dag import stages

DETECTION_TARGET = "results/detection/summary.csv"


def test_detection_stages_match_snakemake_jobs(tmp_path):
    params = tiny_params()
    params["detection"]["enabled"] = True
    jobs = snakemake_jobs(workdir_with(tmp_path, params), target=DETECTION_TARGET)
    det_stages = [s for s in stages(params) if s.name.startswith("det-")]
    assert len(jobs) == len(det_stages)
    for stage in det_stages:
        outputs = frozenset(stage.outs + stage.metrics + stage.plots)
        assert outputs in jobs, f"{stage.name}: no Snakemake job with outputs {sorted(outputs)}"
        rule, inputs, command = jobs[outputs]
        assert command == stage.cmd, (stage.name, rule)
        assert set(stage.deps) <= inputs, (stage.name, set(stage.deps) - inputs)
    # the KD student waits for its teacher; int8 ONNX for the fp32 export
    kd = next(s for s in det_stages if s.name == "det-train-yolov5n-kd-output")
    assert "results/detection/models/yolov5s/model.pt" in kd.deps and "--teacher" in kd.cmd
    static = next(s for s in det_stages if s.name == "det-export-yolov5n-onnx-int8-static")
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
