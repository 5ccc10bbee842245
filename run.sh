#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the whole DAG to results/summary.csv.
#   ./run.sh                                   # defaults of params.yaml
#   ./run.sh -S data.source=npz -S data.path=/path/cifar10_partial.npz   # offline data
#   ./run.sh --cores 8 results/models/mobilenetv2-rgb/model.pt          # any snakemake arguments
# -S key=value edits params.yaml in place (like `dvc exp run -S`) before running.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
sets=()
while [ $# -gt 0 ] && [ "$1" = "-S" ]; do
  sets+=("$2"); shift 2
done
if [ ${#sets[@]} -gt 0 ]; then
  python -m workflow.set_params "${sets[@]}"
  python -m workflow.dag
fi
if [ $# -eq 0 ]; then
  set -- results/summary.csv
fi
exec snakemake --cores "${CORES:-2}" "$@"
