"""Export accuracy and the pre/inference/post time split of every detection format at 320 and 640 px.

    .venv/bin/python bench/detection_export.py [--model yolov5n] [--sizes 320 640]

Needs the detection pipeline's outputs for the model (snakemake --cores 2
results/detection/models/<model>/model.pt, which also packs data/detection). For each input
size, the trained checkpoint is exported to every format of workflow.detection.export and each
file is evaluated by workflow.detection.evaluate on the val split: mAP50-95 / mAP50 of the
artifact next to the PyTorch model's at the same size, and the mean pre-processing,
inference and post-processing (decode + NMS) times. An int8 artifact whose mAP50-95 falls
below half of the fp32 ONNX model's, or whose class scores took fewer than 16 distinct values, is flagged as
collapsed (the failure ultralytics users
report for int8 exports). Each row also carries the export report's max |artifact - PyTorch|
raw head output, which still shows a broken artifact when an undertrained model has mAP 0.
Figures go to bench/results/detection_export.json; nothing is asserted.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.config import load_params  # noqa: E402
from workflow.detection.evaluate import evaluate  # noqa: E402
from workflow.detection.export import ARTIFACTS, export  # noqa: E402
from workflow.layout import DET_DATA, det_artifact_path, det_checkpoint  # noqa: E402
from workflow.io import write_json  # noqa: E402
from workflow.provenance import host_facts  # noqa: E402

COLLAPSE_RATIO = 0.5
COLLAPSE_LEVELS = 16  # fewer distinct class scores than a 4-bit code: the ranking NMS and mAP need is gone
KEYS = ("status", "reason", "map50_95", "map50", "size_bytes", "pre_mean_ms", "infer_mean_ms", "post_mean_ms",
        "total_mean_ms", "runtime")


def measure(params, model, size, work):
    params = copy.deepcopy(params)
    params["detection"]["models"][model]["imgsz"] = size
    checkpoint = det_checkpoint(model)
    rows = {}
    reference = evaluate(params, model, checkpoint, DET_DATA, work / "pytorch.json")
    rows["pytorch"] = {k: reference.get(k) for k in KEYS}
    for artifact in ARTIFACTS:
        out = work / Path(det_artifact_path(model, artifact)).name
        report = export(params, model, artifact, checkpoint, DET_DATA, out, work / "onnx-fp32.onnx")
        result = evaluate(params, model, str(out), DET_DATA, work / f"{artifact}-eval.json")
        rows[artifact] = {k: result.get(k) for k in KEYS}
        rows[artifact]["export_seconds"] = report.get("seconds")
        rows[artifact]["output_max_abs_diff"] = report.get("parity", {}).get("max_abs_diff_vs_pytorch")
        rows[artifact]["score_levels"] = report.get("parity", {}).get("score_levels")
        print(f"{size}px {artifact}: {result.get('status')} mAP50-95 {result.get('map50_95')} "
              f"pre/infer/post {result.get('pre_mean_ms')}/{result.get('infer_mean_ms')}/{result.get('post_mean_ms')}")
    fp32 = rows["onnx-fp32"].get("map50_95") or 0.0
    for artifact, row in rows.items():
        row["map50_95_vs_pytorch"] = (row["map50_95"] - rows["pytorch"]["map50_95"]
                                      if row.get("map50_95") is not None else None)
        row["int8_collapse"] = ("int8" in artifact and row.get("map50_95") is not None and fp32 > 0
                                and row["map50_95"] < COLLAPSE_RATIO * fp32) \
            or (row.get("score_levels") or COLLAPSE_LEVELS) < COLLAPSE_LEVELS
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    args = parser.parse_args()
    os.chdir(REPO)  # the pipeline's relative layout (data/detection, results/detection)
    params = load_params(args.params)
    if not Path(det_checkpoint(args.model)).is_file():
        sys.exit(f"error: {det_checkpoint(args.model)} not found: run "
                 f"snakemake --cores 2 {det_checkpoint(args.model)} first")
    results = {"model": args.model, "threads": params["detection"]["evaluate"]["num_threads"],
               "collapse_ratio": COLLAPSE_RATIO, "collapse_levels": COLLAPSE_LEVELS, "host": host_facts(),
               "sizes": {}}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="detbench.") as work:
            results["sizes"][str(size)] = measure(params, args.model, size, Path(work))
    write_json(REPO / "bench" / "results" / "detection_export.json", results)
    print(json.dumps({s: {a: (r["map50_95"], r["infer_mean_ms"]) for a, r in rows.items()}
                      for s, rows in results["sizes"].items()}, indent=1))


if __name__ == "__main__":
    main()
