import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_one_line_error, run_module, tiny_params, write_params
from workflow.train import model_train_config
from workflow.training import lr_at


def test_mixed_schedule_cosine_then_steps():
    train = {"lr": 0.1, "schedule": {"cosine_epochs": 4, "cosine_final_ratio": 0.1, "milestones": [6, 8],
                                     "gamma": 0.1}}
    lrs = [lr_at(e, train) for e in range(10)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3] > lrs[4]
    assert lrs[4] == lrs[5] == pytest.approx(0.01)
    assert lrs[6] == pytest.approx(0.001) and lrs[8] == pytest.approx(0.0001)


def test_a_model_may_set_its_own_schedule():
    params = tiny_params()
    spec = {**params["models"]["mobilenetv2-rgb"], "epochs": 4,
            "schedule": {"cosine_epochs": 4, "cosine_final_ratio": 0.1, "milestones": [], "gamma": 0.1}}
    cfg = model_train_config(params, spec)
    assert cfg["epochs"] == 4 and cfg["schedule"] == spec["schedule"]
    assert cfg["batch_size"] == params["train"]["batch_size"]
    assert lr_at(3, cfg) == pytest.approx(cfg["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 4))))
    assert model_train_config(params, params["models"]["mobilenetv2-rgb"])["schedule"] == params["train"]["schedule"]


def test_training_metrics_and_provenance(trained):
    for model, folder in trained.items():
        metrics = json.loads((folder / "train_metrics.json").read_text())
        assert metrics["model"] == model and metrics["epochs"] == 1
        assert 0.0 <= metrics["top1"] <= 1.0 and len(metrics["per_class_top1"]) == 10
        prov = metrics["provenance"]
        assert prov["git_commit"] and len(prov["params_hash"]) == 16
        assert prov["packages"]["torch"].startswith("2.") and prov["host"]["cpu_count"] >= 1
        assert (folder / "history.csv").read_text().startswith("epoch,lr,train_loss")


def test_same_seed_gives_identical_results(tmp_path, packed_dir, trained):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    run_module("train", "--params", params, "--model", "mobilenetv2-yuv420", "--data", packed_dir,
               "--out", tmp_path / "m", "--checkpoints", tmp_path / "ckpt", check=True)
    first = json.loads((trained["mobilenetv2-yuv420"] / "train_metrics.json").read_text())
    again = json.loads((tmp_path / "m" / "train_metrics.json").read_text())
    for key in ("top1", "loss", "per_class_top1", "model_sha256"):
        assert first[key] == again[key], key
    assert (tmp_path / "m" / "history.csv").read_text() == \
        (trained["mobilenetv2-yuv420"] / "history.csv").read_text()


@pytest.mark.slow
def test_kill_during_training_then_resume_matches_uninterrupted(tmp_path, packed_dir):
    params = tiny_params(train={"epochs": 3})
    params["train"]["schedule"].update(cosine_epochs=2, milestones=[3])
    params_path = write_params(tmp_path / "params.yaml", params)
    args = ["--params", params_path, "--model", "mobilenetv2-rgb", "--data", packed_dir]
    run_module("train", *args, "--out", tmp_path / "straight", "--checkpoints", tmp_path / "ck1", check=True)

    cmd = [sys.executable, "-m", "workflow.train", *map(str, args), "--out", str(tmp_path / "resumed"),
           "--checkpoints", str(tmp_path / "ck2")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / "ck2").glob("epoch-0001.pt.sha256")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through epoch 3
    proc.wait()
    assert not (tmp_path / "resumed" / "train_metrics.json").exists()
    result = run_module("train", *args, "--out", tmp_path / "resumed", "--checkpoints", tmp_path / "ck2",
                        check=True)
    assert "resuming mobilenetv2-rgb from epoch" in result.stdout
    straight = json.loads((tmp_path / "straight" / "train_metrics.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "train_metrics.json").read_text())
    for key in ("top1", "loss", "per_class_top1", "model_sha256"):
        assert straight[key] == resumed[key], key


def test_corrupt_checkpoint_is_reported_not_trained_over(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(train={"epochs": 2}))
    ckpt = tmp_path / "ckpt"
    args = ["--params", params, "--model", "mobilenetv2-rgb", "--data", packed_dir, "--out", tmp_path / "m",
            "--checkpoints", ckpt]
    run_module("train", *args, check=True)
    newest = sorted(ckpt.glob("epoch-*.pt"))[-1]
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    newest.write_bytes(bytes(blob))
    before = newest.read_bytes()
    assert_one_line_error(run_module("train", *args), str(newest), "checksum mismatch")
    assert newest.read_bytes() == before


def test_unknown_model_name(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params())
    result = run_module("train", "--params", params, "--model", "resnet-rgb", "--data", packed_dir,
                        "--out", tmp_path / "m")
    assert_one_line_error(result, "no model named 'resnet-rgb'")
