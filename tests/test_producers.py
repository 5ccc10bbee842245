"""params.yaml `artifacts` entries -> the options of the stage that makes each (what `--artifact NAME` reads)."""
import argparse

import pytest

from conftest import assert_one_line_error, run_module, tiny_params, write_params
from workflow.producers import artifact_options, parse_args


@pytest.mark.parametrize("artifact, options", [
    ("onnx-int8-dynamic", ["--method", "dynamic", "--calib-size", "32", "--weight-type", "quint8", "--per-channel"]),
    ("onnx-int8-static", ["--method", "static", "--calib-size", "32", "--format", "qdq", "--calibration", "minmax",
                          "--weight-type", "qint8", "--activation-type", "quint8", "--per-channel"]),
    ("onnx-int8-qat", ["--epochs", "1", "--steps", "20", "--lr", "0.001", "--per-channel"]),
    ("tflite-fp16", ["--precision", "fp16"]),
    ("tflite-int8-full", ["--precision", "int8", "--calib-size", "32", "--io-type", "int8"]),
])
def test_options_come_from_the_entry_and_data_calib_subset(artifact, options):
    assert artifact_options(tiny_params(), artifact) == options


def test_hailo_options_per_step():
    params = tiny_params()
    assert artifact_options(params, "hef-int8", "translate") == ["--hw-arch", "hailo8"]
    assert artifact_options(params, "hef-int8", "optimize") == ["--calib-size", "1024", "--optimization-level", "2",
                                                                "--compression-level", "0", "--camera-format", "rgb"]
    assert artifact_options(params, "hef-int8", "compile") == []


def stage_parser():
    parser = argparse.ArgumentParser()
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("translate", "optimize"):
        sub = steps.add_parser(name)
        sub.add_argument("--params", default="params.yaml")
        sub.add_argument("--artifact")
        sub.add_argument("--hw-arch", default="hailo8")
        sub.add_argument("--calib-size", type=int)
        sub.add_argument("--optimization-level", type=int)
        sub.add_argument("--compression-level", type=int)
        sub.add_argument("--camera-format")
    return parser


def test_the_entry_comes_first_and_the_command_line_wins(tmp_path):
    params = tiny_params()
    params["artifacts"]["hef-int8"]["hailo"]["hw_arch"] = "hailo8l"
    path = str(write_params(tmp_path / "params.yaml", params))
    args = parse_args(stage_parser(), ["translate", "--params", path, "--artifact", "hef-int8"], subcommand=True)
    assert args.hw_arch == "hailo8l"
    args = parse_args(stage_parser(), ["optimize", "--params", path, "--artifact", "hef-int8", "--calib-size", "64"],
                      subcommand=True)
    assert (args.calib_size, args.optimization_level, args.camera_format) == (64, 2, "rgb")


def test_an_unknown_entry_is_one_line(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("quantize", "--params", path, "--model", "m.onnx", "--artifact", "onnx-int8-nosuch",
                        "--calib", "c.npy", "--manifest", "m.json", "--out", tmp_path / "o.onnx")
    assert_one_line_error(result, "--artifact 'onnx-int8-nosuch'", "onnx-int8-static")
