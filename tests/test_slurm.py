"""The DAG on a real single-node Slurm cluster through profiles/slurm (snakemake-executor-plugin-slurm).

The test writes /etc/slurm/slurm.conf (the plugin removes SLURM_* variables, so SLURM_CONF
cannot point elsewhere), starts munged, slurmctld and slurmd, runs both pack stages + one short
training through sbatch, then a data-parallel training as one job of 2 tasks started by srun
(gloo), and stops the daemons by their PIDs. Needs root and Debian's slurm-wlm and munge
(scripts/ci-deps.sh installs them).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_project, tiny_params, write_params

pytestmark = pytest.mark.slow

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by edge-vision-repro tests/test_slurm.py"
TARGET = "results/models/mobilenetv2-rgb/train_metrics.json"


def missing_requirements():
    absent = [d for d in DAEMONS if not os.path.exists(d)] + [t for t in ("sbatch", "squeue", "sinfo")
                                                               if shutil.which(t) is None]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)}); run scripts/ci-deps.sh"
    if os.geteuid() != 0:
        return "starting munged/slurmctld/slurmd needs root"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to a real cluster configuration; not overwriting it"
    return None


def slurm_conf(state):
    host = socket.gethostname().split(".")[0]
    mem_mb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                      if l.startswith("MemTotal")).split()[1]) // 1024
    return f"""{MARKER}
ClusterName=evrtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(mem_mb * 0.8)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pid):
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (state / sub).mkdir()
    wrote_conf = not SLURM_CONF.exists()
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf(state))
    started = []
    try:
        munge_pidfile = Path("/run/munge/munged.pid")
        if not (read_pid(munge_pidfile) and alive(read_pid(munge_pidfile))):
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            wait_for(lambda: read_pid(munge_pidfile), 10, "munged")
            started.append(munge_pidfile)
        subprocess.run(["/usr/sbin/slurmctld", "-i"], check=True)
        started.append(state / "slurmctld.pid")
        wait_for(lambda: read_pid(state / "slurmctld.pid"), 20, "slurmctld")
        subprocess.run(["/usr/sbin/slurmd"], check=True)
        started.append(state / "slurmd.pid")
        wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
                 .stdout.strip() == "idle", 60, "the node to become idle")
        yield state
    finally:
        for pidfile in reversed(started):  # slurmd, slurmctld, then munged: each by its own PID
            stop(read_pid(pidfile))
        if wrote_conf:
            SLURM_CONF.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("slurm-project")
    copy_project(project)
    write_params(project / "params.yaml", tiny_params())
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]):
        subprocess.run(["git", *command], cwd=project, check=True)  # a clone: DVC records the run into it
    return project


def test_profile_names_existing_rules_and_defaults():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    rules = set(subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split())
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    assert {"cpus_per_task", "mem_mb", "runtime"} <= set(profile["default-resources"])
    assert "gpu" not in profile["set-resources"]["train"]  # the rule asks for one GPU per training process


def run_profile(project, *overrides):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    # The test node has no GPU: the only change to the profile is train's gpu request.
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks",
         "1", "--set-resources", "train:gpu=0", *overrides, "--jobs", "2", TARGET],
        cwd=project, capture_output=True, text=True, env=env, timeout=300)


def test_small_dag_runs_through_sbatch(cluster, project):
    start = time.time()
    result = run_profile(project)
    elapsed = time.time() - start
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # pack_train, pack (the model's format), train
    assert output.count("has been submitted with SLURM jobid") == 3, output[-3000:]
    metrics = json.loads((project / TARGET).read_text())
    assert metrics["model"] == "mobilenetv2-rgb" and 0.0 <= metrics["top1"] <= 1.0
    # slurmctld allocated and completed every job on this node
    ctld_log = (cluster / "slurmctld.log").read_text()
    assert ctld_log.count("sched: Allocate JobId=") >= 3, ctld_log[-2000:]
    assert ctld_log.count("done") >= 3 or ctld_log.count("WEXITSTATUS 0") >= 3, ctld_log[-2000:]
    # the submitting Snakemake recorded the stages in DVC (one state), not the jobs inside Slurm
    assert "DVC recorded 3 completed stage(s)" in output
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {"pack-train", "pack-rgb", "train-mobilenetv2-rgb"} <= set(lock), set(lock)
    print(f"pack_train, pack + train through sbatch: {elapsed:.0f} s")


def test_data_parallel_training_is_one_job_of_two_srun_tasks(cluster, project):
    """train.processes_per_node: 2 -> one sbatch job with 2 tasks; srun starts both DDP processes (gloo)."""
    write_params(project / "params.yaml", tiny_params(train={"processes_per_node": 2, "num_threads": 1,
                                                             "device": "cpu"}))
    (project / TARGET).unlink(missing_ok=True)
    # the node has 2 CPUs: one per task
    result = run_profile(project, "--set-resources", "train:cpus_per_task=1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    metrics = json.loads((project / TARGET).read_text())
    # both processes joined one gloo group, each started by srun as a Slurm task (SLURM_PROCID 0 and 1)
    assert metrics["world_size"] == 2 and metrics["launcher"] == "srun", metrics
    log = (project / "logs/train/mobilenetv2-rgb.log").read_text()
    assert "epoch 1/1" in log and "torch.distributed.run" not in log, log[-2000:]
    last_job = (cluster / "slurmctld.log").read_text().split("_slurm_rpc_submit_batch_job")[-1]
    assert "WEXITSTATUS 0" in last_job, last_job
