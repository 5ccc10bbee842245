"""params.yaml for the export formats: targets, tflite and hailo entries; mistakes are one line naming the choices."""
import pytest

from conftest import assert_one_line_error, base_params, run_module, write_params
from workflow.config import validate
from workflow.errors import UserError


def with_changes(change):
    params = base_params()
    change(params)
    return params


# (change, fragments the one-line error must contain)
BAD = [
    (lambda p: p.update(targets=["onnx", "coreml"]), ["'targets.1'", '"coreml"', '"onnx", "tflite", "hef"']),
    (lambda p: p["artifacts"]["tflite-fp16"]["tflite"].update(precision="bf16"),
     ["'artifacts.tflite-fp16.tflite.precision'", '"fp32", "fp16", "dynamic_int8", "int8"']),
    (lambda p: p["artifacts"]["tflite-fp32"]["tflite"].update(converter="tf2onnx"),
     ["'artifacts.tflite-fp32.tflite.converter'", '"onnx2tf", "litert_torch"']),
    (lambda p: p["artifacts"]["tflite-int8-full"]["tflite"].update(io_type="int16"),
     ["'artifacts.tflite-int8-full.tflite.io_type'", '"int8", "uint8"']),
    (lambda p: p["artifacts"]["hef-int8"]["hailo"].update(hw_arch="hailo9"),
     ["'artifacts.hef-int8.hailo.hw_arch'", '"hailo8", "hailo8l"']),
    (lambda p: p["artifacts"]["hef-int8"]["hailo"].update(camera_format="yuy2"),
     ["'artifacts.hef-int8.hailo.camera_format'", '"rgb", "nv12"']),
    (lambda p: p["benchmark"].update(litert_xnnpack=["on"]), ["'benchmark.litert_xnnpack.0'", "boolean"]),
    (lambda p: p["artifacts"]["tflite-fp16"]["tflite"].update(io_type="uint8"),
     ["'artifacts.tflite-fp16.tflite.io_type'", "only for precision int8"]),
    (lambda p: p["artifacts"]["tflite-int8-dynamic"]["tflite"].update(converter="litert_torch"),
     ["'artifacts.tflite-int8-dynamic.tflite.converter'", "litert_torch makes precision fp32"]),
    (lambda p: p["artifacts"].update({"onnx-fp16": {"tflite": {"precision": "fp16"}}}),
     ["'artifacts.onnx-fp16'", "must start with 'tflite-'"]),
    (lambda p: p["artifacts"]["tflite-int8-full"]["tflite"].update(calib_size=257),
     ["'artifacts.tflite-int8-full.tflite.calib_size'", "at most data.calib_subset (256)"]),
    # Hailo's 1024 calibration images need data.calib_subset raised once hef is a target
    (lambda p: p.update(targets=["onnx", "hef"]), ["'artifacts.hef-int8.hailo.calib_size'", "got 1024",
                                                    "raise data.calib_subset"]),
]


@pytest.mark.parametrize("change, fragments", BAD)
def test_bad_export_params_name_key_and_choices(change, fragments):
    with pytest.raises(UserError) as err:
        validate(with_changes(change))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_default_params_are_valid_and_hef_is_off():
    params = base_params()
    validate(params)
    assert "hef" not in params["targets"]
    validate(with_changes(lambda p: (p.update(targets=["onnx", "tflite", "hef"]),
                                     p["data"].update(calib_subset=1024))))


def test_a_stage_reports_a_bad_target_in_one_line(tmp_path):
    params = write_params(tmp_path / "params.yaml", with_changes(lambda p: p.update(targets=["tflite", "tensorrt"])))
    result = run_module("dag", "--params", params, "--out", tmp_path / "dvc.yaml")
    assert_one_line_error(result, str(params), "'targets.1'", '"tensorrt"', '"onnx", "tflite", "hef"')
