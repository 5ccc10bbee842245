"""One state for Snakemake and DVC: each tool's finished work is current for the other.

Snakemake -> DVC (:func:`record`, called by the Snakefile when a run ends, done or failed):
dvc.yaml is brought up to date with params.yaml and `dvc commit` records exactly the stages
whose jobs are complete (keeping the outputs' timestamps), so dvc.lock holds their
dependencies, params and outputs and the outputs are in the DVC cache; `dvc status` then
lists only what did not run, and a `dvc repro` after a params change reruns only the stages
it affects.

DVC -> Snakemake (``python -m workflow.sync``, after dvc checkout / pull / repro / exp apply):
DVC writes files in its own order and resets their timestamps (treeverse/dvc#8602), so
Snakemake would rerun finished work. When `dvc status` confirms that every output matches
params.yaml and its dependencies by hash, this marks Snakemake's jobs up to date
(`snakemake --touch`) without running anything.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from workflow import layout
from workflow.config import load_params
from workflow.dag import CHECK_MARKER, CHECK_STAGE, dvc_yaml, stages
from workflow.errors import UserError, cli
from workflow.io import write_text


def dvc(*args):
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def last_line(result):
    return (result.stderr.strip() or result.stdout.strip() or "?").splitlines()[-1]


def file_times(paths):
    """{path: (atime, mtime) in ns} of the files and folders given and of everything inside the folders,
    innermost first."""
    times = {}
    for path in map(Path, paths):
        inside = sorted(path.rglob("*"), key=lambda p: -len(p.parts)) if path.is_dir() else []
        for item in [*inside, path]:
            if item.exists():
                times[item] = (item.stat().st_atime_ns, item.stat().st_mtime_ns)
    return times


def record(params, completed):
    """DVC records the ``completed`` stages (complete in Snakemake's view): dvc.lock and the DVC cache.

    `dvc commit` rewrites each output from the cache with a new timestamp, in its own order; the
    timestamps are put back, so Snakemake still sees every job as done. Never fails the run that
    calls it: without a DVC repository (or when DVC refuses) it says so in one line."""
    names = [stage.name for stage in completed]
    if not names:
        return
    if not Path(".dvc").is_dir():
        print(f"warning: no DVC repository here (.dvc/): {len(names)} completed stages not recorded", file=sys.stderr)
        return
    text = dvc_yaml(params)
    if not Path(layout.DVC_YAML).exists() or Path(layout.DVC_YAML).read_text() != text:
        write_text(layout.DVC_YAML, text)
    write_text(layout.DVC_YAML_CHECK, CHECK_MARKER)  # what the check stage writes: dvc.yaml is current
    times = file_times(f for stage in completed for f in stage.outputs)
    result = dvc("commit", "--force", "--quiet", CHECK_STAGE, *names)
    for path, (atime, mtime) in times.items():
        os.utime(path, ns=(atime, mtime))
    if result.returncode != 0:
        print(f"warning: DVC did not record the run ({last_line(result)}); run `dvc commit` after fixing it",
              file=sys.stderr)
        return
    print(f"DVC recorded {len(names)} completed stage(s) in dvc.lock", file=sys.stderr)


def dvc_changed_stages():
    result = dvc("status", "--json")
    if result.returncode != 0:
        raise UserError(f"dvc status failed: {last_line(result)}")
    return sorted(json.loads(result.stdout or "{}"))


def existing_outputs(params_path):
    """The DAG's outputs that are present (summary, paper tables, plots, ... whatever was restored)."""
    return [f for stage in stages(load_params(params_path)) for f in stage.outputs if Path(f).exists()]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description="Mark Snakemake's jobs up to date after DVC restored or "
                                                 "reproduced their outputs.")
    parser.add_argument("targets", nargs="*", help="default: every output of dvc.yaml that exists")
    parser.add_argument("--params", default=layout.PARAMS)
    args = parser.parse_args(argv)
    changed = dvc_changed_stages()
    if changed:
        raise UserError(f"dvc.lock does not match the workspace for {', '.join(changed[:5])}"
                        f"{' ...' if len(changed) > 5 else ''}: run `dvc repro` (or `dvc checkout`) first")
    targets = args.targets or existing_outputs(args.params)
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--touch", "--cores", "1",
                             "--quiet", "all"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"snakemake --touch failed: {last_line(result)}")
    print("Snakemake now sees DVC's outputs as up to date")


if __name__ == "__main__":
    main()
