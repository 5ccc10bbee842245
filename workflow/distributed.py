"""Data-parallel training (PyTorch DDP): launching the processes of one training job and joining them.

World size = ``train.processes_per_node`` x ``train.nodes`` (params.yaml): one process per GPU with CUDA
(backend NCCL), or that many CPU processes (backend gloo). The train stage's command comes from
:func:`launch_command`: ``python -m workflow.train ...`` for one process, else

    python -m workflow.distributed --nproc-per-node N --nnodes M --threads T -m workflow.train ...

which, when it runs,

* inside a Slurm allocation (``SLURM_JOB_ID`` set; profiles/slurm submits the job with N x M tasks),
  starts one task per process with ``srun`` (Slurm's own launcher; each task reads its rank from
  ``SLURM_PROCID``/``SLURM_LOCALID`` and the first host of ``SLURM_STEP_NODELIST`` as the rendezvous);
* otherwise starts ``torchrun --standalone --nproc-per-node N`` on this machine (M = 1), or, for M > 1,
  torchrun with a c10d rendezvous at ``MASTER_ADDR:MASTER_PORT``: the same command is then started on
  every node.

Each process reads its place with :func:`world_from_env`, which checks that the world it was started in
is the one params.yaml asks for, and joins the process group with :func:`init_group`.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

from workflow.config import load_params
from workflow.errors import UserError, cli, positive_int

RENDEZVOUS_PORT = 29500


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0


SINGLE = World()


def world_size(train):
    return train["processes_per_node"] * train["nodes"]


def launch_command(train, module, args):
    """The shell command that runs ``python -m <module> <args>`` with params.yaml's world size."""
    if world_size(train) == 1:
        return f"python -m {module} {args}"
    return (f"python -m workflow.distributed --nproc-per-node {train['processes_per_node']} "
            f"--nnodes {train['nodes']} --threads {train['num_threads']} -m {module} {args}")


def job_resources(train):
    """Snakemake resources of a training job, as snakemake-executor-plugin-slurm reads them: the GPUs (one per
    process when train.device is cuda; ``auto`` asks for none and uses one where it lands) and, for several
    processes, the tasks and nodes of the allocation and ``mpi`` (the job's command starts its own tasks with
    srun, so the plugin does not wrap it in a one-task ``srun``)."""
    size = world_size(train)
    gpus = size if train["device"] == "cuda" else 0
    if size == 1:
        return {"gpu": gpus}
    return {"gpu": gpus, "mpi": "srun", "tasks": size, "nodes": train["nodes"],
            **({"tasks_per_gpu": 1} if gpus else {})}


def launcher_argv(nproc_per_node, nnodes, threads, module, args, environ=os.environ):
    """The command line of the launcher that starts the processes here: srun or torchrun."""
    if environ.get("SLURM_JOB_ID"):
        if shutil.which("srun") is None:
            raise UserError("SLURM_JOB_ID is set but srun is not on PATH: run training inside the Slurm job's "
                            "environment")
        return ["srun", f"--nodes={nnodes}", f"--ntasks={nproc_per_node * nnodes}",
                f"--ntasks-per-node={nproc_per_node}", f"--cpus-per-task={threads}", "--kill-on-bad-exit=1",
                sys.executable, "-m", module, *args]
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        return [*run, "--standalone", "-m", module, *args]
    if not environ.get("MASTER_ADDR"):
        raise UserError(f"params.yaml: key 'train.nodes': got {nnodes}; outside Slurm, start this command on every "
                        "node with MASTER_ADDR (and MASTER_PORT) set to the first node's address")
    endpoint = f"{environ['MASTER_ADDR']}:{environ.get('MASTER_PORT', RENDEZVOUS_PORT)}"
    return [*run, f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={environ.get('TORCHRUN_RDZV_ID', 'edge-vision-repro')}", "-m", module, *args]


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _first_host(nodelist):
    """The first host name of a Slurm node list (``node[01-04]``), through scontrol as Slurm expands it."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return socket.gethostname()


def _rank_from_slurm(environ):
    """An srun task (started by the launcher, which set WORLD_SIZE): its rank and the rendezvous from Slurm."""
    environ["RANK"], environ["LOCAL_RANK"] = environ["SLURM_PROCID"], environ.get("SLURM_LOCALID", "0")
    if not environ.get("MASTER_ADDR"):
        environ["MASTER_ADDR"] = _first_host(environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_NODELIST", ""))
    environ.setdefault("MASTER_PORT", str(RENDEZVOUS_PORT + int(environ.get("SLURM_JOB_ID", "0")) % 20000))


def world_from_env(train, environ=os.environ):
    """This process's World, from the launcher's environment; checks it has params.yaml's world size."""
    expected = world_size(train)
    started = int(environ.get("WORLD_SIZE", "1"))
    if started != expected:
        how = (f"start it with `{launch_command(train, 'workflow.train', '...')}`" if started == 1
               else f"this process was started as one of {started}")
        raise UserError(f"params.yaml: keys 'train.processes_per_node' x 'train.nodes' ask for {expected} training "
                        f"processes; {how}")
    if expected == 1:
        return SINGLE
    if "RANK" not in environ and "SLURM_PROCID" in environ:
        _rank_from_slurm(environ)
    return World(int(environ["RANK"]), expected, int(environ.get("LOCAL_RANK", "0")))


def launcher(world, environ=os.environ):
    """What started this process's world: srun, torchrun, or nothing (one process)."""
    if world.size == 1:
        return None
    return "srun" if "SLURM_PROCID" in environ and "TORCHELASTIC_RUN_ID" not in environ else "torchrun"


def init_group(world, device):
    """Join the process group (NCCL for CUDA devices, gloo otherwise); nothing for one process."""
    if world.size == 1:
        return
    import torch  # here, not at the top: planning the DAG (launch_command, job_resources) loads no torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size,
                            timeout=timedelta(minutes=30))


def leave(world):
    import torch.distributed as dist

    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world):
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(world, values, device):
    """Element-wise sums of a list of numbers over all processes (the list itself for one process)."""
    if world.size == 1:
        return list(values)
    import torch
    import torch.distributed as dist

    on = device if device.type == "cuda" else torch.device("cpu")  # NCCL reduces CUDA tensors only
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(tensor)
    return tensor.tolist()


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description="Start the processes of one data-parallel training job.",
                                     usage="%(prog)s --nproc-per-node N [--nnodes M] [--threads T] -m MODULE [ARGS ...]")
    parser.add_argument("--nproc-per-node", type=positive_int, required=True)
    parser.add_argument("--nnodes", type=positive_int, default=1)
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads per process")
    parser.add_argument("-m", dest="module", required=True, help="the module every process runs; the arguments "
                        "after it are the module's")
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("-m") + 2 if "-m" in argv else len(argv)  # as python -m: the rest belongs to the module
    args = parser.parse_args(argv[:split])
    args.args = argv[split:]
    if "--params" in args.args:  # a mistake in params.yaml is one line here, before any process starts
        load_params(args.args[args.args.index("--params") + 1])
    argv = launcher_argv(args.nproc_per_node, args.nnodes, args.threads, args.module, args.args)
    env = {**os.environ, "WORLD_SIZE": str(args.nproc_per_node * args.nnodes), "OMP_NUM_THREADS": str(args.threads)}
    if argv[0] == "srun":
        env.setdefault("MASTER_PORT", str(_free_port()))
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)  # the launcher replaces this process: signals reach it directly


if __name__ == "__main__":
    main()
