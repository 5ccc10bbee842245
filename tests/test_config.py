import subprocess
import sys

import pytest
import yaml

from conftest import (CIFAR_NPZ, DELETE, REPO, apply_mutation, assert_one_line_error, base_params, run_module,
                      write_params)
from workflow.config import load_params, validate
from workflow.errors import UserError


def mutate(path, value):
    return apply_mutation(base_params(), path, value)


# (path, bad value, text the one-line error must contain)
MUTATIONS = [
    (("seed",), "zero", "'seed'"),
    (("seed",), -1, "'seed'"),
    (("data", "source"), "mnist", "'data.source'"),
    (("data", "train_subset"), 1.5, "'data.train_subset'"),
    (("data", "calib_subset"), 0, "'data.calib_subset'"),
    (("data", "yuv_matrix"), "bt2020", "bt601"),
    (("data", "download"), "yes", "'data.download'"),
    (("data", "path"), DELETE, "path"),
    (("models",), {}, "'models'"),
    (("models", "Bad Name!"), {"arch": "mobilenetv2", "width_mult": 1.0, "input_format": "rgb"}, "'models'"),
    (("models", "mobilenetv2-rgb", "arch"), "vgg", "'models.mobilenetv2-rgb.arch'"),
    (("models", "mobilenetv2-rgb", "input_format"), "nv12", "'models.mobilenetv2-rgb.input_format'"),
    (("models", "mobilenetv2-rgb", "width_mult"), 0, "'models.mobilenetv2-rgb.width_mult'"),
    (("models", "mobilenetv2-rgb", "depth"), 3, "'depth'"),
    (("train", "epochs"), 0, "'train.epochs'"),
    (("train", "lr"), "fast", "'train.lr'"),
    (("train", "schedule", "gamma"), 2, "'train.schedule.gamma'"),
    (("train", "schedule", "milestones"), "5", "'train.schedule.milestones'"),
    (("train", "augment", "color_jitter"), [0.1, 0.2], "'train.augment.color_jitter'"),
    (("train", "device"), "tpu", "'train.device'"),
    (("train", "optimizer"), "adam", "'optimizer'"),
    (("export", "opset"), 7, "'export.opset'"),
    (("export", "parity_atol"), -1, "'export.parity_atol'"),
    (("evaluate",), DELETE, "evaluate"),
    (("benchmark", "threads"), [], "'benchmark.threads'"),
    (("benchmark", "threads"), [0], "'benchmark.threads.0'"),
    (("benchmark", "devices"), ["rpi; rm -rf /"], "'benchmark.devices.0'"),
    (("benchmark", "devices"), ["nosuchboard"], "'benchmark.devices.0'"),
    (("benchmark", "min_runs"), None, "'benchmark.min_runs'"),
    (("typo_section",), {}, "'typo_section'"),
    (("artifacts", "onnx-fp32"), DELETE, "onnx-fp32"),
    (("artifacts", "pt-int8"), {"quantize": {"method": "dynamic"}}, "'artifacts'"),
    (("artifacts", "onnx-int8-static", "quantize", "calibration"), "kl", "minmax"),
    (("artifacts", "onnx-int8-static", "quantize", "method"), "awq", "'artifacts.onnx-int8-static.quantize.method'"),
    (("artifacts", "onnx-int8-static", "quantize", "calib_size"), 5000, "data.calib_subset"),
    (("artifacts", "onnx-int8-dynamic", "quantize", "format"), "qdq", "'artifacts.onnx-int8-dynamic.quantize.format'"),
    (("artifacts", "onnx-int8-static", "quantize", "percentile"), 99.9, "calibration: percentile"),
    (("artifacts", "onnx-int8-static"), {}, "'artifacts.onnx-int8-static'"),
    (("models", "mobilenetv2-rgb", "artifacts"), ["onnx-fp16"], "'models.mobilenetv2-rgb.artifacts.0'"),
]


@pytest.mark.parametrize("path, value, fragment", MUTATIONS, ids=lambda v: str(v)[:30])
def test_mutated_params_give_one_line_error_naming_the_key(path, value, fragment):
    with pytest.raises(UserError) as err:
        validate(mutate(path, value))
    message = str(err.value)
    assert "\n" not in message and message.startswith("params.yaml: ")
    assert fragment in message, message


def test_enum_error_lists_allowed_values():
    with pytest.raises(UserError, match='expected one of "cifar10", "cifar100", "npz", "imagefolder", "imagenet"'):
        validate(mutate(("data", "source"), "mnist"))


def test_shipped_params_are_valid():
    load_params(REPO / "params.yaml")


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_params(path)


def test_stage_entry_point_reports_without_traceback(tmp_path):
    params = write_params(tmp_path / "params.yaml", mutate(("train", "epochs"), -3))
    result = run_module("pack", "--params", params, "--split", "eval", "--format", "rgb", "--out", tmp_path / "out")
    assert_one_line_error(result, "'train.epochs'", "got -3")
    assert not (tmp_path / "out").exists()


def test_snakefile_validates_before_any_job(tmp_path):
    for item in ("Snakefile", "rules", "workflow", "profiles"):
        (tmp_path / item).symlink_to(REPO / item)
    write_params(tmp_path / "params.yaml", mutate(("data", "source"), "mnist"))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
    assert errors == ["error: params.yaml: key 'data.source': got \"mnist\", expected one of "
                      "\"cifar10\", \"cifar100\", \"npz\", \"imagefolder\", \"imagenet\""], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_set_params_keeps_comments_and_rejects_bad_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    run_module("set_params", "--params", path, "train.epochs=3", "data.source=npz", f"data.path={CIFAR_NPZ}",
               check=True)
    text = path.read_text()
    assert "# seed 000's \"mixed\" schedule" in text
    assert yaml.safe_load(text)["train"]["epochs"] == 3
    result = run_module("set_params", "--params", path, "train.epochs=zero")
    assert_one_line_error(result, "'train.epochs'")
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 3
    # lists stay in flow style, so a later edit of the same key (here: to an empty list) stays valid YAML
    run_module("set_params", "--params", path, "train.schedule.milestones=[5]", check=True)
    run_module("set_params", "--params", path, "train.schedule.milestones=[]", check=True)
    assert yaml.safe_load(path.read_text())["train"]["schedule"]["milestones"] == []
    assert "milestones: []" in path.read_text() and "# epochs (absolute)" in path.read_text()


@pytest.mark.parametrize("overlay, key, fragment", [
    ("config/papers/yuv420_mobilenetv2/full.yaml", "data.path", "data/imagenet is not a folder"),
    ("config/papers/od_quant_kd_imx8/full.yaml", "detection.data.path", "data/coco does not exist"),
])
def test_overlay_naming_a_missing_data_path_is_one_line(tmp_path, overlay, key, fragment):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    result = run_module("set_params", "--params", path, "--file", REPO / overlay, cwd=tmp_path)
    assert_one_line_error(result, f"{REPO / overlay}: key '{key}'", fragment, f"-S {key}=")
    assert path.read_text() == (REPO / "params.yaml").read_text()  # left untouched


def test_offline_cifar10_is_one_setting(tmp_path):
    """CIFAR-10 offline: data.path names an .npz of its images, data.source stays cifar10."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    result = run_module("set_params", "--params", path, "data.download=false", cwd=tmp_path)
    assert_one_line_error(result, f"{path}: key 'data.path'", "data/raw holds no cifar-10-python.tar.gz")
    run_module("set_params", "--params", path, f"data.path={CIFAR_NPZ}", "data.download=false", check=True)
    assert yaml.safe_load(path.read_text())["data"]["source"] == "cifar10"
