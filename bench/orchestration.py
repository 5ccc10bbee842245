"""Orchestration overhead as the matrix grows: a no-op `snakemake -n`, `dvc status` and the
state-recording step, on a finished project and on the same project trained with three seeds.

    .venv/bin/python bench/orchestration.py --project PATH [--repeats 3]

PATH is a finished project (./run.sh, or bench/pipeline.py, which calls this on its own fresh
project); it is measured on a copy and left as it is. Figures, each the median of --repeats runs:

* ``snakemake_dry_run_s``: `snakemake -n` of the default target, which must plan 0 jobs;
* ``dvc_status_s``: `dvc status` of the recorded project (clean);
* ``record_s``: what the Snakefile runs when a run that ran every stage ends (workflow.sync.record:
  dvc.yaml brought up to date, `dvc commit` of every stage), timed in-process as the handler runs
  it, the outputs already in the DVC cache (a rerun that reproduced the same files);
* ``record_new_s`` (once): the same after a run whose every output is new to DVC (its cache and
  dvc.lock removed first: every output is hashed and copied into the cache);
* ``record_branch_s``: the same after a run that retrained one model (its stages and the summary,
  paper tables and plots: what a changed model parameter reruns).

Each figure also has its CPU seconds (user + system of the command): on a shared machine they
are what the wall time would be on an idle one (every step runs on one core).

The 3x matrix is a copy of the project with ``seeds: [0, 1, 2]`` (every model instance ``m-seed<N>``,
with its own teacher and source) whose result files are copies of ``m``'s, marked up to date with
`snakemake --touch`. Writes
bench/results/orchestration.json; targets: each figure <= 3 s for the default matrix, <= 5 s for 3x.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow import layout  # noqa: E402
from workflow.io import write_json  # noqa: E402
from workflow.model_specs import instance_name  # noqa: E402

TARGET_S = {"default": 3.0, "3x": 5.0}
SEEDS = [0, 1, 2]
# Time workflow.sync.record as the Snakefile's handler runs it (in the Snakemake process, no new interpreter).
RECORD = ("import sys, time; from workflow.config import load_params; from workflow.dag import stages; "
          "from workflow.sync import record; params = load_params(); model = sys.argv[1]; "
          "done = [s.name for s in stages(params) if not model or model in s.wildcards.values() "
          "or s.rule.name in ('aggregate', 'paper_table', 'plots')]; "
          "start = time.perf_counter(); record(params, done, []); print(time.perf_counter() - start)")
BRANCH_MODEL = "mobilenetv2-rgb"  # record_branch_s: a run that retrained this model (and redid the summary)


def env():
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env())
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, cmd))} failed in {cwd}: {result.stderr.strip()[-500:]}")
    return result


def cpu_s():
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd, repeats):
    """(median wall seconds, median CPU seconds, output of the last run)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), cpu_s()
        result = run(cmd, cwd)
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_s() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), result.stdout + result.stderr


