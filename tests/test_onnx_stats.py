"""workflow/onnx_stats.py: parameters, MACs and size read from an ONNX graph; one parameter count for a
model in PyTorch, fp32 ONNX and every int8 ONNX form."""
import warnings

import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workflow.errors import UserError
from workflow.models import build_model
from workflow.models import count_params as torch_count_params
from workflow.onnx_stats import count_params, onnx_stats


def export(model, example, path, input_names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(input_names), output_names=["logits"],
                          dynamic_axes={n: {0: "batch"} for n in [*input_names, "logits"]})
    return path


def torch_macs(model, example):
    with FlopCounterMode(display=False) as counter:
        model.eval()(*example)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("size", [32, 96])
def test_macs_match_torch_flop_counter_on_mobilenet_v2(tmp_path, size):
    model = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10)
    example = (torch.zeros(1, 3, size, size),)
    stats = onnx_stats(export(model, example, tmp_path / "m.onnx", ["image"]))
    assert stats["macs"] == pytest.approx(torch_macs(model, example), rel=0.02)


@pytest.mark.parametrize("input_format", ["rgb", "yuv420"])
def test_macs_match_torch_on_the_project_models(tmp_path, input_format):
    model = build_model({"arch": "mobilenetv2", "width_mult": 0.5, "input_format": input_format}, 10, 32)
    example = ((torch.zeros(1, 3, 32, 32),) if input_format == "rgb"
               else (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)))
    stats = onnx_stats(export(model, example, tmp_path / "m.onnx", model.input_names))
    assert stats["macs"] == pytest.approx(torch_macs(model, example), rel=0.02)


class Small(nn.Module):
    """A grouped conv, a depthwise conv, a Linear (Gemm) and a MatMul with known counts."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)  # out 8x8x8
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)  # out 8x4x4
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.proj = nn.Parameter(torch.ones(5, 3))

    def forward(self, x):
        x = self.depthwise(self.grouped(x))
        return self.fc(x.flatten(1)) @ self.proj


def test_counts_of_grouped_depthwise_gemm_and_matmul(tmp_path):
    path = export(Small(), (torch.zeros(2, 4, 8, 8),), tmp_path / "small.onnx", ["image"])
    stats = onnx_stats(path)
    macs = (8 * 8 * 8) * (2 * 3 * 3) + (8 * 4 * 4) * (1 * 3 * 3) + 128 * 5 + 5 * 3  # at batch 1
    params = (8 * 2 * 9 + 8) + 8 * 9 + (128 * 5 + 5) + 5 * 3
    assert stats == {"macs": macs, "params": params, "size_bytes": path.stat().st_size}


def test_shape_constants_and_scalars_are_not_params(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 6], [0.5] * 24)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 6])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
         helper.make_node("Transpose", ["w"], ["w_t"]),
         helper.make_node("MatMul", ["scaled", "w_t"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, shape, scale])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert onnx_stats(path)["params"] == 24
    assert onnx_stats(path)["macs"] == 6 * 4


def test_dynamic_spatial_dims_are_a_user_error(tmp_path):
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [1.0] * 12)])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UserError, match="shape of 'y' is unknown"):
        onnx_stats(path)


def test_missing_and_corrupt_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        onnx_stats(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff not a protobuf")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        onnx_stats(bad)


# ----------------------------------------------------------------------------- one parameter count per model
def quantized_copies(path, tmp_path):
    """ONNX Runtime's dynamic (ConvInteger) and static QDQ / QOperator quantizations of ``path``, after its
    pre-processing, as the quantize stage makes them."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"image": rng.uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    pre = str(tmp_path / "pre.onnx")
    quant_pre_process(str(path), pre)
    out = {"dynamic": tmp_path / "dynamic.onnx", "qdq": tmp_path / "qdq.onnx", "qoperator": tmp_path / "qop.onnx"}
    quantize_dynamic(pre, str(out["dynamic"]), per_channel=True)
    quantize_static(pre, str(out["qdq"]), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    quantize_static(pre, str(out["qoperator"]), Reader(), quant_format=QuantFormat.QOperator, per_channel=True)
    return out


def test_params_of_a_quantized_onnx_file_equal_the_fp32_files(tmp_path):
    """Quantization scales and zero points are not parameters: every int8 form counts what fp32 counts."""
    model = build_model({"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"}, 10, 32)
    fp32 = export(model, (torch.zeros(1, 3, 32, 32),), tmp_path / "fp32.onnx", model.input_names)
    expected = count_params(onnx.load(fp32).graph)
    reference = onnx_stats(fp32)
    assert reference["params"] == expected
    for name, path in quantized_copies(fp32, tmp_path).items():
        assert count_params(onnx.load(path).graph) == expected, name
        stats = onnx_stats(path)  # QOperator files too: their contrib ops (QLinearAdd ...) have no ONNX shapes
        assert (stats["params"], stats["macs"]) == (expected, reference["macs"]), name


@pytest.mark.parametrize("spec", [{"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"},
                                  {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420"},
                                  {"arch": "resnet18", "width_mult": 1.0, "input_format": "rgb"}])
def test_pytorch_and_onnx_count_the_same_parameters(tmp_path, spec):
    """One rule: BatchNorm folded (one shift per channel), normalisation constants and statistics left out;
    the same count whether the exporter folds BatchNorm into the conv or keeps it (Hailo-friendly export)."""
    model = build_model(spec, 10, 32).eval()
    example = ((torch.zeros(1, 3, 32, 32),) if spec["input_format"] == "rgb"
               else (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)))
    folded = onnx_stats(export(model, example, tmp_path / "folded.onnx", model.input_names))["params"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(tmp_path / "bn.onnx"), dynamo=False, opset_version=17,
                          input_names=list(model.input_names), training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False)
    graph = onnx.load(tmp_path / "bn.onnx").graph
    assert any(node.op_type == "BatchNormalization" for node in graph.node)
    assert count_params(graph) == folded == torch_count_params(model)
    assert folded < sum(p.numel() for p in model.parameters())  # BatchNorm's scale is not counted twice
