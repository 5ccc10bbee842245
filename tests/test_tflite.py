"""TFLite stage: every precision for the RGB and the two-input YUV model, parity with ONNX, accuracy by LiteRT.

The conversions import TensorFlow (onnx2tf) and take 5-20 s each, so they are `slow`; the
argument and calibration-size errors stop before any converter is imported and stay fast.
"""
import json

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from conftest import assert_one_line_error, run_module, tiny_params, write_params
from workflow.onnx_stats import onnx_stats

CALIB = 32       # the calibration split of tiny_params() has exactly 32 images
MAX_DROP = 0.05  # top-1 of an int8 model within 5 points of the fp32 ONNX model on the 256 test images
MODELS = ["mobilenetv2-rgb", "mobilenetv2-yuv420"]


def fmt_of(model):
    return model.rsplit("-", 1)[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, packed_dir):
    """{model: (params.yaml, fp32 .onnx, its top-1 by ONNX Runtime)} for both input formats."""
    root = tmp_path_factory.mktemp("tflite")
    params = write_params(root / "params.yaml", tiny_params())
    out = {}
    for model, folder in trained.items():
        path = root / model / "onnx-fp32.onnx"
        run_module("export", "--params", params, "--checkpoint", folder / "model.pt",
                   "--packed", packed_dir / fmt_of(model) / "test.npy", "--out", path, check=True)
        out[model] = (params, path, evaluate(params, path, packed_dir, fmt_of(model))["top1"])
    return out


def evaluate(params, artifact, packed_dir, fmt):
    out = artifact.with_name(artifact.stem + ".eval.json")
    run_module("evaluate", "--params", params, "--artifact", artifact, "--packed", packed_dir / fmt / "test.npy",
               "--manifest", packed_dir / fmt / "manifest.json", "--out", out, check=True)
    return json.loads(out.read_text())


def convert(params, source, packed_dir, fmt, out, *options, check=True):
    result = run_module("tflite", "--params", params, "--model", source, *options,
                        "--calib", packed_dir / fmt / "calib.npy", "--manifest", packed_dir / fmt / "manifest.json",
                        "--out", out, check=check)
    return result, (json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None)


# (precision options, max |tflite - onnx| logit on the calibration images, input dtype)
CASES = {
    "fp32": (["--precision", "fp32"], 1e-4, "float32"),
    "fp16": (["--precision", "fp16"], 5e-2, "float32"),
    "dynamic_int8": (["--precision", "dynamic_int8"], None, "float32"),
    "int8": (["--precision", "int8", "--calib-size", str(CALIB)], None, "int8"),
    "int8-uint8-io": (["--precision", "int8", "--io-type", "uint8", "--calib-size", str(CALIB)], None, "uint8"),
}
# every precision for both models; full-integer with int8 I/O for RGB and uint8 I/O for YUV
# (each conversion costs a TensorFlow import, so not every I/O type for both)
COMBINATIONS = [(model, case) for model in MODELS for case in ("fp32", "fp16", "dynamic_int8")] + [
    ("mobilenetv2-rgb", "int8"), ("mobilenetv2-yuv420", "int8-uint8-io")]


@pytest.mark.slow
@pytest.mark.parametrize("model, case", COMBINATIONS)
def test_conversion_parity_and_accuracy(exported, packed_dir, model, case, tmp_path):
    params, source, onnx_top1 = exported[model]
    options, max_diff, input_dtype = CASES[case]
    out = tmp_path / f"tflite-{case}.tflite"
    source_bytes = source.read_bytes()
    _, report = convert(params, source, packed_dir, fmt_of(model), out, *options)
    assert source.read_bytes() == source_bytes  # onnx2tf rewrites its input: it must get a copy
    assert report["status"] == "ok" and report["format"] == "tflite" and report["converter"] == "onnx2tf"
    assert report["sha256"] and report["size_bytes"] == out.stat().st_size
    # inputs keep their ONNX names, become NHWC, and take the precision's type
    fmt = fmt_of(model)
    shapes = {"rgb": {"image": [-1, 32, 32, 3]}, "yuv420": {"y": [-1, 32, 32, 1], "uv": [-1, 16, 16, 2]}}[fmt]
    names = {t["name"].removeprefix("serving_default_").split(":")[0]: t for t in report["inputs"]}
    assert {n: t["shape"] for n, t in names.items()} == shapes
    assert {t["dtype"] for t in report["inputs"]} == {input_dtype}
    if input_dtype != "float32":
        assert {t["dtype"] for t in report["outputs"]} == {input_dtype}
        assert all(t["scale"] > 0 for t in report["inputs"] + report["outputs"])
    parity = report["parity"]
    assert parity["samples"] == CALIB and parity["argmax_agreement"] >= 0.9
    if max_diff is not None:
        assert parity["max_abs_diff"] <= max_diff, parity
    if case.startswith(("int8", "dynamic")):
        assert report["size_ratio"] < 0.5 and "CONV_2D" in report["op_types"]
    # counted from the .tflite file by the rule of workflow/onnx_stats.py: the ONNX model's count, any precision
    assert report["params"] == onnx_stats(source)["params"]
    # accuracy measured from the .tflite file by LiteRT, close to the fp32 ONNX model's
    result = evaluate(params, out, packed_dir, fmt)
    assert result["runtime"] == "litert" and result["test_images"] == 256
    print(f"{model} {case}: onnx top-1 {onnx_top1:.4f}, tflite top-1 {result['top1']:.4f}, "
          f"max diff {parity['max_abs_diff']:.3g}")
    tolerance = 0.01 if case in ("fp32", "fp16") else MAX_DROP
    assert abs(result["top1"] - onnx_top1) <= tolerance


