"""Orchestration overhead: `snakemake -n`, a no-op rerun and `dvc status` on a finished project.

    .venv/bin/python bench/orchestration.py [--project .] [--repeats 3]

Run it after the pipeline has finished (./run.sh, or bench/pipeline.py, which calls it on its
own fresh project). Each command is timed --repeats times; the median is reported. The no-op
rerun must schedule 0 jobs; `dvc status` is timed after `dvc commit` so it compares hashes
of a versioned workspace. Writes bench/results/orchestration.json; target: each <= 3 s.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.io import write_json  # noqa: E402

TARGET_S = 3.0


def timed(cmd, cwd, repeats):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed in {cwd}: {result.stderr.strip()[-300:]}")
    return statistics.median(times), result.stdout + result.stderr


def measure(project, repeats):
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]  # the default target, as ./run.sh
    dry_run_s, _ = timed(snakemake + ["-n"], project, repeats)
    noop_s, noop_out = timed(snakemake, project, repeats)
    if "Nothing to be done" not in noop_out:
        raise SystemExit(f"error: {project}: the pipeline is not finished (the rerun had jobs to do); "
                         "run ./run.sh first")
    timed([sys.executable, "-m", "dvc", "commit", "-f", "-q"], project, 1)
    dvc_status_s, _ = timed([sys.executable, "-m", "dvc", "status"], project, repeats)
    figures = {"snakemake_dry_run_s": dry_run_s, "snakemake_noop_rerun_s": noop_s, "dvc_status_s": dvc_status_s}
    return {**figures, "repeats": repeats, "target_s": TARGET_S,
            "meets_target": all(v <= TARGET_S for v in figures.values())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", default=str(ROOT))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "orchestration.json"))
    args = p.parse_args()
    result = measure(args.project, args.repeats)
    write_json(args.out, result)
    print(f"snakemake -n {result['snakemake_dry_run_s']:.2f} s, no-op rerun {result['snakemake_noop_rerun_s']:.2f} s, "
          f"dvc status {result['dvc_status_s']:.2f} s (target <= {TARGET_S} s) -> {args.out}")


if __name__ == "__main__":
    main()
