"""Tell Snakemake that the outputs DVC restored or reproduced are current.

    dvc pull            # or: dvc checkout, dvc repro, dvc exp apply ...
    python -m workflow.sync

DVC writes files in its own order and resets their timestamps (treeverse/dvc#8602),
so Snakemake would rerun finished work. When `dvc status` confirms that every
output matches params.yaml and its dependencies by hash, this marks Snakemake's
jobs up to date (`snakemake --touch`) without running anything.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from workflow.config import load_params
from workflow.dag import stages
from workflow.errors import UserError, cli


def dvc_changed_stages():
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"dvc status failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return sorted(json.loads(result.stdout or "{}"))


def existing_outputs(params_path):
    """The DAG's outputs that are present (summary, paper tables, plots, ... whatever was restored)."""
    outs = [f for stage in stages(load_params(params_path)) for f in stage.outs + stage.metrics + stage.plots]
    return [f for f in outs if Path(f).exists()]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="default: every output of dvc.yaml that exists")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    changed = dvc_changed_stages()
    if changed:
        raise UserError(f"dvc.lock does not match the workspace for {', '.join(changed[:5])}"
                        f"{' ...' if len(changed) > 5 else ''}: run `dvc repro` (or `dvc checkout`) first")
    targets = args.targets or existing_outputs(args.params)
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--touch", "--cores", "1",
                             "--quiet", "all"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"snakemake --touch failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    print("Snakemake now sees DVC's outputs as up to date")


if __name__ == "__main__":
    main()