def record_s(project, repeats, model=""):
    """(median seconds of the recording step itself, median CPU seconds of the whole process) after a run
    of every stage, or of the stages of one ``model`` and the summary, paper tables and plots."""
    walls, cpus = [], []
    for _ in range(repeats):
        start_cpu = cpu_s()
        walls.append(float(run([sys.executable, "-c", RECORD, model], project).stdout.split()[-1]))
        cpus.append(cpu_s() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure_one(project, repeats, matrix):
    """The figures of one finished project (its outputs recorded by DVC on the way)."""
    for item in (project / "dvc.lock", project / ".dvc" / "cache"):
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
    first, first_cpu = record_s(project, 1)  # every output new to DVC
    dry_run_s, dry_run_cpu, out = timed([sys.executable, "-m", "snakemake", "--cores", "2", "-n"], project, repeats)
    if "Nothing to be done" not in out:
        raise SystemExit(f"error: {project}: the pipeline is not finished (the dry run has jobs to do); "
                         "run ./run.sh first")
    status_s, status_cpu, out = timed([sys.executable, "-m", "dvc", "status", "--json"], project, repeats)
    if out.strip() not in ("{}", ""):
        raise SystemExit(f"error: {project}: dvc status is not clean after recording: {out[:300]}")
    params = yaml.safe_load((project / layout.PARAMS).read_text())
    record, record_cpu = record_s(project, repeats)
    branch_model = BRANCH_MODEL if matrix == "default" else instance_name(BRANCH_MODEL, SEEDS[0], SEEDS)
    branch, branch_cpu = record_s(project, repeats, branch_model)
    figures = {"snakemake_dry_run_s": dry_run_s, "dvc_status_s": status_s, "record_s": record, "record_new_s": first,
               "record_branch_s": branch}
    stages = len(yaml.safe_load((project / layout.DVC_YAML).read_text())["stages"])
    # CPU seconds of the whole command (interpreter start included): on a loaded machine, what idle wall time is near
    cpu = {"snakemake_dry_run_cpu_s": dry_run_cpu, "dvc_status_cpu_s": status_cpu, "record_process_cpu_s": record_cpu,
           "record_new_process_cpu_s": first_cpu, "record_branch_process_cpu_s": branch_cpu}
    return {**figures, **cpu, "models": len(params["models"]) * len(params.get("seeds", [0])), "dvc_stages": stages,
            "output_mb": sum(f.stat().st_size for d in ("data", "results") for f in (project / d).rglob("*")
                             if f.is_file()) / 1e6,
            "target_s": TARGET_S[matrix], "meets_target": all(v <= TARGET_S[matrix] for v in figures.values())}


def triple_project(project, dest):
    """A copy of the finished project trained with three seeds, each seed's results copied from the originals'."""
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    params = yaml.safe_load((dest / layout.PARAMS).read_text())
    devices = params["benchmark"]["devices"]
    folders = lambda model: [layout.model_dir(model), f"{layout.RESULTS}/artifacts/{model}",  # noqa: E731
                             f"{layout.RESULTS}/eval/{model}", *(f"{layout.RESULTS}/bench/{d}/{model}" for d in devices)]
    for model in params["models"]:
        for i, folder in enumerate(folders(model)):
            if (dest / folder).is_dir():
                for seed in SEEDS:
                    shutil.copytree(dest / folder, dest / folders(instance_name(model, seed, SEEDS))[i])
                shutil.rmtree(dest / folder)
    (dest / layout.PARAMS).write_text(yaml.safe_dump({**params, "seeds": SEEDS}, sort_keys=False))
    run([sys.executable, "-m", "workflow.dag"], dest)
    run([sys.executable, "-m", "snakemake", "--cores", "1", "--touch", "--quiet", "all"], dest)
    return dest


def measure(project, repeats):
    """Both matrices, each on a copy (the project itself is left as it is)."""
    with tempfile.TemporaryDirectory(prefix="orchestration.") as tmp:
        default = Path(tmp) / "default"
        shutil.copytree(project, default, symlinks=True)
        result = {"default": measure_one(default, repeats, "default"),
                  "3x": measure_one(triple_project(default, Path(tmp) / "3x"), repeats, "3x")}
    return {**result, "repeats": repeats, "meets_targets": all(r["meets_target"] for r in result.values()),
            "cpu_count": os.cpu_count(), "load_average_1_5_15_at_end": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", required=True, help="a finished project (./run.sh has run in it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--note", default="", help="machine_note: what else ran on the machine")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "orchestration.json"))
    args = p.parse_args()
    result = measure(args.project, args.repeats)
    write_json(args.out, {**result, "machine_note": args.note})
    for matrix in ("default", "3x"):
        r = result[matrix]
        print(f"{matrix} ({r['dvc_stages']} DVC stages): snakemake -n {r['snakemake_dry_run_s']:.2f} s, dvc status "
              f"{r['dvc_status_s']:.2f} s, recording {r['record_s']:.2f} s (all outputs new: "
              f"{r['record_new_s']:.2f} s, one model's branch: {r['record_branch_s']:.2f} s) "
              f"-> target <= {r['target_s']} s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