@pytest.mark.slow
def test_converter_failure_is_a_failed_row_per_delegate(exported, trained, packed_dir, tmp_path):
    """A valid ONNX model with an operator onnx2tf has no converter for: status failed with onnx2tf's reason,
    carried through evaluate and benchmark into one summary row per XNNPACK setting; ONNX goes on."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    graph = helper.make_graph([helper.make_node("ColorTwist", ["image"], ["logits"], domain="com.example")],
                              "custom", [image], [logits])
    source = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]), source)
    model = "mobilenetv2-rgb"
    params = tiny_params(targets=["onnx", "tflite"])
    params["models"] = {model: {**params["models"][model], "artifacts": ["onnx-fp32", "tflite-fp32"]}}
    params["benchmark"]["pipeline"]["enabled"] = False  # it needs a YUV model too
    params["benchmark"]["litert_xnnpack"] = [True, False]
    params_path = write_params(tmp_path / "params.yaml", params)
    results = tmp_path / "results"
    (results / "models").mkdir(parents=True)
    (results / "models" / model).symlink_to(trained[model])
    artifacts = results / "artifacts" / model
    artifacts.mkdir(parents=True)
    for suffix in (".onnx", ".json"):
        (artifacts / f"onnx-fp32{suffix}").write_bytes(exported[model][1].with_suffix(suffix).read_bytes())
    out = artifacts / "tflite-fp32.tflite"
    result, report = convert(params_path, source, packed_dir, "rgb", out, "--precision", "fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["status"] == "failed" and "ColorTwist" in report["reason"], report
    assert out.exists() and out.stat().st_size == 0
    assert "recorded as status failed" in result.stderr

    test, manifest = packed_dir / "rgb" / "test.npy", packed_dir / "rgb" / "manifest.json"
    for name in ("onnx-fp32.onnx", "tflite-fp32.tflite"):
        stem = name.split(".")[0]
        run_module("evaluate", "--params", params_path, "--artifact", artifacts / name, "--packed", test,
                   "--manifest", manifest, "--out", results / "eval" / model / f"{stem}.json", check=True)
        run_module("benchmark", "--params", params_path, "--device", "local", "--model-name", model,
                   "--artifact", artifacts / name, "--packed", test, "--manifest", manifest,
                   "--out", results / "bench" / "local" / model / f"{stem}.json", check=True)
    run_module("aggregate", "--params", params_path, "--results", results, "--out", results / "summary.csv",
               check=True)
    table = pd.read_csv(results / "summary.csv")
    failed = table[table["artifact"] == "tflite-fp32"]
    assert sorted(failed["delegate"]) == ["none", "xnnpack"] and (failed["status"] == "failed").all()
    assert (failed["reason"] == report["reason"]).all() and failed["top1"].isna().all()
    assert (failed["runtime"] == "litert").all() and (failed["format"] == "tflite").all()
    onnx_row = table[table["artifact"] == "onnx-fp32"].iloc[0]
    assert onnx_row["status"] == "ok" and onnx_row["top1"] > 0


@pytest.mark.slow
def test_litert_torch_converter_keeps_nchw(exported, trained, packed_dir, tmp_path):
    params, source, onnx_top1 = exported["mobilenetv2-yuv420"]
    out = tmp_path / "tflite-fp32.tflite"
    _, report = convert(params, source, packed_dir, "yuv420", out, "--precision", "fp32", "--converter",
                        "litert_torch", "--checkpoint", trained["mobilenetv2-yuv420"] / "model.pt")
    assert report["status"] == "ok" and report["layout"] == "NCHW"
    assert sorted(t["shape"] for t in report["inputs"]) == [[1, 1, 32, 32], [1, 2, 16, 16]]
    assert report["parity"]["max_abs_diff"] < 1e-4
    assert abs(evaluate(params, out, packed_dir, "yuv420")["top1"] - onnx_top1) <= 0.01


def test_calibration_set_smaller_than_calib_size_is_an_error(packed_dir, tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    source, out = tmp_path / "onnx-fp32.onnx", tmp_path / "t.tflite"
    source.write_bytes(b"")  # never read: the calibration set is checked before any conversion
    calib = packed_dir / "rgb" / "calib.npy"
    result = run_module("tflite", "--params", params, "--model", source, "--precision", "int8",
                        "--calib-size", CALIB + 1, "--calib", calib, "--manifest", packed_dir / "rgb" / "manifest.json",
                        "--out", out)
    assert_one_line_error(result, str(calib), f"has {CALIB} images", f"--calib-size {CALIB + 1}")
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("options, fragments", [
    (["--precision", "fp16", "--io-type", "uint8"], ["--io-type", "only for --precision int8"]),
    (["--precision", "int8", "--converter", "litert_torch"], ["--converter litert_torch makes fp32"]),
])
def test_options_that_do_not_apply_are_errors(packed_dir, tmp_path, options, fragments):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    source = tmp_path / "onnx-fp32.onnx"
    source.write_bytes(b"")
    result = run_module("tflite", "--params", params, "--model", source, *options,
                        "--calib", packed_dir / "rgb" / "calib.npy", "--manifest", packed_dir / "rgb" / "manifest.json",
                        "--out", tmp_path / "t.tflite")
    assert_one_line_error(result, *fragments)


def test_nchw_data_feeds_nhwc_and_nchw_models():
    from workflow.litert import to_layout

    x = np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4)
    assert to_layout(x, [-1, 2, 4, 4]) is x
    np.testing.assert_array_equal(to_layout(x, [-1, 4, 4, 2]), x.transpose(0, 2, 3, 1))
    assert to_layout(x, [-1, 4, 4, 3]) is None
