"""workflow/device_runner.py (the on-device timer) and workflow/benchmark.py (the stage around it)."""
import ast
import importlib.util
import json
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from conftest import REPO, assert_one_line_error, run_module, tiny_params, write_params
from workflow.models import build_model

RUNNER = REPO / "workflow" / "device_runner.py"
STAT_ORDER = ("min", "p50", "p90", "p99", "max")


def load_runner():
    spec = importlib.util.spec_from_file_location("device_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(model, example, path, input_names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(input_names), output_names=["logits"],
                          dynamic_axes={n: {0: "batch"} for n in [*input_names, "logits"]})
    return path


class TwoInputs(nn.Module):
    """A stand-in for the YUV 4:2:0 model: inputs y (N,1,32,32) and uv (N,2,16,16)."""

    def __init__(self):
        super().__init__()
        self.y = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.uv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, y, uv):
        x = torch.cat([self.y(y), self.uv(uv)], dim=1)
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    rgb = export(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10), (torch.zeros(1, 3, 32, 32),),
                 root / "rgb.onnx", ["image"])
    yuv = export(TwoInputs(), (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)), root / "yuv.onnx", ["y", "uv"])
    rng = np.random.default_rng(0)
    rgb_in, yuv_in = root / "rgb.npz", root / "yuv.npz"
    np.savez(rgb_in, image=rng.uniform(0, 255, (4, 3, 32, 32)).astype(np.float32))
    np.savez(yuv_in, y=rng.uniform(0, 255, (4, 1, 32, 32)).astype(np.float32),
             uv=rng.uniform(0, 255, (4, 2, 16, 16)).astype(np.float32))
    return {"rgb": (rgb, rgb_in), "yuv": (yuv, yuv_in), "root": root}


def run_runner(*args, env=None):
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def quick(model, inputs, out, *extra):
    return run_runner("--model", model, "--inputs", inputs, "--warmup", 2, "--min-runs", 20,
                      "--min-duration", 0.05, "--out", out, *extra)


