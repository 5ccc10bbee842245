"""Detection aggregate stage: results/detection/summary.csv (task=detection), summary.md, paper_tables.md.

    python -m workflow.detection.aggregate --params params.yaml --results results/detection \
        --out results/detection/summary.csv

One row per (model, artifact): the PyTorch model itself and every exported file, each with
the mAP its own runtime reached on the val split, the PyTorch model's mAP on the same images
and the drop, the export report's max |artifact - PyTorch| raw head output on calibration
images and the number of distinct class-score values it produced there (fidelity figures that
still mean something when an undertrained model has mAP 0; one level = scores collapsed),
size, the classes trained and evaluated (``all``, or detection.data.classes), the
pre-processing / inference / post-processing split and the model's variant fields (KD teacher
and factor, leaky slope, depth code, pruning ratio and passes, input size). A failed export
is a row with status failed and its reason. paper_tables.md groups the rows the way seeds
001 (PTQ and KD of YOLOv5n/s), 003 (leaky slope x input size) and 004 (depth code) report them.
"""
import argparse
import csv
import io
from pathlib import Path

from workflow import layout
from workflow.config import load_params
from workflow.detection import plan
from workflow.errors import UserError, cli
from workflow.io import read_json, write_text

COLUMNS = ["task", "model", "base_yaml", "teacher", "kd", "kd_factor", "leaky_slope", "depth_code",
           "prune_ratio", "prune_iteration", "imgsz",
           "classes", "artifact", "format", "precision", "runtime", "status", "reason", "map50_95", "map50",
           "map50_95_pytorch", "map50_pytorch", "map50_95_drop", "output_max_abs_diff", "score_levels", "val_images",
           "params", "size_bytes", "threads", "pre_ms", "infer_ms", "post_ms", "total_ms", "fps", "epochs",
           "train_seconds", "git_commit"]


def rows(det, results):
    out = []
    classes = " ".join(det["data"].get("classes") or []) or "all"  # the packed classes (detection.data.classes)
    for model, spec in det["models"].items():
        train = read_json(Path(layout.det_model_dir(model, results)) / "train_metrics.json")
        reference = read_json(layout.det_eval_path(model, "pytorch", results))
        prune = spec.get("prune") or {}
        for artifact in ("pytorch", *plan.model_artifacts(det, model)):
            r = read_json(layout.det_eval_path(model, artifact, results))
            ok = r["status"] == "ok"
            report = {} if artifact == "pytorch" else read_json(layout.det_report_path(model, artifact, results))
            drop = (reference["map50_95"] - r["map50_95"]) if ok and reference.get("status") == "ok" else None
            out.append({
                "task": "detection", "model": model, "base_yaml": spec["yaml"], "teacher": spec.get("teacher", ""),
                "kd": spec.get("kd", ""), "kd_factor": spec.get("kd_factor", ""),
                "leaky_slope": spec.get("leaky_slope", ""), "depth_code": spec.get("depth_code", ""),
                "prune_ratio": prune.get("ratio", ""), "prune_iteration": prune.get("iterations", ""),
                "imgsz": "x".join(map(str, r["imgsz"])), "classes": classes, "artifact": artifact,
                "format": r["format"],
                "precision": r["precision"], "runtime": r.get("runtime", ""), "status": r["status"],
                "reason": r.get("reason", ""), "map50_95": r.get("map50_95"), "map50": r.get("map50"),
                "map50_95_pytorch": reference.get("map50_95"), "map50_pytorch": reference.get("map50"),
                "map50_95_drop": drop,
                "output_max_abs_diff": report.get("parity", {}).get("max_abs_diff_vs_pytorch"),
                "score_levels": report.get("parity", {}).get("score_levels"),
                "val_images": r["val_images"], "params": train["params"],
                "size_bytes": r.get("size_bytes"), "threads": r.get("threads"), "pre_ms": r.get("pre_mean_ms"),
                "infer_ms": r.get("infer_mean_ms"), "post_ms": r.get("post_mean_ms"),
                "total_ms": r.get("total_mean_ms"),
                "fps": 1000.0 / r["total_mean_ms"] if ok and r.get("total_mean_ms") else None,
                "epochs": train["epochs"], "train_seconds": train["train_seconds"],
                "git_commit": r["provenance"]["git_commit"]})
    return out


def fmt(value):
    """Four significant digits: a small-scale mAP can be below 0.0001 and must not print as 0."""
    if value is None or value == "":
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(table, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def paper_tables(table):
    """The rows grouped as the three detection seeds report them (values measured here)."""
    ptq = [r for r in table if r["base_yaml"].startswith("yolov5") and not r["kd"]]
    kd = [r for r in table if r["artifact"] == "pytorch" and r["base_yaml"].startswith("yolov5")]
    slope = [r for r in table if r["leaky_slope"] != "" and not r["depth_code"]]
    depth = [r for r in table if r["depth_code"]]
    sections = [
        ("Seed 001 (od_quant_kd_imx8), Table 5.1: post-training quantization of YOLOv5n/s",
         ptq, ["model", "imgsz", "artifact", "runtime", "map50_95", "map50", "map50_95_drop", "score_levels",
               "size_bytes", "pre_ms", "infer_ms", "post_ms", "fps"]),
        ("Seed 001, Tables 5.3/5.6/5.7: baseline vs knowledge distillation (PyTorch model)",
         kd, ["model", "teacher", "kd", "kd_factor", "epochs", "map50_95", "map50"]),
        ("Seed 003 (yolov4tiny_pruning), Table 1: leaky-ReLU slope x input size",
         slope, ["model", "leaky_slope", "imgsz", "artifact", "map50_95", "map50", "params", "infer_ms"]),
        ("Seed 004 (rtbench_tflite), Table B.1: YOLOv3-tiny depth codes",
         depth, ["model", "depth_code", "artifact", "size_bytes", "params", "map50", "infer_ms", "total_ms"]),
    ]
    text = ["# Detection tables of the seeds, measured by this pipeline\n",
            f"Published values are in {layout.PAPERS_DIR}/<id>.yaml (beside the reproduced ones in "
            f"{layout.paper_dir('<id>')}/table.md); the configuration here is the one in params.yaml `detection` "
            f"(see {layout.DET_SUMMARY} for every column).\n"]
    for title, subset, columns in sections:
        text.append(f"\n## {title}\n\n")
        text.append(markdown(subset, columns) if subset else "No model of this kind in params.yaml.\n")
    return "".join(text)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--results", default=layout.DET_RESULTS)
    parser.add_argument("--out", default=layout.DET_SUMMARY)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if "detection" not in params:
        raise UserError(f"{args.params}: no 'detection' section")
    table = rows(params["detection"], args.results)
    out = Path(args.out)
    write_text(out.with_name("paper_tables.md"), paper_tables(table))
    write_text(out.with_suffix(".md"), markdown(table, COLUMNS[1:-1]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_text(out, buffer.getvalue())  # last: the summary marks the stage complete
    print(f"wrote {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
