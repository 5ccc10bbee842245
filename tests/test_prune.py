"""Network slimming: channels really go (per pass, by about the ratio), the pruned model rebuilds
from its checkpoint, runs, and exports to ONNX with fewer parameters and MACs."""
import json

import pytest
import torch

from conftest import tiny_params, write_params
from workflow import export as export_stage
from workflow import prune as prune_stage
from workflow.models import count_params, load_checkpoint
from workflow.onnx_stats import onnx_stats

RATIO = 0.15


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, packed_dir, trained):
    root = tmp_path_factory.mktemp("prune")
    params = tiny_params()
    params["models"]["pruned"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                  "prune": {"from": "mobilenetv2-yuv420", "ratio": RATIO, "iterations": 2,
                                            "sparse_epochs": 1, "finetune_epochs": 1, "lr": 0.005}}
    path = write_params(root / "params.yaml", params)
    prune_stage.main(["--params", str(path), "--model", "pruned", "--data", str(packed_dir),
                      "--source", str(trained["mobilenetv2-yuv420"] / "model.pt"), "--out", str(root / "pruned")])
    return path, root / "pruned"


def test_each_pass_removes_about_the_ratio_of_channels(pruned):
    _, out = pruned
    report = json.loads((out / "prune_report.json").read_text())
    assert [it["iteration"] for it in report["iterations"]] == [0, 1, 2]
    totals = [sum(layer["channels"][i] for layer in report["channels"]) for i in range(3)]
    for before, after in zip(totals, totals[1:]):
        assert after / before == pytest.approx(1 - RATIO, abs=0.05), totals
    params = [it["params"] for it in report["iterations"]]
    macs = [it["macs"] for it in report["iterations"]]
    sizes = [it["size_bytes"] for it in report["iterations"]]
    assert params[0] > params[1] > params[2] and macs[0] > macs[1] > macs[2] and sizes[0] > sizes[1] > sizes[2]
    assert params[2] < (1 - RATIO) ** 2 * params[0]  # channels go from both sides of a layer
    stem = next(layer for layer in report["channels"] if layer["layer"] == "stem.y_branch.0")
    assert len(stem["channels"]) == 3 and stem["channels"][0] == 8
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert (metrics["prune_ratio"], metrics["prune_iteration"], metrics["epochs"]) == (RATIO, 2, 3)
    assert metrics["params"] == params[2] and metrics["total_epochs"] == 4
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3


def test_pruned_checkpoint_rebuilds_runs_and_exports(pruned, packed_dir, trained, tmp_path):
    params, out = pruned
    model, ckpt = load_checkpoint(out / "model.pt")
    # one parameter count in every file (workflow/onnx_stats.py's rule): the model, its metrics, its report
    counted = count_params(model)
    report = json.loads((out / "prune_report.json").read_text())
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert counted == metrics["params"] == report["iterations"][-1]["params"]
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32), torch.zeros(2, 2, 16, 16)).shape == (2, 10)
    onnx_path = tmp_path / "onnx-fp32.onnx"
    export_stage.main(["--params", str(params), "--checkpoint", str(out / "model.pt"),
                       "--packed", str(packed_dir / "yuv420" / "test.npy"), "--out", str(onnx_path)])
    report = json.loads(onnx_path.with_suffix(".json").read_text())
    assert report["parity"]["max_abs_diff"] <= 1e-3 and onnx_stats(onnx_path)["params"] == counted
    unpruned = tmp_path / "unpruned.onnx"
    export_stage.main(["--params", str(params), "--checkpoint", str(trained["mobilenetv2-yuv420"] / "model.pt"),
                       "--packed", str(packed_dir / "yuv420" / "test.npy"), "--out", str(unpruned)])
    small, full = onnx_stats(onnx_path), onnx_stats(unpruned)
    assert small["params"] < 0.8 * full["params"] and small["macs"] < 0.8 * full["macs"]


def test_prune_stage_names_a_model_without_prune_section(pruned, packed_dir, trained, tmp_path, capsys):
    params, _ = pruned
    with pytest.raises(SystemExit) as exit_info:
        prune_stage.main(["--params", str(params), "--model", "mobilenetv2-rgb", "--data", str(packed_dir),
                          "--source", str(trained["mobilenetv2-rgb"] / "model.pt"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no model named 'mobilenetv2-rgb' with a prune section" in error
    assert "pruned)" in error and not (tmp_path / "x").exists()
