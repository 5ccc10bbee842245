"""The runner's LiteRT runtime on real .tflite files converted by onnx2tf from a tiny torch model."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from test_runner import RUNNER, load_runner

ONNX2TF = Path(sys.executable).parent / "onnx2tf"


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    """fp32 and full-integer (int8 in/out) .tflite of one small conv net, plus its torch reference."""
    root = tmp_path_factory.mktemp("tflite")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(root / "m.onnx"), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"])
    rng = np.random.default_rng(0)
    # onnx2tf offline: it wants this sample file in the working directory even with -cind (toolchain notes §2).
    np.save(root / "calibration_image_sample_data_20x128x128x3_float32.npy", np.zeros((20, 128, 128, 3), np.float32))
    np.save(root / "calib.npy", rng.uniform(0, 255, (16, 16, 16, 3)).astype(np.float32))
    subprocess.run([str(ONNX2TF), "-i", "m.onnx", "-o", "out", "-nuo", "-n", "-oiqt", "-qt", "per-tensor",
                    "-cind", "image", "calib.npy", "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"],
                   cwd=root, check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PATH": f"{ONNX2TF.parent}:{os.environ['PATH']}"})
    images = rng.uniform(0, 255, (4, 3, 16, 16)).astype(np.float32)
    np.savez(root / "samples.npz", image=images)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    return {"fp32": root / "out" / "m_float32.tflite", "int8": root / "out" / "m_full_integer_quant.tflite",
            "samples": root / "samples.npz", "images": images, "reference": reference}


def run(model, samples, out, *extra):
    args = ["--model", model, "--inputs", samples, "--warmup", 2, "--min-runs", 10, "--min-duration", 0, "--out", out,
            *extra]
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("xnnpack, active", [("on", ["XNNPACK"]), ("off", ["CPU"])])
def test_runner_times_a_tflite_model_with_and_without_xnnpack(tflite, tmp_path, xnnpack, active):
    out = tmp_path / "r.json"
    result = run(tflite["fp32"], tflite["samples"], out, "--xnnpack", xnnpack, "--threads", "1,2")
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["runtime"]["name"] == "litert" and r["runtime"]["version"]
    assert r["runtime"]["providers_active"] == active and r["runtime"]["provider_fallback"] is False
    assert r["threads"]["2"]["session_options"]["num_threads"] == 2
    assert r["threads"]["1"]["session_options"]["xnnpack"] is (xnnpack == "on")
    assert r["runtime"]["input_adaptations"] == ["image -> image: NCHW to NHWC"]
    assert r["model"]["inputs"] == [{"name": "image", "shape": [1, 16, 16, 3], "dtype": "float32"}]


def test_int8_model_gets_quantized_inputs(tflite, tmp_path):
    out = tmp_path / "r.json"
    result = run(tflite["int8"], tflite["samples"], out)
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["model"]["inputs"][0]["dtype"] == "int8"
    assert any("quantized to int8" in a for a in r["runtime"]["input_adaptations"])


@pytest.mark.parametrize("kind, atol", [("fp32", 1e-3), ("int8", None)])
def test_litert_outputs_match_torch(tflite, kind, atol):
    runner = load_runner()
    runtime = runner.LiteRT(tflite[kind], None)
    runtime.load(1)
    outputs = [next(iter(runtime.infer(runtime.make_feed({"image": image[None]})).values()))[0]
               for image in tflite["images"]]
    got, ref = np.stack(outputs), tflite["reference"]
    if atol is None:  # int8: within a few quantization steps of the output
        scale = runtime.interpreter.get_output_details()[0]["quantization"][0]
        atol = 4 * scale
    assert np.abs(got - ref).max() <= atol, (np.abs(got - ref).max(), atol)


def test_missing_delegate_library_exits_3(tflite, tmp_path):
    result = run(tflite["fp32"], tflite["samples"], tmp_path / "r.json", "--providers", "/nonexistent/libdelegate.so")
    assert result.returncode == 3, result.stderr
    assert "LiteRT cannot load the model" in result.stderr and not (tmp_path / "r.json").exists()


def test_converted_input_names_are_matched():
    runner = load_runner()
    specs = [("serving_default_y:0", [1, 32, 32, 1], np.float32), ("serving_default_uv:0", [1, 16, 16, 2], np.float32)]
    sample = {"uv": np.zeros((1, 2, 16, 16), np.float32), "y": np.zeros((1, 1, 32, 32), np.float32)}
    assert runner.bind_inputs(specs, sample) == [("serving_default_y:0", "y"), ("serving_default_uv:0", "uv")]
    renamed = [("a", [1, 32, 32, 1], np.float32), ("b", [1, 16, 16, 2], np.float32)]
    assert runner.bind_inputs(renamed, sample) == [("a", "y"), ("b", "uv")]  # by shape, NCHW -> NHWC
