# Edge-vision reproducibility workflow.
#   snakemake --cores 2 results/summary.csv
# params.yaml is the single source of truth; it is validated here (one-line error,
# no job started) and by every stage. dvc.yaml is generated from the same file
# (python -m workflow.dag) and tests/test_dag_parity.py keeps the two in step.

import re
from pathlib import Path

from workflow.dag import (FORMATS, PACKED, TRAINING_CODE, artifact_path, artifacts_by_producer, artifacts_of,
                          benchmark_keys, device_deps, hailo_args, qat_args, quantize_args, report_path, stages,
                          tflite_args, train_command, upstream_args)
from workflow.distributed import job_resources
from workflow.detection import plan as det_plan
from workflow.errors import UserError
from workflow.pack import EVAL_KEYS, TRAIN_KEYS
from workflow.config import load_params

try:
    P = load_params("params.yaml")
except UserError as err:
    sys.stderr.write(f"error: {err}\n")
    sys.exit(2)

DAG_STAGES = stages(P)  # the DVC stages; rules that mirror one exactly read its command from here
MODELS = list(P["models"])
# Pruned models come from the prune rule, all others from train (same outputs).
PRUNED_MODELS = [m for m in MODELS if "prune" in P["models"][m]]
TRAINED_MODELS = [m for m in MODELS if m not in PRUNED_MODELS]
DEVICES = P["benchmark"]["devices"]
PIPELINE = P["benchmark"]["pipeline"]
DET = P.get("detection")
for _device in DEVICES:
    workflow.global_resources.setdefault(f"device_{_device}", 1)

wildcard_constraints:
    fmt="|".join(FORMATS),
    model="|".join(MODELS),
    artifact="|".join(P["artifacts"]),
    device="|".join(DEVICES),


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/export.smk"
include: "rules/quantize.smk"
include: "rules/prune.smk"
include: "rules/qat.smk"
include: "rules/tflite.smk"
include: "rules/hailo.smk"
include: "rules/evaluate.smk"
include: "rules/benchmark.smk"
include: "rules/aggregate.smk"
include: "rules/pipeline.smk"
include: "rules/papers.smk"
include: "rules/report.smk"
include: "rules/detection.smk"


rule all:
    default_target: True
    input:
        "results/summary.csv",
        expand("results/papers/{paper}/table.md", paper=PAPERS),
        plot_files(P),
        # the detection track joins the default target only when enabled (rules/detection.smk)
        *(["results/detection/summary.csv"] if P.get("detection", {}).get("enabled") else []),
