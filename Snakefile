# Edge-vision reproducibility workflow.
#   snakemake --cores 2 results/summary.csv
# params.yaml is the single source of truth; it is validated here (one-line error,
# no job started) and by every stage. dvc.yaml is generated from the same file
# (python -m workflow.dag) and tests/test_dag_parity.py keeps the two in step.

from workflow.dag import (FORMATS, PACKED, artifact_path, artifacts_by_producer, artifacts_of,
                          quantize_args, report_path)
from workflow.dag import benchmark_keys, hailo_args, tflite_args
from workflow.errors import UserError
from workflow.config import load_params

try:
    P = load_params("params.yaml")
except UserError as err:
    sys.stderr.write(f"error: {err}\n")
    sys.exit(2)

MODELS = list(P["models"])
DEVICES = P["benchmark"]["devices"]
for _device in DEVICES:
    workflow.global_resources.setdefault(f"device_{_device}", 1)

wildcard_constraints:
    fmt="|".join(FORMATS),
    model="|".join(MODELS),
    artifact="|".join(P["artifacts"]),
    device="|".join(DEVICES),


def input_format(wildcards):
    return P["models"][wildcards.model]["input_format"]


def packed(name):
    """Input function: a file of the model's own packed color format."""
    return lambda wc: f"{PACKED}/{input_format(wc)}/{name}"


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/export.smk"
include: "rules/quantize.smk"
include: "rules/tflite.smk"
include: "rules/hailo.smk"
include: "rules/evaluate.smk"
include: "rules/benchmark.smk"
include: "rules/aggregate.smk"


rule all:
    default_target: True
    input:
        "results/summary.csv",
