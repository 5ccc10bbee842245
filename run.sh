#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the whole DAG: results/summary.csv, paper tables, plots.
#   ./run.sh                                   # defaults of params.yaml (CIFAR-10 by torchvision's download)
#   ./run.sh -S data.path=/path/cifar10.npz    # offline: a folder with cifar-10-python.tar.gz, or an .npz
#   ./run.sh --cores 8 results/models/mobilenetv2-rgb/model.pt          # any snakemake arguments
#   ./run.sh --paper yuv420_mobilenetv2 [--full]   # a paper's small (or full) configuration -> its table
#   ./run.sh --paper yuv420_mobilenetv2 --scale imagenet-fixture   # any other config/papers/<id>/<name>.yaml
#   ./run.sh --retry-failed                    # rerun only the jobs whose result says status: failed
# -S key=value edits params.yaml in place (like `dvc exp run -S`) before running;
# --paper applies config/papers/<id>/small.yaml (or full.yaml, or <scale>.yaml) to params.yaml the same way
# and adds the paper's table to the targets; --retry-failed forces the jobs listed by
# `python -m workflow.failed` (and what depends on them). When the run ends, DVC has recorded what it completed.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
sets=()
paper=""
scale=small
retry_failed=""
while [ $# -gt 0 ]; do
  case "$1" in
    -S) sets+=("$2"); shift 2 ;;
    --paper) paper="$2"; shift 2 ;;
    --full) scale=full; shift ;;
    --scale) scale="$2"; shift 2 ;;
    --retry-failed) retry_failed=1; shift ;;
    *) break ;;
  esac
done
overlay=()
if [ -n "$paper" ]; then
  if [ ! -f "config/papers/$paper/$scale.yaml" ]; then
    echo "error: --paper $paper: no config/papers/$paper/$scale.yaml (papers: $(ls config/papers | grep -v '\.' | tr '\n' ' '))" >&2
    exit 2
  fi
  overlay=(--file "config/papers/$paper/$scale.yaml")
fi
if [ ${#sets[@]} -gt 0 ] || [ -n "$paper" ]; then
  python -m workflow.set_params "${overlay[@]}" "${sets[@]}"
  python -m workflow.dag
fi
# Without --paper or a target: the Snakefile's default, results/summary.csv plus the paper tables and plots.
if [ -n "$paper" ]; then
  set -- "results/papers/$paper/table.md" "$@"
fi
if [ -n "$retry_failed" ]; then
  failed=$(python -m workflow.failed)
  # after the targets: --forcerun takes every word that follows it
  [ -z "$failed" ] || set -- "$@" --forcerun $failed
fi
exec snakemake --cores "${CORES:-2}" "$@"
