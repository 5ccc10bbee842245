import json

import onnx
import pytest

from conftest import assert_one_line_error, run_module, tiny_params, write_params


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, packed_dir):
    root = tmp_path_factory.mktemp("exported")
    params = write_params(root / "params.yaml", tiny_params())
    out = {}
    for model, folder in trained.items():
        fmt = model.rsplit("-", 1)[1]
        path = root / model / "onnx-fp32.onnx"
        run_module("export", "--params", params, "--checkpoint", folder / "model.pt",
                   "--packed", packed_dir / fmt / "test.npy", "--out", path, check=True)
        out[model] = path
    return out


def test_export_parity_and_inputs(exported):
    for model, path in exported.items():
        report = json.loads(path.with_suffix(".json").read_text())
        assert report["parity"]["max_abs_diff"] < 1e-3 and report["parity"]["argmax_agreement"] == 1.0
        graph = onnx.load(str(path)).graph
        names = [i.name for i in graph.input]
        assert names == (["image"] if model.endswith("rgb") else ["y", "uv"])
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert report["batchnorm_nodes"] == 0  # folded by onnxslim


def test_hailo_friendly_export_keeps_batchnorm(tmp_path, trained, packed_dir):
    params = write_params(tmp_path / "params.yaml",
                          tiny_params(export={"hailo_friendly": True, "simplify": False}))
    out = tmp_path / "hailo.onnx"
    run_module("export", "--params", params, "--checkpoint", trained["mobilenetv2-yuv420"] / "model.pt",
               "--packed", packed_dir / "yuv420" / "test.npy", "--out", out, check=True)
    assert json.loads(out.with_suffix(".json").read_text())["batchnorm_nodes"] > 0


def test_parity_failure_is_loud_and_leaves_no_model(tmp_path, trained, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(export={"parity_atol": 1e-12}))
    out = tmp_path / "m.onnx"
    result = run_module("export", "--params", params, "--checkpoint", trained["mobilenetv2-rgb"] / "model.pt",
                        "--packed", packed_dir / "rgb" / "test.npy", "--out", out)
    assert_one_line_error(result, str(out), "parity check failed")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_evaluate_matches_pytorch_accuracy(tmp_path, exported, trained, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    for model, path in exported.items():
        fmt = model.rsplit("-", 1)[1]
        out = tmp_path / f"{model}.json"
        run_module("evaluate", "--params", params, "--artifact", path, "--packed", packed_dir / fmt / "test.npy",
                   "--manifest", packed_dir / fmt / "manifest.json", "--out", out, check=True)
        result = json.loads(out.read_text())
        train = json.loads((trained[model] / "train_metrics.json").read_text())
        assert result["runtime"] == "onnxruntime" and result["test_images"] == 256
        assert abs(result["top1"] - train["top1"]) <= 2 / 256  # same images, fp32 rounding only
        assert sum(map(sum, result["confusion_matrix"])) == 256


def test_corrupt_checkpoint_and_onnx_are_named(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    bad_ckpt = tmp_path / "model.pt"
    bad_ckpt.write_bytes(b"\x00" * 64)
    result = run_module("export", "--params", params, "--checkpoint", bad_ckpt,
                        "--packed", packed_dir / "rgb" / "test.npy", "--out", tmp_path / "m.onnx")
    assert_one_line_error(result, str(bad_ckpt), "corrupt")
    bad_onnx = tmp_path / "m.onnx"
    bad_onnx.write_bytes(b"not onnx")
    result = run_module("evaluate", "--params", params, "--artifact", bad_onnx,
                        "--packed", packed_dir / "rgb" / "test.npy",
                        "--manifest", packed_dir / "rgb" / "manifest.json", "--out", tmp_path / "e.json")
    assert_one_line_error(result, str(bad_onnx), "not a valid ONNX model")
    assert not (tmp_path / "e.json").exists()
