"""Hailo DFC flow: wiring against a stand-in hailo_sdk_client, the one-line error without the SDK, the DAG.

The real Dataflow Compiler is proprietary and not installable here. tests/fakes/hailo_sdk_client
has the same ClientRunner calls, checks their arguments as the SDK does, and records them; it is
put on PYTHONPATH only in these tests. HEF files have not been built with the real SDK.
"""
import json
import os

import pytest

from conftest import REPO, assert_one_line_error, run_module, tiny_params, write_params
from test_dag_parity import check_parity, workdir_with
from workflow.dag import stages

FAKES = REPO / "tests" / "fakes"
CALIB = 32


def hailo(step, *args, calls=None, env=None, cwd=REPO):
    """Run one step of workflow.hailo; with ``calls`` the stand-in SDK is importable and records into it."""
    import subprocess
    import sys

    path = [str(REPO)] + ([str(FAKES)] if calls else [])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(env or {})}
    if calls:
        environment["HAILO_STANDIN_CALLS"] = str(calls)
    return subprocess.run([sys.executable, "-m", "workflow.hailo", step, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=environment, timeout=300)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory, trained, packed_dir):
    root = tmp_path_factory.mktemp("hailo")
    params = write_params(root / "params.yaml", tiny_params())
    out = {}
    for model, folder in trained.items():
        path = root / "artifacts" / model / "onnx-fp32.onnx"
        run_module("export", "--params", params, "--checkpoint", folder / "model.pt",
                   "--packed", packed_dir / model.rsplit("-", 1)[1] / "test.npy", "--out", path, check=True)
        out[model] = path
    return params, out


def run_flow(params, source, packed_dir, fmt, tmp_path, calls, camera="rgb", hw_arch="hailo8", env=None):
    parsed, quantized = tmp_path / "hef-int8-parsed.har", tmp_path / "hef-int8-quantized.har"
    hef = tmp_path / "artifacts" / "hef-int8.hef"
    results = [
        hailo("translate", "--params", params, "--model", source, "--hw-arch", hw_arch, "--out", parsed,
              calls=calls, env=env),
        hailo("optimize", "--params", params, "--har", parsed, "--calib-size", CALIB, "--camera-format", camera,
              "--calib", packed_dir / fmt / "calib.npy", "--manifest", packed_dir / fmt / "manifest.json",
              "--out", quantized, calls=calls, env=env),
        hailo("compile", "--params", params, "--har", quantized, "--out", hef, calls=calls, env=env),
    ]
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    return hef, quantized, recorded


@pytest.mark.parametrize("model, camera", [("mobilenetv2-rgb", "nv12"), ("mobilenetv2-yuv420", "nv12"),
                                           ("mobilenetv2-rgb", "rgb")])
def test_dfc_calls(onnx_models, packed_dir, tmp_path, model, camera):
    params, sources = onnx_models
    fmt = model.rsplit("-", 1)[1]
    hef, quantized, calls = run_flow(params, sources[model], packed_dir, fmt, tmp_path, tmp_path / "calls.jsonl",
                                     camera=camera, hw_arch="hailo8l")
    by_name = {}
    for call in calls:
        by_name.setdefault(call["call"], []).append(call)
    assert by_name["ClientRunner"][0]["hw_arch"] == "hailo8l"
    translate = by_name["translate_onnx_model"][0]
    inputs = {"rgb": {"image": [1, 3, 32, 32]}, "yuv420": {"y": [1, 1, 32, 32], "uv": [1, 2, 16, 16]}}[fmt]
    assert translate["net_input_shapes"] == inputs and translate["start_node_names"] == list(inputs)
    assert translate["end_node_names"] == ["logits"]
    # calibration: the first CALIB packed images, NHWC float32; a dict by input layer for two inputs
    optimize = by_name["optimize"][0]
    nhwc = {"rgb": [[CALIB, 32, 32, 3]], "yuv420": [[CALIB, 32, 32, 1], [CALIB, 16, 16, 2]]}[fmt]
    assert sorted(v["shape"] for v in optimize["inputs"].values()) == sorted(nhwc)
    assert {v["dtype"] for v in optimize["inputs"].values()} == {"float32"}
    assert optimize["single_array"] == (fmt == "rgb")
    script = by_name["load_model_script"][0]["script"]
    assert "model_optimization_flavor(optimization_level=2, compression_level=0)" in script
    assert ("input_conversion(input_layer1, nv12_to_rgb" in script) == (fmt == "rgb" and camera == "nv12")
    assert quantized.with_suffix(".alls").read_text() == script
    assert [c["call"] for c in calls][-2:] == ["ClientRunner", "compile"] and by_name["compile"][0]["hw_arch"] == "hailo8l"
    report = json.loads(hef.with_suffix(".json").read_text())
    assert report["status"] == "ok" and report["format"] == "hef" and report["hw_arch"] == "hailo8l"
    assert report["size_bytes"] == hef.stat().st_size > 0
    assert json.loads(quantized.with_suffix(".json").read_text())["calibration"]


