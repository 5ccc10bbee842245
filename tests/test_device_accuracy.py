"""Top-1 measured on the device (runner --accuracy-data), its comparison with the host's, and what an
emulated device changes: its timing settings, its rows' device_kind and their absence from paper tables."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_module, tiny_params, write_params
from test_runner import load_runner, run_runner, stage_models  # noqa: F401 (a fixture)
from workflow.accuracy import pack_classes, per_image_classes
from workflow.aggregate import device_accuracy_columns
from workflow.benchmark import device_settings, runner_options, save_samples
from workflow.datasets import load_packed, to_model_inputs
from workflow.inventory import DEFAULTS, device_kind
from workflow.papers import read_sources, reproduced_value


@pytest.mark.parametrize("fmt", ["rgb", "yuv420"])
def test_runner_reads_a_packed_split_as_the_host_does(packed_dir, fmt):
    """The runner (numpy only, on the board) lays packed images out exactly like workflow.datasets."""
    manifest = json.loads((packed_dir / fmt / "manifest.json").read_text())
    images, labels = load_packed(packed_dir / fmt / "test.npy")
    expected = to_model_inputs(images[:50], fmt, manifest["height"], manifest["width"])
    inputs, got_labels = load_runner().packed_model_inputs(packed_dir / fmt / "test.npy", fmt, manifest["height"],
                                                           manifest["width"], 50)
    assert sorted(inputs) == sorted(expected) and got_labels.tolist() == labels[:50].tolist()
    for name, array in expected.items():  # uint8 views, cast per image when fed
        assert inputs[name].dtype == np.uint8 and np.array_equal(inputs[name].astype(np.float32), array)


@pytest.mark.parametrize("fmt", ["rgb", "yuv420"])
def test_device_top1_is_the_host_evaluations(tmp_path, packed_dir, stage_models, fmt):
    """The benchmark stage's on-device top-1 (here on `local`) beside workflow.evaluate's on the same images."""
    params = tiny_params(benchmark={"accuracy": {"images": 100, "tolerance": {"float": 0.0, "quantized": 0.02}}})
    params_file = write_params(tmp_path / "params.yaml", params)
    packed = ["--packed", packed_dir / fmt / "test.npy", "--manifest", packed_dir / fmt / "manifest.json"]
    run_module("evaluate", "--params", params_file, "--artifact", stage_models[fmt], *packed,
               "--out", tmp_path / "eval.json", check=True)
    run_module("benchmark", "--params", params_file, "--device", "local", "--model-name", f"mobilenetv2-{fmt}",
               "--artifact", stage_models[fmt], *packed, "--out", tmp_path / "bench.json", check=True)
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    bench = json.loads((tmp_path / "bench.json").read_text())
    measured = bench["accuracy"]
    assert measured["images"] == 100 and measured["data"]["color_format"] == fmt
    host_labels, host_predictions = per_image_classes(evaluation)
    assert len(measured["predictions"]) == 100 and len(host_predictions) == evaluation["test_images"]
    assert measured["labels"] == host_labels[:100].tolist()
    assert measured["predictions"] == host_predictions[:100].tolist()  # batch 1 on the device, batched on the host
    columns = device_accuracy_columns(params, False, evaluation, bench)
    assert columns["device_check"] == "ok" and columns["top1_device_delta"] == 0
    assert columns["device_agreement"] == 1.0 and columns["top1_device_images"] == 100
    assert bench["device_kind"] == "host"


def test_accuracy_off_sends_no_data(tmp_path, packed_dir, stage_models):
    params = tiny_params(benchmark={"accuracy": {"images": 0, "tolerance": {"float": 0.0, "quantized": 0.02}}})
    out = tmp_path / "bench.json"
    run_module("benchmark", "--params", write_params(tmp_path / "params.yaml", params), "--device", "local",
               "--model-name", "mobilenetv2-rgb", "--artifact", stage_models["rgb"], "--packed",
               packed_dir / "rgb" / "test.npy", "--manifest", packed_dir / "rgb" / "manifest.json", "--out", out,
               check=True)
    assert json.loads(out.read_text())["accuracy"] is None


def evaluation_and_run(host_predictions, device_predictions, labels):
    top1 = float(np.mean(np.asarray(device_predictions) == np.asarray(labels)))
    return ({"test_images": len(labels), "labels": pack_classes(labels), "predictions": pack_classes(host_predictions)},
            {"accuracy": {"images": len(labels), "top1": top1, "predictions": list(device_predictions),
                          "labels": list(labels)}})


@pytest.mark.parametrize("quantized, flips, check", [(False, 0, "ok"), (False, 1, "mismatch"), (True, 2, "ok"),
                                                     (True, 3, "mismatch")])
def test_a_disagreement_beyond_the_tolerance_is_flagged(quantized, flips, check):
    """100 images, all right on the host; the device gets ``flips`` wrong. Tolerance: float 0, int8 0.02."""
    params = tiny_params(benchmark={"accuracy": {"images": 100, "tolerance": {"float": 0.0, "quantized": 0.02}}})
    labels = [i % 10 for i in range(100)]
    device = [(label + 1) % 10 if i < flips else label for i, label in enumerate(labels)]
    columns = device_accuracy_columns(params, quantized, *evaluation_and_run(labels, device, labels))
    assert columns["device_check"] == check
    assert columns["top1_device_delta"] == pytest.approx(-flips / 100)
    assert columns["device_agreement"] == pytest.approx(1 - flips / 100)
    assert columns["top1_host_same_images"] == 1.0


def test_a_device_run_on_other_images_is_flagged_not_compared():
    params = tiny_params(benchmark={"accuracy": {"images": 10, "tolerance": {"float": 0.0, "quantized": 0.02}}})
    labels = list(range(10))
    evaluation, run = evaluation_and_run(labels, labels, labels)
    evaluation["labels"] = pack_classes(labels[::-1])  # the host evaluated the split in another order
    columns = device_accuracy_columns(params, False, evaluation, run)
    assert columns["device_check"] == "different images" and "top1_device_delta" not in columns


@pytest.mark.parametrize("argv, fragment", [
    (["--accuracy-size", "30x30"], "expected RGB 30x30x3"),
    (["--accuracy-format", "yuv420"], "expected I420 32x32"),
])
def test_accuracy_data_that_does_not_fit_is_a_one_line_error(packed_dir, stage_models, tmp_path, argv, fragment):
    options = {"--accuracy-format": "rgb", "--accuracy-size": "32x32", "--accuracy-images": "10"}
    options.update(zip(argv[::2], argv[1::2]))
    inputs = tmp_path / "samples.npz"
    np.savez(inputs, image=np.zeros((1, 3, 32, 32), np.float32))
    result = run_runner("--model", stage_models["rgb"], "--inputs", inputs, "--min-runs", 1, "--min-duration", 0,
                        "--accuracy-data", packed_dir / "rgb" / "test.npy",
                        *[v for item in options.items() for v in item], "--out", tmp_path / "r.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert not (tmp_path / "r.json").exists()


# ----------------------------------------------------------------------------- emulated devices
def emulated_profile(**entry):
    return {"name": "virtual-a53", **DEFAULTS, "threads": [1], "emulated": True, **entry}


def test_an_emulated_device_times_with_the_emulated_settings():
    settings = tiny_params()["benchmark"]
    settings.update(min_runs=50, min_duration_s=1.0, stream_workers=[1, 3])
    profile = emulated_profile()
    emulated = device_settings(settings, profile)
    assert device_kind(profile) == "emulated" and device_kind(None) == "host"
    assert device_kind({**profile, "emulated": False}) == "board"
    assert {k: emulated[k] for k in ("warmup_runs", "min_runs", "min_duration_s", "stream_workers")} == \
        {k: settings["emulated"][k] for k in ("warmup_runs", "min_runs", "min_duration_s", "stream_workers")}
    assert emulated["pipeline"]["min_frames"] == settings["emulated"]["pipeline"]["min_frames"]
    assert emulated["pipeline"]["resolutions"] == settings["pipeline"]["resolutions"]  # the same table rows
    args = runner_options(emulated, profile, "onnxruntime")
    assert args[args.index("--min-runs") + 1] == str(settings["emulated"]["min_runs"])
    assert "--stream-workers" not in args
    real_board = {**profile, "emulated": False}
    assert device_settings(settings, real_board) is settings and device_settings(settings, None) is settings


def test_emulated_rows_never_enter_paper_tables(tmp_path):
    """A paper's latency cell is read from the summary; rows of an emulated device are not candidates."""
    summary = pd.DataFrame([
        {"model": "m", "artifact": "tflite-fp32", "device": "virtual-a53", "device_kind": "emulated",
         "status": "ok", "latency_p50_ms": 95.0},
        {"model": "m", "artifact": "tflite-fp32", "device": "local", "device_kind": "host", "status": "ok",
         "latency_p50_ms": 0.3},
    ])
    (tmp_path / "results").mkdir()
    summary.to_csv(tmp_path / "results" / "summary.csv", index=False)
    pipeline = tmp_path / "results" / "pipeline" / "virtual-a53"
    pipeline.mkdir(parents=True)
    pd.DataFrame([{"width": 640, "height": 360, "status": "ok", "rgb_latency_ms": 900.0,
                   "device_kind": "emulated"}]).to_csv(pipeline / "table.csv", index=False)
    tables = read_sources(tmp_path)
    spec = {"source": "summary", "where": {"artifact": "tflite-fp32"}, "column": "latency_p50_ms"}
    reproduced = reproduced_value(tables, spec)  # one candidate left: not ambiguous
    assert reproduced.summary()[0] == 0.3 and reproduced.column_values("device") == {"local"}
    assert tables["pipeline"].empty  # the board's pre-processing table is emulated timing only


def test_same_samples_give_the_same_file(tmp_path):
    """The benchmark's samples are content-addressed on the device: equal samples must be equal bytes."""
    arrays = {"y": np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 1, 32, 32),
              "uv": np.ones((2, 2, 16, 16), np.float32)}
    save_samples(tmp_path / "a.npz", arrays)
    save_samples(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as loaded:
        assert sorted(loaded.files) == ["uv", "y"] and np.array_equal(loaded["y"], arrays["y"])

