"""The runner's HailoRT runtime against a stand-in with HailoRT's Python API (tests/standins).

No Hailo-8 or HailoRT exists here; this checks the calls, their order, the NHWC float32
feeds and the result fields -- not real Hailo timings (README says so).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from test_runner import RUNNER

STANDINS = REPO / "tests" / "standins"


@pytest.fixture
def hef(tmp_path):
    path = tmp_path / "mobilenetv2-rgb.hef"
    path.write_text(json.dumps({"inputs": [{"name": "mobilenetv2/input_layer1", "shape": [32, 32, 3]}],
                                "outputs": [{"name": "mobilenetv2/fc1", "shape": [10]}]}))
    samples = tmp_path / "samples.npz"
    np.savez(samples, image=np.random.default_rng(0).uniform(0, 255, (3, 3, 32, 32)).astype(np.float32))
    return path, samples


def run(tmp_path, *args):
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHONPATH": str(STANDINS), "HAILO_STANDIN_LOG": str(log)}
    result = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True,
                            timeout=120, env=env)
    calls = [json.loads(line)["call"] for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_hef_runs_through_hailort_api_in_order(hef, tmp_path):
    model, samples = hef
    out = tmp_path / "r.json"
    result, calls = run(tmp_path, "--model", model, "--inputs", samples, "--warmup", 2, "--min-runs", 10,
                        "--min-duration", 0, "--threads", "1,2", "--out", out)
    assert result.returncode == 0, result.stderr
    session = ["HEF", "VDevice", "ConfigureParams.create_from_hef", "VDevice.configure", "InputVStreamParams.make",
               "OutputVStreamParams.make", "InferVStreams.enter", "activate.enter"]
    teardown = ["activate.exit", "InferVStreams.exit", "VDevice.release"]
    first = calls.index("activate.exit")
    assert calls[:len(session)] == session  # one session per thread count, opened in HailoRT's order
    assert set(calls[len(session):first]) == {"infer"} and first - len(session) == 1 + 2 + 10
    assert calls[first:first + 3] == teardown and calls.count("VDevice.release") == 2
    r = json.loads(out.read_text())
    assert r["runtime"]["name"] == "hailort" and r["runtime"]["version"] == "4.20.0-standin"
    assert r["runtime"]["providers_active"] == ["hailo:0000:01:00.0"] and r["runtime"]["provider_fallback"] is False
    assert r["model"]["inputs"] == [{"name": "mobilenetv2/input_layer1", "shape": [1, 32, 32, 3], "dtype": "float32"}]
    assert r["threads"]["1"]["session_options"]["input_format"] == "FLOAT32"


def test_hailort_configuration_error_exits_3(tmp_path, hef):
    bad = tmp_path / "bad.hef"
    bad.write_bytes(b"\x00not a hef")
    result, _ = run(tmp_path, "--model", bad, "--inputs", hef[1], "--out", tmp_path / "r.json")
    assert result.returncode == 3 and "HailoRT cannot load the model: Failed parsing HEF" in result.stderr


def test_hailort_not_installed_is_a_one_line_error(tmp_path, hef):
    result = subprocess.run([sys.executable, str(RUNNER), "--model", hef[0], "--inputs", hef[1], "--out",
                             tmp_path / "r.json"], capture_output=True, text=True, timeout=60)
    # exit 4: the runner's "runtime missing", which the benchmark stage records as not run
    assert result.returncode == 4 and result.stderr.strip() == (
        "error: HailoRT is not installed (the hailo_platform wheel from Hailo's developer zone)")
