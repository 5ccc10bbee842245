"""The default pipeline's wall time and peak memory on this machine, from a fresh copy of the repository.

    .venv/bin/python bench/pipeline.py [--cores 2] [--data-path DIR_OR_NPZ] [--detection-path DIR_OR_ZIP]
    .venv/bin/python bench/pipeline.py --detection [--cores 2]

Copies the tracked files into a temporary project with params.yaml as it is (CIFAR-10 by the
torchvision download, COCO128 by ultralytics'), or with the sources given (offline: a folder
holding cifar-10-python.tar.gz or an .npz of at least 5000/1000 CIFAR-10 images, and a COCO128
folder or zip; what ./run.sh -S data.path=... does), runs `snakemake --cores N` (the default
target: summary, paper tables, plots, as ./run.sh) and records the wall time and the peak
resident memory of the largest process of the run (RUSAGE_CHILDREN). Then it measures the
orchestration overhead on that finished project (bench/orchestration.py). Writes
bench/results/pipeline.json and bench/results/orchestration.json; targets: <= 15 min, <= 4 GB.

With --detection it runs the detection track's target instead (results/detection/summary.csv,
the small configuration on COCO128) and writes bench/results/pipeline-detection.json with the
wall time of each rule; target: <= 30 min on 2 cores.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orchestration  # noqa: E402
from workflow.io import write_json  # noqa: E402

TARGET_S, TARGET_GB = 15 * 60, 4.0
DETECTION_TARGET_S = 30 * 60


def copy_project(dest):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
                   cwd=dest, check=True)


def rule_seconds(project):
    """Summed run time per rule, from Snakemake's per-output metadata (one entry per job)."""
    jobs = {}
    for path in (project / ".snakemake" / "metadata").iterdir():
        record = json.loads(path.read_text())
        if record.get("starttime") and record.get("endtime"):
            jobs[(record["rule"], record["job_hash"])] = record["endtime"] - record["starttime"]
    totals = {}
    for (rule, _), seconds in jobs.items():
        totals[rule] = totals.get(rule, 0.0) + seconds
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--data-path", help="data.path: a CIFAR-10 folder or .npz (default: params.yaml's)")
    p.add_argument("--detection-path", help="detection.data.path: a COCO128 folder or .zip (default: params.yaml's)")
    p.add_argument("--detection", action="store_true", help="time results/detection/summary.csv instead")
    p.add_argument("--keep", action="store_true", help="keep the temporary project and print its path")
    p.add_argument("--machine-note", default="", help="how busy the machine was (recorded as machine_note)")
    args = p.parse_args()
    targets, target_s = (["results/detection/summary.csv"], DETECTION_TARGET_S) if args.detection else ([], TARGET_S)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    project = Path(tempfile.mkdtemp(prefix="pipeline-bench."))
    try:
        copy_project(project)
        settings = [f"{key}={path}" for key, path in (("data.path", args.data_path),
                                                      ("detection.data.path", args.detection_path)) if path]
        settings += ["detection.enabled=true"] if args.detection else []
        if settings:
            subprocess.run([sys.executable, "-m", "workflow.set_params", *settings], cwd=project, check=True, env=env,
                           capture_output=True)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), *targets],
                             cwd=project, env=env, capture_output=True, text=True)
        wall_s = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(f"error: the pipeline failed in {project}:\n{run.stderr[-3000:]}")
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        jobs = run.stderr.count("Finished jobid")
        result = {"target": targets[0] if targets else "default", "cores": args.cores, "jobs": jobs,
                  "wall_s": wall_s, "wall_min": wall_s / 60, "rule_seconds": rule_seconds(project),
                  "peak_rss_gb": peak_gb, "targets": {"wall_s": target_s, "peak_rss_gb": TARGET_GB},
                  "meets_targets": wall_s <= target_s and peak_gb <= TARGET_GB,
                  "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                  # other work on the machine inflates the wall time: the load average says how much
                  "load_average_1_5_15_at_end": os.getloadavg(), "machine_note": args.machine_note}
        name = "pipeline-detection" if args.detection else "pipeline"
        write_json(ROOT / "bench" / "results" / f"{name}.json", result)
        print(f"{result['target']} pipeline: {jobs} jobs in {wall_s / 60:.1f} min on {args.cores} cores, "
              f"peak RSS {peak_gb:.2f} GB")
        if args.detection:
            return
        orchestration_result = orchestration.measure(project, 3)
        write_json(ROOT / "bench" / "results" / "orchestration.json",
                   {**orchestration_result, "machine_note": f"measured right after this pipeline run, same machine: "
                                                              f"{args.machine_note}"})
        print(f"orchestration: {orchestration_result}")
    finally:
        if args.keep:
            print(f"project kept at {project}")
        else:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
