"""Data-parallel training (DDP, gloo on the CPU): the launcher, the world-size check, and 2 processes that
resume after kill -9 with exactly the result of an uninterrupted run, like one process does."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, run_module, tiny_params, write_params
from workflow.distributed import job_resources, launch_command, launcher_argv, world_from_env
from workflow.errors import UserError

TRAIN = {"processes_per_node": 2, "nodes": 1, "num_threads": 1, "device": "cpu"}


def test_one_process_is_the_plain_command_and_more_go_through_the_launcher():
    assert launch_command({**TRAIN, "processes_per_node": 1}, "workflow.train", "--model m") == \
        "python -m workflow.train --model m"
    assert launch_command(TRAIN, "workflow.train", "--model m") == \
        "python -m workflow.distributed --nproc-per-node 2 --nnodes 1 --threads 1 -m workflow.train --model m"


def test_launcher_is_torchrun_here_and_srun_inside_a_slurm_job(tmp_path):
    argv = launcher_argv(2, 1, 1, "workflow.train", ["--model", "m"], environ={})
    assert argv[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in argv and argv[-3:] == \
        ["workflow.train", "--model", "m"]
    fake_srun = tmp_path / "srun"
    fake_srun.write_text("#!/bin/sh\n")
    fake_srun.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    os.environ["PATH"], old_path = path, os.environ["PATH"]
    try:
        argv = launcher_argv(2, 2, 3, "workflow.train", [], environ={"SLURM_JOB_ID": "7"})
    finally:
        os.environ["PATH"] = old_path
    assert argv[0] == "srun" and "--ntasks=4" in argv and "--ntasks-per-node=2" in argv and "--nodes=2" in argv
    assert "--cpus-per-task=3" in argv
    with pytest.raises(UserError, match="train.nodes.*MASTER_ADDR"):
        launcher_argv(2, 2, 1, "workflow.train", [], environ={})
    multi = launcher_argv(2, 2, 1, "workflow.train", [], environ={"MASTER_ADDR": "10.0.0.1"})
    assert "--nnodes=2" in multi and "--rdzv-endpoint=10.0.0.1:29500" in multi


def test_slurm_resources_follow_the_world_size():
    assert job_resources({**TRAIN, "processes_per_node": 1}) == {"gpu": 0}
    assert job_resources(TRAIN) == {"gpu": 0, "mpi": "srun", "tasks": 2, "nodes": 1}
    assert job_resources({**TRAIN, "device": "cuda", "nodes": 2}) == \
        {"gpu": 4, "mpi": "srun", "tasks": 4, "nodes": 2, "tasks_per_gpu": 1}


def test_srun_task_reads_its_rank_from_slurm():
    env = {"WORLD_SIZE": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "12",
           "MASTER_ADDR": "node1"}
    world = world_from_env(TRAIN, env)
    assert (world.rank, world.size, world.local_rank) == (1, 2, 1) and env["MASTER_PORT"] == str(29500 + 12)


def test_train_started_as_one_process_for_two_names_the_launcher(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(train={"processes_per_node": 2}))
    result = run_module("train", "--params", params, "--model", "mobilenetv2-rgb", "--data", packed_dir,
                        "--out", tmp_path / "m")
    assert_one_line_error(result, "train.processes_per_node", "python -m workflow.distributed --nproc-per-node 2")


def test_global_batch_must_split_evenly(tmp_path, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(train={"processes_per_node": 2, "batch_size": 63}))
    result = run_module("distributed", "--nproc-per-node", "2", "-m", "workflow.train", "--params", params,
                        "--model", "mobilenetv2-rgb", "--data", packed_dir, "--out", tmp_path / "m")
    assert_one_line_error(result, "key 'train.batch_size': got 63, expected a multiple of the 2 training processes")


def ddp_train(params, packed_dir, out, ckpt, **popen):
    cmd = [sys.executable, "-m", "workflow.distributed", "--nproc-per-node", "2", "--threads", "1", "-m",
           "workflow.train", "--params", str(params), "--model", "mobilenetv2-rgb", "--data", str(packed_dir),
           "--out", str(out), "--checkpoints", str(ckpt)]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, **popen)
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def descendants(pid):
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            children += [int(child), *descendants(int(child))]
    return children


@pytest.mark.slow
def test_two_gloo_processes_resume_after_kill_with_the_uninterrupted_result(tmp_path, packed_dir):
    params = tiny_params(train={"epochs": 2, "processes_per_node": 2, "num_threads": 1})
    params["train"]["schedule"].update(cosine_epochs=2, milestones=[])
    params = write_params(tmp_path / "params.yaml", params)
    ddp_train(params, packed_dir, tmp_path / "straight", tmp_path / "ck1")

    proc = ddp_train(params, packed_dir, tmp_path / "resumed", tmp_path / "ck2", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "ck2" / "epoch-0000.pt.sha256").exists() and time.time() < deadline:
        time.sleep(0.2)
    for pid in [proc.pid, *descendants(proc.pid)]:  # the launcher and both workers, as a node failure would
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "resumed" / "train_metrics.json").exists()
    result = ddp_train(params, packed_dir, tmp_path / "resumed", tmp_path / "ck2")
    assert "resuming mobilenetv2-rgb from epoch 1" in result.stdout

    straight = json.loads((tmp_path / "straight" / "train_metrics.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "train_metrics.json").read_text())
    assert straight["world_size"] == 2 and straight["launcher"] == "torchrun"
    for key in ("top1", "loss", "per_class_top1", "model_sha256"):
        assert straight[key] == resumed[key], key
    assert (tmp_path / "straight" / "history.csv").read_text() == (tmp_path / "resumed" / "history.csv").read_text()
    # the model file is the one-process format: it exports like any other
    export = run_module("export", "--params", params, "--checkpoint", tmp_path / "straight" / "model.pt",
                        "--packed", packed_dir / "rgb" / "test.npy", "--out", tmp_path / "m.onnx", check=True)
    assert export.returncode == 0 and (tmp_path / "m.onnx").stat().st_size > 0
