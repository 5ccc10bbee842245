"""ai85nascifarnet (seed 002): the layer list, the published parameter and MAC counts read from the exported
ONNX graph, the cifar_max78000 table's count rows within tolerance, and its QAT artifact through PT2E."""
import json
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import REPO, base_params, run_module, tiny_params, write_params
from workflow import export as export_stage
from workflow import qat as qat_stage
from workflow.config import validate
from workflow.errors import UserError
from workflow.models import build_model
from workflow.onnx_stats import onnx_stats
from workflow.papers import PAPERS_DIR, WITHIN, build_table

SPEC = {"arch": "ai85nascifarnet", "width_mult": 1.0, "input_format": "rgb"}


def exported_stats(num_classes, path):
    """params/MACs of the ONNX export of a model whose BN layers hold distinct statistics (as trained ones do;
    untrained BN folds into identical zero biases, which the exporter stores once)."""
    torch.manual_seed(0)
    model = build_model(SPEC, num_classes, 32)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"])
    return onnx_stats(path)


def test_layer_list_follows_the_seed():
    model = build_model(SPEC, 10, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (3, 64, 3), (64, 32, 1), (32, 64, 3), (64, 32, 3), (32, 64, 1), (64, 128, 3), (128, 128, 1), (128, 64, 3),
        (64, 128, 3), (128, 128, 1)]
    blocks = list(model.backbone.features)
    assert [isinstance(b[0], nn.MaxPool2d) for b in blocks] == [False, False, False, True, False, True, False, True,
                                                                 False, True]  # max-pool fused before the conv
    assert all(isinstance(b[-2], nn.BatchNorm2d) and isinstance(b[-1], nn.ReLU) for b in blocks)
    assert model.backbone.classifier.in_features == 2 * 2 * 128
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_onnx_counts_equal_the_published_figures(tmp_path):
    # E2 (CIFAR-10): 302,602 parameters (weights + biases), 36,180,992 MACs
    stats = exported_stats(10, tmp_path / "c10.onnx")
    assert (stats["params"], stats["macs"]) == (302_602, 36_180_992)
    # E3 (CIFAR-100 head): 36,227,072 MACs; 348.77 kB of 8-bit weights and biases
    stats = exported_stats(100, tmp_path / "c100.onnx")
    assert (stats["params"], stats["macs"]) == (348_772, 36_227_072)


def test_count_rows_of_the_paper_table_are_within_tolerance(tmp_path):
    stats = exported_stats(10, tmp_path / "m.onnx")
    summary = pd.DataFrame([{"model": "ai85nascifarnet", "arch": "ai85nascifarnet", "format": "onnx",
                             "precision": "fp32", "device": "local", "status": "ok", **stats}])
    tables = {"summary": summary, "pipeline": None, "pruning": None, "detection": None}
    _, _, frame = build_table("cifar_max78000", base_params(), tables, REPO / PAPERS_DIR)
    rows = {r.metric: r for r in frame.itertuples()}
    for metric, value in [("parameters", 302_602), ("MACs per image", 36_180_992),
                          ("weight + bias memory, 8-bit", 302.602), ("weight + bias memory, fp32 (WO/Q)", 1210.408)]:
        assert rows[metric].reproduced == pytest.approx(value) and rows[metric].verdict == WITHIN, metric


@pytest.mark.parametrize("change, fragment", [
    ({"width_mult": 0.5}, "models.n.width_mult': got 0.5, expected 1.0 (ai85nascifarnet has no width"),
    ({"input_format": "yuv420"}, "models.n.input_format': got 'yuv420', expected 'rgb'"),
])
def test_bad_specs_are_named(change, fragment):
    params = base_params()
    params["models"] = {"n": {**SPEC, **change}}
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        validate(params)


def test_other_image_sizes_are_refused_with_the_key(tmp_path, packed_dir, monkeypatch):
    params = tiny_params(models={"n": SPEC})
    monkeypatch.setattr("workflow.train.INPUT_SIZES", {"ai85nascifarnet": (64, 64)})
    from workflow import train as train_stage

    with pytest.raises(UserError, match="models.n.arch': ai85nascifarnet takes 64x64 images, the packed data is 32x32"):
        train_stage.train(params, "n", packed_dir, tmp_path / "m", tmp_path / "c")


@pytest.mark.slow
def test_trained_model_exports_with_the_published_counts_and_quantizes_with_qat(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(models={"ai85nascifarnet": SPEC}))
    run_module("train", "--params", params, "--model", "ai85nascifarnet", "--data", packed_dir,
               "--out", tmp_path / "m", "--checkpoints", tmp_path / "ckpt", check=True)
    metrics = json.loads((tmp_path / "m" / "train_metrics.json").read_text())
    assert metrics["arch"] == "ai85nascifarnet" and 0.0 <= metrics["top1"] <= 1.0
    fp32 = tmp_path / "onnx-fp32.onnx"
    export_stage.main(["--params", str(params), "--checkpoint", str(tmp_path / "m" / "model.pt"),
                       "--packed", str(packed_dir / "rgb" / "test.npy"), "--out", str(fp32)])
    stats = onnx_stats(fp32)
    assert (stats["params"], stats["macs"]) == (302_602, 36_180_992)

    out = tmp_path / "onnx-int8-qat.onnx"
    qat_stage.main(["--params", str(params), "--checkpoint", str(tmp_path / "m" / "model.pt"), "--reference",
                    str(fp32), "--data", str(packed_dir), "--steps", "3", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["status"] == "ok", report.get("reason")
    assert report["node_types"]["QuantizeLinear"] >= 10 and report["node_types"]["Conv"] == 10
    assert report["export_parity"]["max_abs_diff"] < 0.1 and report["parity"]["argmax_agreement"] >= 0.5
