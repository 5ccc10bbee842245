"""QAT (torchao PT2E): fine-tuning with fake quantization, exported as an ONNX QDQ graph that ONNX Runtime runs,
with int8 weights, close to the fp32 model; a failing conversion is a failed artifact, not a crash."""
import contextlib
import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

from conftest import tiny_params, write_params
from workflow import evaluate as evaluate_stage
from workflow import export as export_stage
from workflow import qat as qat_stage
from workflow.onnx_stats import onnx_stats

MAX_DROP = 0.05


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, trained, packed_dir):
    root = tmp_path_factory.mktemp("qat")
    params = write_params(root / "params.yaml", tiny_params())
    path = root / "onnx-fp32.onnx"
    export_stage.main(["--params", str(params), "--checkpoint", str(trained["mobilenetv2-rgb"] / "model.pt"),
                       "--packed", str(packed_dir / "rgb" / "test.npy"), "--out", str(path)])
    return params, path


def run_qat(params, checkpoint, reference, packed_dir, out):
    qat_stage.main(["--params", str(params), "--checkpoint", str(checkpoint), "--reference", str(reference),
                    "--data", str(packed_dir), "--epochs", "1", "--steps", "3", "--lr", "0.001", "--out", str(out)])
    return json.loads(out.with_suffix(".json").read_text())


def top1(params, artifact, packed_dir):
    out = artifact.with_name(artifact.stem + ".eval.json")
    evaluate_stage.main(["--params", str(params), "--artifact", str(artifact),
                         "--packed", str(packed_dir / "rgb" / "test.npy"),
                         "--manifest", str(packed_dir / "rgb" / "manifest.json"), "--out", str(out)])
    return json.loads(out.read_text())


def test_qat_artifact_is_qdq_int8_and_close_to_fp32(fp32, trained, packed_dir, tmp_path):
    params, reference = fp32
    out = tmp_path / "onnx-int8-qat.onnx"
    report = run_qat(params, trained["mobilenetv2-rgb"] / "model.pt", reference, packed_dir, out)
    assert report["status"] == "ok" and report["method"] == "qat" and report["train_steps"] == 3
    ops = report["node_types"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Conv"] > 0
    graph = onnx.load(str(out)).graph
    weights = {t.name: t for t in graph.initializer}
    int8 = [weights[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert int8 and all(t.data_type == onnx.TensorProto.INT8 for t in int8)  # weights stored as int8
    scales = [numpy_helper.to_array(weights[n.input[1]]) for n in graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert max(np.size(s) for s in scales) > 1  # per-channel
    assert report["size_ratio"] < 0.5
    assert onnx_stats(out)["params"] == onnx_stats(reference)["params"]  # scales and zero points are not params
    # ONNX Runtime's integer kernels round differently from PyTorch's float emulation by a step or so
    assert report["export_parity"]["max_abs_diff"] < 0.1
    assert report["parity"]["argmax_agreement"] >= 0.5
    fp32_eval, qat_eval = top1(params, reference, packed_dir), top1(params, out, packed_dir)
    assert qat_eval["runtime"] == "onnxruntime"
    assert abs(qat_eval["top1"] - fp32_eval["top1"]) <= MAX_DROP, (fp32_eval["top1"], qat_eval["top1"])


def test_a_failing_conversion_is_recorded_not_raised(fp32, trained, packed_dir, tmp_path, monkeypatch):
    params, reference = fp32

    def broken_prepare(*args, **kwargs):
        raise RuntimeError("tracer crashed\ndetails")

    monkeypatch.setattr(qat_stage, "prepare", broken_prepare)
    out = tmp_path / "onnx-int8-qat.onnx"
    report = run_qat(params, trained["mobilenetv2-rgb"] / "model.pt", reference, packed_dir, out)
    assert report["status"] == "failed" and report["reason"] == "RuntimeError: tracer crashed"
    assert out.exists() and out.stat().st_size == 0


def test_calibration_split_smaller_than_configured_is_an_error(fp32, trained, packed_dir, tmp_path):
    params, reference = fp32
    p = tiny_params()
    p["data"]["calib_subset"] = 64  # the packed split holds 32
    path = write_params(tmp_path / "params.yaml", p)
    with pytest.raises(SystemExit) as exit_info:
        run_qat(path, trained["mobilenetv2-rgb"] / "model.pt", reference, packed_dir, tmp_path / "q.onnx")
    assert exit_info.value.code == 2 and not (tmp_path / "q.onnx").exists()


def test_yuv_model_two_inputs_and_concatenated_stem(trained, packed_dir, tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    checkpoint = trained["mobilenetv2-yuv420"] / "model.pt"
    reference = tmp_path / "onnx-fp32.onnx"
    export_stage.main(["--params", str(params), "--checkpoint", str(checkpoint),
                       "--packed", str(packed_dir / "yuv420" / "test.npy"), "--out", str(reference)])
    out = tmp_path / "onnx-int8-qat.onnx"
    # The fixture's one-epoch YUV model gives every image the same class by a hair (near-tied logits): any move
    # of its BN statistics flips that class. BN frozen after the first step keeps the function the checks compare.
    qat_stage.main(["--params", str(params), "--checkpoint", str(checkpoint), "--reference", str(reference),
                    "--data", str(packed_dir), "--steps", "3", "--lr", "0.00001", "--freeze-bn-after", "1",
                    "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["status"] == "ok" and report["inputs"] == ["y", "uv"], report.get("reason")
    assert report["freeze_bn_after"] == 1
    assert [i.name for i in onnx.load(str(out)).graph.input] == ["y", "uv"]
    assert report["node_types"]["Concat"] == 1 and report["node_types"]["DequantizeLinear"] > 50
    assert report["export_parity"]["max_abs_diff"] < 0.1 and report["parity"]["argmax_agreement"] >= 0.5


@pytest.mark.slow
def test_skipping_the_conv_kinds_a_graph_lacks_converts_the_same_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def converted(skip):
        torch.manual_seed(0)
        graph = torch.export.export(copy.deepcopy(model).train(), (x,)).module()
        prepared = prepare_qat_pt2e(graph, qat_stage.quantizer(per_channel=True))
        prepared(x)  # the fake quantizers observe a batch
        with qat_stage.folding_only_present_convs() if skip else contextlib.nullcontext():
            return convert_pt2e(prepared)

    fast, full = converted(skip=True), converted(skip=False)
    assert not any("batch_norm" in str(n.target) for n in fast.graph.nodes)  # conv2d's BN was still folded
    assert fast.code == full.code and torch.equal(fast(x), full(x))
