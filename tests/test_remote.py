"""Benchmarks on a device over SSH: a real OpenSSH server on loopback, started by the tests."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import sshd
from conftest import assert_one_line_error, run_module, tiny_params, write_params
from test_runner import export, TwoInputs
from workflow.benchmark import run_on_device
from workflow.errors import UserError
from workflow.io import sha256_file
from workflow.remote import DeviceFailure, RUNNER

pytestmark = pytest.mark.skipif(not sshd.available(), reason="openssh-server not installed (scripts/ci-deps.sh)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sshd.LoopbackSshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def inventory(path, **devices):
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("remote-model")
    model = export(TwoInputs(), (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)), root / "yuv.onnx", ["y", "uv"])
    samples = root / "samples.npz"
    rng = np.random.default_rng(0)
    np.savez(samples, y=rng.uniform(0, 255, (2, 1, 32, 32)).astype(np.float32),
             uv=rng.uniform(0, 255, (2, 2, 16, 16)).astype(np.float32))
    return {"--model": model, "--inputs": samples}


QUICK = ["--warmup", "1", "--min-runs", "5", "--min-duration", "0", "--threads", "1"]


def remote_files(workdir):
    return sorted(p.relative_to(workdir).as_posix() for p in Path(workdir).rglob("*") if p.is_file())


def test_deploy_run_fetch_then_cache_hit(server, tiny_model, tmp_path):
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device())
    result, deploy = run_on_device("loopback", [*QUICK, "--device-name", "loopback"], tiny_model, tmp_path, devices)
    assert result["status"] == "ok" and result["device_name"] == "loopback"
    assert result["threads"]["1"]["runs"] >= 5 and result["runtime"]["providers_active"] == ["CPUExecutionProvider"]
    # The runner ran from the cache: its model path is the content address of our file.
    assert Path(result["model"]["path"]).name == sha256_file(tiny_model["--model"]) + ".onnx"
    assert sorted(deploy["uploaded"]) == sorted(["device_runner.py", "yuv.onnx", "samples.npz"])
    assert deploy["cached"] == [] and [a["status"] for a in deploy["attempts"]] == ["ok"]
    expected_cache = sorted([*(f"cache/{sha256_file(f)}{Path(f).suffix}" for f in [RUNNER, *tiny_model.values()]),
                             "device.lock"])
    assert remote_files(server.workdir) == expected_cache  # no .part files, run folder removed
    assert result["device_lock"]["path"] == str(server.workdir / "device.lock")
    assert deploy["member"] == f"127.0.0.1:{server.port}" and deploy["skipped"] == []

    _, again = run_on_device("loopback", [*QUICK, "--device-name", "loopback"], tiny_model, tmp_path, devices)
    assert again["uploaded"] == [] and again["bytes_uploaded"] == 0
    assert sorted(again["cached"]) == sorted(["device_runner.py", "yuv.onnx", "samples.npz"])
    assert remote_files(server.workdir) == expected_cache


def test_leftovers_of_dropped_runs_are_pruned(server, tiny_model, tmp_path):
    """Run folders and partial uploads older than any run can last are removed; recent ones stay."""
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(run_timeout_s=60))
    old_run, recent_run = server.workdir / "runs" / "dead", server.workdir / "runs" / "live"
    old_part = server.workdir / "cache" / ".abc.123.part"
    for folder in (old_run, recent_run):
        folder.mkdir(parents=True, exist_ok=True)
    old_part.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    for path in (old_run, old_part):
        os.utime(path, (two_hours_ago, two_hours_ago))
    run_on_device("loopback", QUICK, tiny_model, tmp_path, devices)
    assert not old_run.exists() and not old_part.exists() and recent_run.exists()
    recent_run.rmdir()


def test_remote_arguments_are_quoted(server, tiny_model, tmp_path):
    """A hostile argument reaches the runner as one literal string; nothing runs in a shell."""
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device())
    canary = tmp_path / "pwned"
    hostile = f"x'; touch {canary}; echo '$(touch {canary})"
    result, _ = run_on_device("loopback", [*QUICK, "--expect-governor", hostile], tiny_model, tmp_path, devices)
    assert not canary.exists()
    assert result["host"]["governor"]["expected"] == hostile


def test_wrong_host_key_is_rejected_without_retry(server, tiny_model, tmp_path):
    other = sshd.keygen(tmp_path / "other_ed25519")
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(known_hosts=str(known_hosts), retries=3))
    with pytest.raises(DeviceFailure, match="does not match") as failure:
        run_on_device("loopback", QUICK, tiny_model, tmp_path, devices)
    assert len(failure.value.attempts) == 1


def test_unknown_host_is_refused_not_added(server, tiny_model, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(known_hosts=str(known_hosts)))
    with pytest.raises(DeviceFailure, match="refusing an unknown host key"):
        run_on_device("loopback", QUICK, tiny_model, tmp_path, devices)
    assert known_hosts.read_text() == ""


FAULTY_PYTHON = {
    # The device's "python" runs hashing commands (-c) normally and misbehaves for the runner.
    "timeout": ("sleep 30", "timed out after 3 s"),  # lock_wait_s 1 + run_timeout_s 2
    "crash": ('exec "$REAL" -c "import os; os.abort()"', "crashed (exit status 134)"),
    # Kill the sshd session process (wrapper <- timeout <- shell <- sshd): the connection drops.
    "dropped": ("SHELL_PID=$(cut -d' ' -f4 /proc/$PPID/stat); kill -9 $(cut -d' ' -f4 /proc/$SHELL_PID/stat); "
                "sleep 5", "dropped"),
}


@pytest.mark.parametrize("fault", [pytest.param("timeout", marks=pytest.mark.slow), "crash",
                                   pytest.param("dropped", marks=pytest.mark.slow)])
def test_device_faults_are_retried_then_reported(server, tiny_model, tmp_path, fault):
    action, reason = FAULTY_PYTHON[fault]
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nREAL={os.path.realpath(os.sys.executable)}\n'
                       f'if [ "$1" = "-c" ]; then exec "$REAL" "$@"; fi\n{action}\n')
    wrapper.chmod(0o755)
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(python=str(wrapper), run_timeout_s=2,
                                                                          lock_wait_s=1))
    start = time.monotonic()
    with pytest.raises(DeviceFailure) as failure:
        run_on_device("loopback", QUICK, tiny_model, tmp_path, devices)
    assert reason in failure.value.reason, failure.value.reason
    assert [a["attempt"] for a in failure.value.attempts] == [1, 2]  # retries: 1
    assert time.monotonic() - start < 60


def test_runner_input_mistake_is_a_user_error_not_retried(server, tiny_model, tmp_path):
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device())
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(UserError, match="device_runner on loopback failed: input names do not match"):
        run_on_device("loopback", QUICK, {**tiny_model, "--inputs": bad}, tmp_path, devices)


# ----------------------------------------------------------------------------- the stage
def stage_params(tmp_path, devices_yaml, devices):
    params = tiny_params(benchmark={"devices": devices, "inventory": str(devices_yaml), "stream_workers": [2],
                                    "min_runs": 5})
    return write_params(tmp_path / "params.yaml", params)


@pytest.mark.slow
def test_benchmark_stage_on_a_remote_device(server, packed_dir, tmp_path):
    import torch
    from workflow.models import build_model

    model = build_model({"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"}, 10, 32)
    artifact = export(model, (torch.zeros(1, 3, 32, 32),), tmp_path / "rgb.onnx", model.input_names)
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(threads=[1, 2], governor="performance"))
    params = stage_params(tmp_path, devices, ["local", "loopback"])
    out = tmp_path / "bench" / "loopback.json"
    run_module("benchmark", "--params", params, "--device", "loopback", "--model-name", "mobilenetv2-rgb",
               "--artifact", artifact, "--packed", packed_dir / "rgb" / "test.npy",
               "--manifest", packed_dir / "rgb" / "manifest.json", "--out", out, check=True)
    r = json.loads(out.read_text())
    assert r["status"] == "ok" and r["device"] == "loopback" and r["device_name"] == "loopback"
    assert set(r["threads"]) == {"1", "2"} and r["settings"]["threads"] == [1, 2]  # the device's own sweep
    assert r["stream"]["2"]["frames"] >= 5 and r["deploy"]["attempts"][-1]["status"] == "ok"
    assert r["host"]["governor"]["expected"] == "performance"
    assert "available" in r["perf"] and r["provenance"]["git_commit"]


def test_unreachable_device_gives_a_failed_result_in_bounded_time(packed_dir, tmp_path):
    import torch

    artifact = export(TwoInputs(), (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 16, 16)), tmp_path / "m.onnx",
                      ["y", "uv"])
    key = sshd.keygen(tmp_path / "key")
    (tmp_path / "known_hosts").write_text("")
    devices = inventory(tmp_path / "devices.yaml", gone={
        "host": "127.0.0.1", "port": sshd.free_port(), "user": "nobody", "key_file": str(key),
        "known_hosts": str(tmp_path / "known_hosts"), "workdir": "/tmp/edge-bench", "connect_timeout_s": 2,
        "retries": 2, "retry_backoff_s": 0.1})
    params = stage_params(tmp_path, devices, ["gone"])
    out = tmp_path / "gone.json"
    start = time.monotonic()
    result = run_module("benchmark", "--params", params, "--device", "gone", "--model-name", "mobilenetv2-yuv420",
                        "--artifact", artifact, "--packed", packed_dir / "yuv420" / "test.npy",
                        "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", out)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60
    r = json.loads(out.read_text())
    assert r["status"] == "failed" and "connection to nobody@127.0.0.1" in r["reason"]
    assert [a["attempt"] for a in r["attempts"]] == [1, 2, 3]
    assert "failed:" in result.stdout


def test_missing_runtime_on_the_device_is_a_failed_result(server, packed_dir, tmp_path, tiny_model):
    devices = inventory(tmp_path / "devices.yaml", loopback=server.device(runtimes=["litert"]))
    params = stage_params(tmp_path, devices, ["loopback"])
    out = tmp_path / "r.json"
    run_module("benchmark", "--params", params, "--device", "loopback", "--model-name", "mobilenetv2-yuv420",
               "--artifact", tiny_model["--model"], "--packed", packed_dir / "yuv420" / "test.npy",
               "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", out, check=True)
    r = json.loads(out.read_text())
    assert r["status"] == "failed" and r["reason"].startswith("runtime onnxruntime is not installed on loopback")


def test_device_missing_from_the_inventory_is_a_one_line_error(tmp_path):
    devices = inventory(tmp_path / "devices.yaml")
    params = stage_params(tmp_path, devices, ["nosuchboard"])
    result = run_module("benchmark", "--params", params, "--device", "nosuchboard", "--model-name", "x",
                        "--artifact", "x", "--packed", "x", "--manifest", "x", "--out", tmp_path / "o.json")
    assert_one_line_error(result, "'benchmark.devices.0'", "expected local or a device of", "none defined")