# ----------------------------------------------------------------------------- runner output
def test_runner_output_has_every_field(models, tmp_path):
    model, inputs = models["rgb"]
    out = tmp_path / "r.json"
    result = quick(model, inputs, out, "--threads", "1,2", "--device-name", "bench-box")
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["device_name"] == "bench-box"
    assert set(r["threads"]) == {"1", "2"}
    for threads, entry in r["threads"].items():
        assert entry["threads"] == int(threads)
        assert entry["session_options"]["intra_op_num_threads"] == int(threads)
        assert entry["session_options"]["inter_op_num_threads"] == 1
        assert entry["runs"] >= 20 and entry["duration_s"] >= 0.05
        assert entry["throughput_fps"] == pytest.approx(entry["runs"] / entry["duration_s"])
        stats = entry["latency_ms"]
        assert [stats[k] for k in STAT_ORDER] == sorted(stats[k] for k in STAT_ORDER)
        assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0
        assert entry["load_ms"] > 0 and entry["first_run_ms"] > 0
    assert r["load_ms"] == r["threads"]["1"]["load_ms"]
    assert r["first_run_ms"] == r["threads"]["1"]["first_run_ms"]
    assert r["runtime"]["name"] == "onnxruntime" and r["runtime"]["version"]
    assert r["runtime"]["providers_requested"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in r["runtime"]["providers_active"]
    assert r["runtime"]["provider_fallback"] is False
    assert r["memory"]["peak_rss_mb"] > r["memory"]["rss_baseline_mb"] > 0
    assert r["model"]["inputs"] == [{"name": "image", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    assert r["settings"]["samples"] == 4 and r["settings"]["batch_size"] == 1
    for key in ("cpu_model", "cpu_count", "machine", "cpufreq", "temperature_c_before", "temperature_c_after"):
        assert key in r["host"]
    assert set(r["versions"]) == {"python", "numpy", "onnxruntime"}


def test_runner_feeds_two_input_models(models, tmp_path):
    model, inputs = models["yuv"]
    result = quick(model, inputs, tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    names = [i["name"] for i in json.loads((tmp_path / "r.json").read_text())["model"]["inputs"]]
    assert names == ["y", "uv"]


def test_provider_fallback_is_flagged(models, tmp_path):
    model, inputs = models["rgb"]
    result = quick(model, inputs, tmp_path / "r.json", "--providers", "NoSuchExecutionProvider", "--min-runs", 2)
    assert result.returncode == 0, result.stderr
    runtime = json.loads((tmp_path / "r.json").read_text())["runtime"]
    assert runtime["provider_fallback"] is True
    assert "NoSuchExecutionProvider" not in runtime["providers_active"]
    assert "warning: requested provider(s) NoSuchExecutionProvider not active" in result.stderr


# ----------------------------------------------------------------------------- timing method
class FakeRuntime:
    """First inference slow, later ones instant: shows which runs end up in the statistics."""

    model_path = "fake"

    def __init__(self):
        self.calls = 0

    def load(self, threads):
        pass

    def input_specs(self):
        return [("x", [None, 2], np.float32)]

    def make_feed(self, sample):
        return sample

    def run(self, feed):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.05)

    def providers_active(self):
        return ["Fake"]

    def session_options(self, threads):
        return {"threads": threads}


def test_first_run_and_warmup_stay_out_of_the_statistics():
    runner = load_runner()
    fake = FakeRuntime()
    feeds = [{"x": np.zeros((1, 2), np.float32)}] * 3
    entry = runner.benchmark_threads(fake, feeds, threads=1, warmup=5, min_runs=30, min_duration_s=0)
    assert entry["first_run_ms"] >= 50
    assert entry["latency_ms"]["max"] < 50
    assert entry["runs"] == 30 and fake.calls == 1 + 5 + 30


def test_timing_runs_until_both_minimums_are_met():
    runner = load_runner()
    latencies, total_ns = runner.time_runs(lambda feed: time.sleep(0.001), [None], 0, 3, 0.05)
    assert total_ns >= 50e6 and len(latencies) > 3
    latencies, _ = runner.time_runs(lambda feed: None, [None], 0, 40, 0)
    assert len(latencies) == 40


# ----------------------------------------------------------------------------- errors
def test_missing_model_is_a_one_line_error(models, tmp_path):
    out = tmp_path / "r.json"
    result = quick(tmp_path / "missing.onnx", models["rgb"][1], out)
    assert_one_line_error(result, "missing.onnx", "model file not found")
    assert not out.exists()


def test_input_name_mismatch_is_a_one_line_error_and_leaves_no_file(models, tmp_path):
    out = tmp_path / "r.json"
    result = quick(models["rgb"][0], models["yuv"][1], out)
    assert_one_line_error(result, "input names do not match", "['image']")
    assert list(tmp_path.iterdir()) == []  # neither the result nor a temp file


def test_input_shape_mismatch_is_a_one_line_error(models, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((2, 3, 16, 16), np.float32))
    result = quick(models["rgb"][0], bad, tmp_path / "r.json")
    assert_one_line_error(result, "input 'image'", "1x3x16x16")


def test_runtime_not_installed_is_a_one_line_error(models, tmp_path):
    stub = tmp_path / "stub" / "onnxruntime"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('stub')\n")
    env = {"PYTHONPATH": str(stub.parent), "PATH": "/usr/bin:/bin"}
    result = run_runner("--model", models["rgb"][0], "--inputs", models["rgb"][1], "--out", tmp_path / "r.json",
                        env=env)
    assert result.returncode == 4, result.stderr  # apart from input mistakes: the device lacks the runtime
    assert result.stderr.strip() == "error: onnxruntime is not installed (pip install onnxruntime)"


def test_runner_is_self_contained():
    """It is copied to boards alone: stdlib, numpy and the runtimes only, never the workflow package."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime",
                                               "hailo_platform", "cv2"}
    imported = set()
    for node in ast.walk(ast.parse(RUNNER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add(node.module.split(".")[0])
    assert "workflow" not in imported
    assert imported <= allowed, imported - allowed


# ----------------------------------------------------------------------------- benchmark stage
@pytest.fixture(scope="module")
def stage_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for fmt, example in (("rgb", (torch.zeros(1, 3, 32, 32),)),
                         ("yuv420", (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)))):
        model = build_model({"arch": "mobilenetv2", "width_mult": 0.5, "input_format": fmt}, 10, 32)
        out[fmt] = export(model, example, root / f"{fmt}.onnx", model.input_names)
    return out


@pytest.mark.parametrize("fmt", ["rgb", "yuv420"])
def test_benchmark_stage_end_to_end(tmp_path, packed_dir, stage_models, fmt):
    params = write_params(tmp_path / "params.yaml", tiny_params(benchmark={"threads": [1, 2]}))
    out = tmp_path / "bench" / "local" / f"mobilenetv2-{fmt}" / "onnx-fp32.json"
    run_module("benchmark", "--params", params, "--device", "local", "--model-name", f"mobilenetv2-{fmt}",
               "--artifact", stage_models[fmt], "--packed", packed_dir / fmt / "test.npy",
               "--manifest", packed_dir / fmt / "manifest.json", "--out", out, check=True)
    r = json.loads(out.read_text())
    assert r["model_name"] == f"mobilenetv2-{fmt}" and r["device"] == "local" and r["input_format"] == fmt
    assert len(r["artifact_sha256"]) == 64
    assert set(r["model_stats"]) == {"params", "macs", "size_bytes"} and r["model_stats"]["macs"] > 20e6
    assert set(r["threads"]) == {"1", "2"} and r["settings"]["samples"] == 4
    assert r["settings"]["warmup_runs"] == 2 and r["settings"]["min_runs"] == 5
    assert [i["name"] for i in r["model"]["inputs"]] == (["image"] if fmt == "rgb" else ["y", "uv"])
    assert r["provenance"]["params_hash"] and r["memory"]["peak_rss_mb"] > 0


def test_benchmark_stage_reports_runner_failure_in_one_line(tmp_path, packed_dir, stage_models):
    """An RGB artifact under the YUV model name: the runner rejects the inputs; the stage says why."""
    params = write_params(tmp_path / "params.yaml", tiny_params())
    out = tmp_path / "out.json"
    result = run_module("benchmark", "--params", params, "--device", "local", "--model-name", "mobilenetv2-yuv420",
                        "--artifact", stage_models["rgb"], "--packed", packed_dir / "yuv420" / "test.npy",
                        "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", out)
    assert_one_line_error(result, "device_runner on local failed: input names do not match")
    assert not out.exists()


def test_benchmark_stage_rejects_a_format_mismatch(tmp_path, packed_dir, stage_models):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("benchmark", "--params", params, "--device", "local", "--model-name", "mobilenetv2-rgb",
                        "--artifact", stage_models["rgb"], "--packed", packed_dir / "yuv420" / "test.npy",
                        "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", tmp_path / "out.json")
    assert_one_line_error(result, "packed data is yuv420", "takes rgb")


# ----------------------------------------------------------------------------- extra measurements
def test_stream_throughput_with_writer_reader_queue(models, tmp_path):
    model, inputs = models["yuv"]
    out = tmp_path / "r.json"
    result = quick(model, inputs, out, "--stream-workers", "1,3", "--min-runs", 30)
    assert result.returncode == 0, result.stderr
    stream = json.loads(out.read_text())["stream"]
    assert set(stream) == {"1", "3"}
    for workers, entry in stream.items():
        assert entry["workers"] == int(workers) and entry["frames"] >= 30 and entry["duration_s"] >= 0.05
        assert entry["throughput_fps"] == pytest.approx(entry["frames"] / entry["duration_s"])
        assert entry["latency_ms"]["min"] <= entry["latency_ms"]["p50"] <= entry["latency_ms"]["max"]


def test_perf_counters_or_an_honest_unavailable(models, tmp_path):
    """This VM has no PMU: perf says <not supported>, and so must the result. Where the CPU
    has counters, they come back with a plausible IPC."""
    import shutil

    model, inputs = models["rgb"]
    out = tmp_path / "r.json"
    result = quick(model, inputs, out, "--perf")
    assert result.returncode == 0, result.stderr
    perf = json.loads(out.read_text())["perf"]
    if shutil.which("perf") is None:
        assert perf == {"available": False, "reason": "perf not found on PATH"}
        return
    probe = subprocess.run(["perf", "stat", "-x", ",", "-e", "instructions", "true"], capture_output=True, text=True)
    if "<not supported>" in probe.stderr or probe.returncode != 0:
        assert perf["available"] is False and "instructions" in perf["unsupported"]
        assert "not supported" in perf["reason"] and "ipc" not in perf
    else:
        assert perf["available"] is True and 0.05 < perf["ipc"] < 10
        assert perf["per_inference"]["instructions"] > 1e5


def test_rt_mode_counts_deadline_misses(models, tmp_path):
    model, inputs = models["rgb"]
    results = {}
    for deadline in ("0.000001", "1000"):
        out = tmp_path / f"rt{deadline}.json"
        result = quick(model, inputs, out, "--rt-period-ms", 2, "--rt-deadline-ms", deadline, "--rt-jobs", 25,
                       "--rt-priority", 10, "--cpus", 0)
        assert result.returncode == 0, result.stderr
        results[deadline] = json.loads(out.read_text())
    tight, loose = results["0.000001"]["rt"], results["1000"]["rt"]
    assert tight["jobs"] == 25 and tight["deadline_misses"] == 25 and tight["deadline_miss_ratio"] == 1.0
    assert loose["deadline_misses"] == 0 and loose["deadline_miss_ratio"] == 0.0
    assert loose["period_ms"] == 2 and loose["start_delay_ms"]["min"] >= 0
    assert loose["jitter_ms"] == pytest.approx(loose["response_time_ms"]["max"] - loose["response_time_ms"]["min"])
    # SCHED_FIFO is applied when permitted (root here), or the refusal is recorded.
    assert loose["scheduler"]["policy"] == "SCHED_FIFO" or "error" in loose["scheduler"]
    assert results["1000"]["settings"]["affinity"] == [0]


def test_model_the_runtime_cannot_load_exits_3(tmp_path, models):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = quick(broken, models["rgb"][1], tmp_path / "r.json")
    assert result.returncode == 3 and "onnxruntime cannot load the model" in result.stderr
