"""Quantize stage: ONNX Runtime dynamic and static post-training quantization of both input formats.

The stages run in-process through their CLI entry points (``main(argv)``) so that torch,
onnxruntime and sympy are imported once for the module; the error cases run as
subprocesses to check the exit status and the one-line message a user sees.
"""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import assert_one_line_error, run_module, tiny_params, write_params
from workflow import evaluate as evaluate_stage
from workflow import export as export_stage
from workflow import quantize as quantize_stage
from workflow.onnx_stats import count_params

CALIB = 32        # the calibration split of tiny_params() has exactly 32 images
MAX_DROP = 0.05   # int8 top-1 within 5 points of fp32 on the 256 test images


def fmt_of(model):
    return model.rsplit("-", 1)[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, packed_dir):
    """{model: (params.yaml, fp32 .onnx, fp32 top-1)} for both input formats."""
    root = tmp_path_factory.mktemp("quantize")
    params = write_params(root / "params.yaml", tiny_params())
    out = {}
    for model, folder in trained.items():
        path = root / model / "onnx-fp32.onnx"
        export_stage.main(["--params", str(params), "--checkpoint", str(folder / "model.pt"),
                           "--packed", str(packed_dir / fmt_of(model) / "test.npy"), "--out", str(path)])
        out[model] = (params, path, evaluate(params, path, packed_dir, fmt_of(model)))
    return out


def evaluate(params, artifact, packed_dir, fmt):
    out = artifact.with_name(artifact.stem + ".eval.json")
    evaluate_stage.main(["--params", str(params), "--artifact", str(artifact),
                         "--packed", str(packed_dir / fmt / "test.npy"),
                         "--manifest", str(packed_dir / fmt / "manifest.json"), "--out", str(out)])
    return json.loads(out.read_text())["top1"]


def quantize(params, model_path, packed_dir, fmt, out, *options):
    quantize_stage.main(["--params", str(params), "--model", str(model_path), *map(str, options),
                         "--calib", str(packed_dir / fmt / "calib.npy"),
                         "--manifest", str(packed_dir / fmt / "manifest.json"), "--out", str(out)])
    return json.loads(out.with_suffix(".json").read_text())


def check_quantized(report, out, source, fp32_top1, int8_top1):
    assert out.stat().st_size < 0.5 * source.stat().st_size
    assert report["size_ratio"] == pytest.approx(out.stat().st_size / source.stat().st_size)
    assert report["calib_size"] == CALIB and report["parity"]["samples"] == CALIB
    assert report["parity"]["argmax_agreement"] >= 0.5
    assert report["quantize_seconds"] > 0 and report["provenance"]["params_hash"]
    assert len(report["sha256"]) == 64 and len(report["source_model_sha256"]) == 64
    assert abs(int8_top1 - fp32_top1) <= MAX_DROP, (fp32_top1, int8_top1)
    onnx.checker.check_model(str(out))
    # quantization scales and zero points are not parameters: the int8 file counts what fp32 counts
    assert count_params(onnx.load(str(out)).graph) == count_params(onnx.load(str(source)).graph)


@pytest.mark.parametrize("model", ["mobilenetv2-rgb", "mobilenetv2-yuv420"])
def test_dynamic_quantization(exported, packed_dir, model, tmp_path):
    params, source, fp32_top1 = exported[model]
    out = tmp_path / "onnx-int8-dynamic.onnx"
    report = quantize(params, source, packed_dir, fmt_of(model), out, "--method", "dynamic",
                      "--calib-size", CALIB)
    assert (report["method"], report["weight_type"], report["per_channel"]) == ("dynamic", "quint8", True)
    ops = report["node_types"]
    assert ops.get("ConvInteger", 0) > 0 and ops.get("DynamicQuantizeLinear", 0) > 0
    assert "Conv" not in ops and "QuantizeLinear" not in ops
    top1 = evaluate(params, out, packed_dir, fmt_of(model))
    print(f"{model} dynamic: fp32 top-1 {fp32_top1:.4f}, int8 top-1 {top1:.4f}")
    check_quantized(report, out, source, fp32_top1, top1)


@pytest.mark.parametrize("model", ["mobilenetv2-rgb", "mobilenetv2-yuv420"])
@pytest.mark.parametrize("quant_format, calibration", [("qdq", "minmax"), ("qoperator", "entropy")])
def test_static_quantization(exported, packed_dir, model, quant_format, calibration, tmp_path):
    params, source, fp32_top1 = exported[model]
    out = tmp_path / f"onnx-int8-{quant_format}-{calibration}.onnx"
    report = quantize(params, source, packed_dir, fmt_of(model), out, "--method", "static",
                      "--format", quant_format, "--calibration", calibration, "--per-channel",
                      "--calib-size", CALIB, "--calib-batch", 16)
    assert (report["quant_format"], report["calibration"]) == (quant_format, calibration)
    assert (report["weight_type"], report["activation_type"]) == ("qint8", "quint8")
    ops = report["node_types"]
    graph = onnx.load(str(out)).graph
    if quant_format == "qdq":
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and "QLinearConv" not in ops
        # per-channel: the Conv weights' DequantizeLinear scales have one value per output channel
        weights = {t.name: t for t in graph.initializer}
        scales = [numpy_helper.to_array(weights[n.input[1]]) for n in graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0] in weights
                  and weights[n.input[0]].data_type == onnx.TensorProto.INT8]
        assert scales and max(np.size(s) for s in scales) > 1
    else:
        assert ops["QLinearConv"] > 0 and "Conv" not in ops
    top1 = evaluate(params, out, packed_dir, fmt_of(model))
    print(f"{model} static {quant_format} {calibration}: fp32 top-1 {fp32_top1:.4f}, int8 top-1 {top1:.4f}")
    check_quantized(report, out, source, fp32_top1, top1)


def test_calibration_set_smaller_than_calib_size_is_an_error(exported, packed_dir, tmp_path):
    params, source, _ = exported["mobilenetv2-rgb"]
    calib, out = packed_dir / "rgb" / "calib.npy", tmp_path / "q.onnx"
    result = run_module("quantize", "--params", params, "--model", source, "--method", "static",
                        "--calib", calib, "--manifest", packed_dir / "rgb" / "manifest.json",
                        "--calib-size", CALIB + 1, "--out", out)
    assert_one_line_error(result, str(calib), f"has {CALIB} images", f"--calib-size {CALIB + 1}")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_corrupt_model_is_named(exported, packed_dir, tmp_path):
    params, _, _ = exported["mobilenetv2-yuv420"]
    bad, out = tmp_path / "onnx-fp32.onnx", tmp_path / "q.onnx"
    bad.write_bytes(b"not an onnx model")
    result = run_module("quantize", "--params", params, "--model", bad, "--method", "dynamic",
                        "--calib", packed_dir / "yuv420" / "calib.npy",
                        "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", out)
    assert_one_line_error(result, str(bad), "not a valid ONNX model")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_the_dag_command_reads_the_artifact_entry(exported, packed_dir, tmp_path):
    """What the DAG runs: `--artifact NAME`, the settings of that params.yaml entry (calibrating on all of
    data.calib_subset), no values on the command line."""
    params, source, _ = exported["mobilenetv2-rgb"]
    report = quantize(params, source, packed_dir, "rgb", tmp_path / "static.onnx", "--artifact", "onnx-int8-static")
    assert (report["method"], report["quant_format"], report["calibration"]) == ("static", "qdq", "minmax")
    assert report["calib_size"] == CALIB and report["per_channel"] is True
