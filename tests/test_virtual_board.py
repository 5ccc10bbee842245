"""The virtual aarch64 board (scripts/virtual-board.sh): the remote path on real aarch64 builds of the runtimes.

Through the shipped inventory (config/devices.yaml: virtual-a53, virtual-a72, virtual-a53-tflite),
fabric and the runner, as a user's board. The board must be up (`sudo scripts/virtual-board.sh up`;
.ci/run brings it up from scratch); otherwise these tests skip, or fail where .ci/run says the board
is required (EDGE_VIRTUAL_BOARD=required).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sshd
from conftest import CIFAR_NPZ, REPO, cifar_project, run_module, sh, tiny_params, write_params
from test_remote import tiny_model  # noqa: F401 (a fixture)
from workflow.benchmark import run_on_device
from workflow.inventory import load_inventory
from workflow.remote import DeviceFailure

BOARD = REPO / "scripts" / "virtual-board.sh"
INVENTORY = REPO / "config" / "devices.yaml"
QUICK = ["--warmup", "1", "--min-runs", "3", "--min-duration", "0", "--threads", "1"]


def board_state():
    """The board's state folder: where the shipped inventory's key file lives."""
    return Path(yaml.safe_load(INVENTORY.read_text())["devices"]["virtual-a53"]["key_file"]).parents[1]


@pytest.fixture(scope="module")
def board():
    status = subprocess.run(["bash", str(BOARD), "status"], capture_output=True, text=True, timeout=300)
    if status.returncode != 0:
        why = f"the virtual board is not up (sudo scripts/virtual-board.sh up): {status.stdout}{status.stderr}"
        if os.environ.get("EDGE_VIRTUAL_BOARD") == "required":
            pytest.fail(why)
        pytest.skip(why)
    return load_inventory(INVENTORY)


def inventory_with(path, name, **changes):
    """A copy of the shipped inventory with one entry changed."""
    devices = yaml.safe_load(INVENTORY.read_text())["devices"]
    devices[name].update(changes)
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("device, cpu", [("virtual-a53", "cortex-a53"), ("virtual-a72", "cortex-a72")])
def test_profiles_run_aarch64_under_their_cpu(board, tiny_model, tmp_path, device, cpu):
    import onnxruntime

    result, deploy = run_on_device(device, [*QUICK, "--device-name", device], tiny_model, tmp_path, INVENTORY)
    host = result["host"]
    assert host["machine"] == "aarch64" and host["qemu_cpu"] == cpu
    assert f"Cortex-{cpu[-3:].upper()}" in host["cpu_model"] and "emulation" in host["cpu_model"]
    assert result["runtime"]["version"] == onnxruntime.__version__  # envs/board-venv.txt pins the host's
    assert result["versions"]["python"].startswith("3.11.") and deploy["attempts"][-1]["status"] == "ok"


@pytest.mark.slow
def test_a_runtime_the_board_lacks_is_named_with_the_fix(board, tiny_model, packed_dir, tmp_path):
    """The tflite-runtime environment has no onnxruntime; an inventory that claims it gets a failed row saying so."""
    devices = inventory_with(tmp_path / "devices.yaml", "virtual-a53-tflite", runtimes=["onnxruntime", "litert"])
    params = write_params(tmp_path / "params.yaml", tiny_params(
        benchmark={"devices": ["virtual-a53-tflite"], "inventory": str(devices), "stream_workers": []}))
    out = tmp_path / "r.json"
    run_module("benchmark", "--params", params, "--device", "virtual-a53-tflite", "--model-name",
               "mobilenetv2-yuv420", "--artifact", tiny_model["--model"], "--packed", packed_dir / "yuv420" / "test.npy",
               "--manifest", packed_dir / "yuv420" / "manifest.json", "--out", out, check=True)
    r = json.loads(out.read_text())
    assert r["status"] == "failed" and r["device_kind"] == "emulated"
    assert "onnxruntime is not installed" in r["reason"] and "/opt/tflite-runtime/bin/python" in r["reason"]
    assert "inventory entry lists it in runtimes" in r["reason"] and len(r["attempts"]) == 1  # no retry


def test_a_board_that_is_not_up_says_how_to_start_it(tiny_model, tmp_path):
    """Whether or not the board was ever built here: its known_hosts missing, or nothing answering."""
    absent = inventory_with(tmp_path / "absent.yaml", "virtual-a53", known_hosts=str(tmp_path / "none"))
    with pytest.raises(DeviceFailure, match=r"not found \(sudo scripts/virtual-board.sh up writes it\)"):
        run_on_device("virtual-a53", QUICK, tiny_model, tmp_path, absent)
    (tmp_path / "known_hosts").write_text("")
    silent = inventory_with(tmp_path / "silent.yaml", "virtual-a53", port=2299, connect_timeout_s=3, retries=0,
                            known_hosts=str(tmp_path / "known_hosts"), key_file=str(sshd.keygen(tmp_path / "key")))
    with pytest.raises(DeviceFailure, match=r"is the virtual board up\? \(sudo scripts/virtual-board.sh status\)"):
        run_on_device("virtual-a53", QUICK, tiny_model, tmp_path, silent)


# ----------------------------------------------------------------------------- the DAG on the board
ARTIFACTS = ("onnx-fp32", "tflite-fp32", "tflite-int8-full")
DEVICES = ("local", "virtual-a53", "virtual-a53-tflite")
ACCURACY_IMAGES = 200
# Models that discriminate (top-1 well above chance, as in tests/test_pipeline.py), so that agreeing
# with the host is not the trivial agreement of a model that answers one class.
SETTINGS = ["data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=1024", "data.test_subset=256",
            "data.calib_subset=32", "train.epochs=4", "train.batch_size=32", "train.num_threads=2",
            "train.schedule.cosine_epochs=4", "train.schedule.milestones=[]", "export.parity_samples=16",
            f"benchmark.devices=[{', '.join(DEVICES)}]", "benchmark.warmup_runs=2", "benchmark.min_runs=10",
            "benchmark.min_duration_s=0", "benchmark.threads=[1]", "benchmark.samples=4",
            "benchmark.stream_workers=[]", "benchmark.litert_xnnpack=[true]",
            f"benchmark.accuracy.images={ACCURACY_IMAGES}", "benchmark.pipeline.resolutions=[[640, 360]]",
            "benchmark.pipeline.min_duration_s=0.1"]


@pytest.fixture(scope="module")
def board_project(board, tmp_path_factory):
    """The two baseline models, exported to ONNX and TFLite fp32 / full int8, benchmarked on this machine and on
    the board (both environments), with seed 000's pre-processing table on the board: the README's
    `./run.sh -S "benchmark.devices=[local, virtual-a53]"`, smaller."""
    project = cifar_project(tmp_path_factory, "board-project", SETTINGS)
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["models"] = {m: params["models"][m] for m in ("mobilenetv2-rgb", "mobilenetv2-yuv420")}
    params["artifacts"] = {a: params["artifacts"][a] for a in ARTIFACTS}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv",
       "results/pipeline/virtual-a53/table.csv", timeout=2400)
    return project


@pytest.mark.slow
def test_every_artifact_runs_on_the_board_with_the_hosts_accuracy(board_project):
    table = pd.read_csv(board_project / "results" / "summary.csv")
    assert len(table) == 2 * len(ARTIFACTS) * len(DEVICES)
    assert set(table[table["device"] == "local"]["device_kind"]) == {"host"}
    assert set(table[table["device"] != "local"]["device_kind"]) == {"emulated"}
    # tflite_runtime-only environment: no ONNX Runtime, as its inventory entry says
    no_ort = (table["device"] == "virtual-a53-tflite") & (table["runtime"] == "onnxruntime")
    assert no_ort.sum() == 2 and (table[no_ort]["status"] == "failed").all()
    assert table[no_ort]["reason"].str.startswith("runtime onnxruntime is not installed on virtual-a53-tflite").all()
    ran = table[~no_ort]
    assert (ran["status"] == "ok").all(), ran[ran["status"] != "ok"][["device", "artifact", "reason"]]
    assert (ran["latency_p50_ms"] > 0).all() and (ran["top1_device_images"] == ACCURACY_IMAGES).all()
    # On-device top-1 on 200 images: the host's for float models; int8 within the stated tolerance
    assert (ran["device_check"] == "ok").all(), ran[["device", "model", "artifact", "top1_device_delta"]]
    assert (ran[ran["precision"] == "fp32"]["top1_device_delta"] == 0).all()
    assert (ran["top1_host_same_images"] > 0.15).all()  # chance: 0.10
    bench = board_project / "results" / "bench" / "virtual-a53"
    for path in bench.glob("*/*.json"):
        result = json.loads(path.read_text())
        predictions = result.get("runs", [result])[0]["accuracy"]["predictions"]
        assert len(set(predictions)) >= 5, path  # the board's answers vary with the image
    for _, row in ran[ran["device"] != "local"].iterrows():
        print(f"{row['device']} {row['model']} {row['artifact']}: top-1 {row['top1_device']:.3f} on the board, "
              f"{row['top1_host_same_images']:.3f} on the host (delta {row['top1_device_delta']:+.3f}, "
              f"same class on {100 * row['device_agreement']:.1f} % of the images)")


@pytest.mark.slow
def test_board_results_carry_the_boards_facts(board_project):
    bench = board_project / "results" / "bench"
    a53 = json.loads((bench / "virtual-a53" / "mobilenetv2-yuv420" / "tflite-int8-full.json").read_text())
    run = a53["runs"][0]
    assert run["host"]["machine"] == "aarch64" and run["host"]["qemu_cpu"] == "cortex-a53"
    assert run["runtime"]["name"] == "litert" and run["settings"]["min_runs"] == 5  # benchmark.emulated
    tflite = json.loads((bench / "virtual-a53-tflite" / "mobilenetv2-rgb" / "tflite-fp32.json").read_text())
    run = tflite["runs"][0]
    assert run["runtime"]["version"] == "2.14.0" and run["versions"]["numpy"].startswith("1.")
    assert run["runtime"]["input_adaptations"]  # NCHW samples fed to the NHWC model on the board


@pytest.mark.slow
def test_preprocessing_table_on_the_board(board_project):
    table = pd.read_csv(board_project / "results" / "pipeline" / "virtual-a53" / "table.csv")
    assert (table["status"] == "ok").all() and (table["device_kind"] == "emulated").all()
    assert (table["rgb_latency_ms"] > 0).all() and (table["yuv_latency_ms"] > 0).all()
    result = json.loads((board_project / "results" / "pipeline" / "virtual-a53" / "pipeline.json").read_text())
    assert result["host"]["machine"] == "aarch64" and result["versions"]["cv2"]
    # the tflite_runtime-only environment cannot run the ONNX models of the table: a failed row, not a crash
    tflite = pd.read_csv(board_project / "results" / "pipeline" / "virtual-a53-tflite" / "table.csv")
    assert (tflite["status"] == "failed").all()
    assert tflite["reason"].str.startswith("runtime onnxruntime is not installed on virtual-a53-tflite").all()


# ----------------------------------------------------------------------------- the script itself
def board_script(*args, env=None, timeout=600):
    return subprocess.run(["bash", str(BOARD), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_a_missing_wheel_is_named_with_the_fix(board, tmp_path):
    """A pin with no aarch64 wheel for the board's Python: one line naming the package, the Python and the file.

    Runs on a copy of the script and of the cached root file system (hard links), so the board that is
    up is not touched: the failure comes before anything starts."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(BOARD, repo / "scripts")
    shutil.copytree(REPO / "envs", repo / "envs")
    (repo / "envs" / "board-tflite-runtime.txt").write_text("tflite-runtime==2.99.0\nnumpy==1.26.4\n")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["cp", "-al", str(board_state() / "rootfs"), str(state / "rootfs")], check=True)
    result = subprocess.run(["bash", str(repo / "scripts" / "virtual-board.sh"), "up"], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "VBOARD_DIR": str(state)})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and len(errors) == 1, result.stderr
    assert "no aarch64 wheel of tflite-runtime==2.99.0 for the board's Python 3.11" in errors[0]
    assert "envs/board-tflite-runtime.txt" in errors[0] and "Traceback" not in result.stderr
    assert not (state / "rootfs" / "opt" / "tflite-runtime").exists()  # no half-installed environment
    assert board_script("status").returncode == 0  # the running board is untouched


@pytest.mark.slow
def test_up_is_idempotent_and_down_leaves_nothing_behind(board):
    """Last in this module: it restarts the board (from the cache, in seconds)."""
    again = board_script("up")
    assert again.returncode == 0 and "already up" in again.stderr, again.stderr
    pids = [int((board_state() / "run" / f"sshd-{p}.pid").read_text()) for p in ("a53", "a72")]
    down = board_script("down")
    assert down.returncode == 0, down.stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), pids
    assert "vboard" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", "vboard-h"], capture_output=True).returncode != 0
    assert str(board_state()) not in Path("/proc/mounts").read_text()  # no chroot mount leaked to this machine
    status = board_script("status")
    assert status.returncode == 3, status.stdout + status.stderr
    start = time.monotonic()
    up = board_script("up")
    assert up.returncode == 0, up.stderr
    assert time.monotonic() - start < 120 and "up in" in up.stderr, up.stderr  # from the cache
    status = board_script("status")
    assert status.returncode == 0, status.stdout + status.stderr
