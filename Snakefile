# Edge-vision reproducibility workflow.
#   snakemake --cores 2 results/summary.csv
# params.yaml is the single source of truth; it is validated here (one-line error, no job
# started) and by every stage. workflow/dag.py declares each stage once: this file defines a
# rule per stage family from those declarations, and dvc.yaml is written from the same ones
# (python -m workflow.dag). When a run ends, DVC records the stages it completed (dvc.lock and
# the DVC cache), so both tools share one state (rules/common.smk: record_in_dvc).

import sys

from workflow import layout
from workflow.config import load_params
from workflow.dag import plan
from workflow.errors import UserError
from workflow.inventory import device_slots

try:
    P = load_params(layout.PARAMS)
except UserError as err:
    sys.stderr.write(f"error: {err}\n")
    sys.exit(2)

PLAN = plan(P)  # every stage of dvc.yaml, with the rule of its family
for _device in P["benchmark"]["devices"]:
    # one benchmark (or pipeline table) at a time per board, so runs never compete for its cores:
    # a pool of N boards runs N at once
    workflow.global_resources.setdefault(f"device_{_device}", device_slots(_device, P["benchmark"]["inventory"]))

report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/stages.smk"


rule all:
    default_target: True
    input:
        default_targets(),


onsuccess:
    record_in_dvc(workflow)


onerror:
    record_in_dvc(workflow)