def test_sdk_error_is_carried_to_a_failed_hef(onnx_models, packed_dir, tmp_path):
    """The parser rejecting the model: every step records status failed with the reason, none crashes."""
    params, sources = onnx_models
    hef, _, calls = run_flow(params, sources["mobilenetv2-rgb"], packed_dir, "rgb", tmp_path,
                             tmp_path / "calls.jsonl", env={"HAILO_STANDIN_UNSUPPORTED": "ColorTwist"})
    report = json.loads(hef.with_suffix(".json").read_text())
    assert report["status"] == "failed" and "Unsupported layer ColorTwist" in report["reason"]
    assert hef.stat().st_size == 0 and "compile" not in [c["call"] for c in calls]


def test_without_the_sdk_one_line_names_what_to_install(onnx_models, tmp_path):
    params, sources = onnx_models
    out = tmp_path / "hef-int8-parsed.har"
    result = hailo("translate", "--params", params, "--model", sources["mobilenetv2-rgb"], "--out", out)
    assert_one_line_error(result, "hailo_sdk_client is not installed", "Hailo Dataflow Compiler",
                          "hailo_dataflow_compiler")
    assert not out.exists()


def test_calibration_set_smaller_than_calib_size_is_an_error(onnx_models, packed_dir, tmp_path):
    params, sources = onnx_models
    calls = tmp_path / "calls.jsonl"
    parsed = tmp_path / "hef-int8-parsed.har"
    assert hailo("translate", "--params", params, "--model", sources["mobilenetv2-rgb"], "--out", parsed,
                 calls=calls).returncode == 0
    calib = packed_dir / "rgb" / "calib.npy"
    result = hailo("optimize", "--params", params, "--har", parsed, "--calib", calib,
                   "--manifest", packed_dir / "rgb" / "manifest.json", "--out", tmp_path / "q.har", calls=calls)
    assert_one_line_error(result, str(calib), f"has {CALIB} images", "--calib-size 1024", "Hailo recommends 1024")


def test_hef_is_evaluated_as_not_run_without_hailort(onnx_models, packed_dir, tmp_path):
    params, sources = onnx_models
    hef, _, _ = run_flow(params, sources["mobilenetv2-rgb"], packed_dir, "rgb", tmp_path, tmp_path / "calls.jsonl")
    out = tmp_path / "eval.json"
    run_module("evaluate", "--params", params, "--artifact", hef, "--packed", packed_dir / "rgb" / "test.npy",
               "--manifest", packed_dir / "rgb" / "manifest.json", "--out", out, check=True)
    result = json.loads(out.read_text())
    assert result["status"] == "failed" and result["reason"].startswith("not run: HailoRT")


def hef_params():
    params = tiny_params(targets=["onnx", "tflite", "hef"])
    params["data"]["calib_subset"] = 32
    params["artifacts"]["hef-int8"]["hailo"]["calib_size"] = 32  # Hailo's 1024 is more than the tiny split
    return params


def test_hef_stages_only_with_hef_in_targets(tmp_path):
    params = hef_params()
    names = [s.name for s in stages(params)]
    assert "hailo-translate-mobilenetv2-rgb-hef-int8" in names and "hailo-compile-mobilenetv2-yuv420-hef-int8" in names
    params["targets"] = ["onnx", "tflite"]
    assert not [n for n in (s.name for s in stages(params)) if "hef" in n]


def test_hef_dag_agrees_with_dvc(tmp_path):
    params = hef_params()
    jobs = check_parity(workdir_with(tmp_path, params), params)
    rules = {job["rule"] for job in jobs.values()}
    assert {"hailo_translate", "hailo_optimize", "hailo_compile", "convert_tflite"} <= rules
