"""Aggregate stage: every metrics file -> results/summary.csv and results/summary.md.

    python -m workflow.aggregate --params params.yaml --results results --out results/summary.csv

One row per (model variant, artifact = format + precision, runtime, device).
Columns are documented in README.md ("summary.csv columns").
"""
import argparse
from pathlib import Path

import pandas as pd

from workflow.config import load_params
from workflow.dag import FILE_SUFFIX, artifacts_of
from workflow.device_runner import RUNTIME_BY_SUFFIX
from workflow.errors import UserError, cli
from workflow.io import atomic_path, read_json, write_text

COLUMNS = [
    "model", "arch", "width_mult", "input_format", "teacher", "kd_type", "kd_alpha", "prune_ratio", "prune_iteration",
    "epochs", "artifact", "format", "precision", "quant_method", "calibration", "runtime", "delegate", "device",
    "status", "reason", "top1", "top1_pytorch", "test_images", "params", "macs", "size_bytes", "threads",
    "latency_first_ms", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
    "throughput_fps", "throughput_fps_best", "throughput_best_threads", "peak_rss_mb",
    "providers", "cpu_model", "git_commit",
]


def bench_columns(stats, run):
    """Latency at the first thread count of the device's sweep; best throughput over the sweep."""
    sweep_threads = run["settings"]["threads"]
    first = run["threads"][str(sweep_threads[0])]
    best_t = max(run["threads"], key=lambda t: run["threads"][t]["throughput_fps"])
    lat = first["latency_ms"]
    return {
        "params": stats["params"], "macs": stats["macs"],
        "size_bytes": stats["size_bytes"], "threads": sweep_threads[0],
        "latency_first_ms": run["first_run_ms"], "latency_mean_ms": lat["mean"],
        "latency_p50_ms": lat["p50"], "latency_p90_ms": lat["p90"], "latency_p99_ms": lat["p99"],
        "throughput_fps": first["throughput_fps"],
        "throughput_fps_best": run["threads"][best_t]["throughput_fps"],
        "throughput_best_threads": int(best_t), "peak_rss_mb": run["memory"]["peak_rss_mb"],
        "providers": "+".join(run["runtime"]["providers_active"]), "cpu_model": run["host"]["cpu_model"],
    }


def artifact_columns(params, artifact, report):
    """What the artifact is: format, precision, how it was quantized and the runtime that runs it."""
    entry = params["artifacts"][artifact]
    quantize = entry.get("quantize", {})
    return {"format": report.get("format", artifact.split("-")[0]),
            "precision": report.get("precision", artifact.split("-", 1)[1]),
            "quant_method": "qat" if "qat" in entry else report.get("quant_method", quantize.get("method")),
            "calibration": report.get("calibration"),
            "runtime": RUNTIME_BY_SUFFIX[FILE_SUFFIX[artifact.split("-")[0]]]}


def delegates(params, artifact, bench):
    """(delegate, benchmark run) pairs: one per LiteRT XNNPACK setting for .tflite, else the one run.

    ``delegate`` is the LiteRT delegate (xnnpack / none) or ONNX Runtime's execution providers.
    """
    if "runs" in bench:
        return [(run["delegate"], run) for run in bench["runs"]]
    if artifact.startswith("tflite-"):  # not benchmarked (failed): still one row per configured setting
        return [("xnnpack" if on else "none", bench) for on in params["benchmark"]["litert_xnnpack"]]
    if bench.get("status") == "ok":
        return [("+".join(bench["runtime"]["providers_active"]), bench)]
    return [(None, bench)]


def optimization_columns(train):
    """How the model was made: distillation (teacher, type, factor) and pruning (ratio, passes)."""
    columns = {key: train.get(key) for key in ("teacher", "kd_type", "kd_alpha", "prune_ratio", "prune_iteration")}
    return {**columns, "epochs": train.get("total_epochs", train.get("epochs"))}


def rows(params, results):
    results = Path(results)
    for model, spec in params["models"].items():
        train = read_json(results / "models" / model / "train_metrics.json")
        for artifact in artifacts_of(params, model):
            report = read_json(results / "artifacts" / model / f"{artifact}.json")
            evaluation = read_json(results / "eval" / model / f"{artifact}.json")
            for device in params["benchmark"]["devices"]:
                bench = read_json(results / "bench" / device / model / f"{artifact}.json")
                for delegate, run in delegates(params, artifact, bench):
                    row = {"model": model, "arch": spec["arch"], "width_mult": spec["width_mult"],
                           "input_format": spec["input_format"], **optimization_columns(train), "artifact": artifact,
                           **artifact_columns(params, artifact, report), "delegate": delegate, "device": device,
                           "top1_pytorch": train["top1"], "git_commit": bench["provenance"]["git_commit"]}
                    failed = next((r for r in (report, evaluation) if r.get("status") == "failed"), None)
                    if failed:  # a failed format is a row with the reason, never a missing row
                        yield {**row, "status": "failed", "reason": failed["reason"]}
                        continue
                    row.update(top1=evaluation["top1"], test_images=evaluation["test_images"])
                    if bench.get("status") == "failed":  # the device gave no numbers; the accuracy stands
                        yield {**row, "status": "failed", "reason": bench["reason"]}
                        continue
                    yield {**row, "status": "ok", **bench_columns(bench["model_stats"], run)}


def to_markdown(table):
    view = table[["model", "input_format", "artifact", "runtime", "delegate", "device", "status", "top1", "params", "macs",
                  "size_bytes", "latency_first_ms", "latency_p50_ms", "latency_p99_ms", "throughput_fps",
                  "throughput_fps_best", "peak_rss_mb"]].copy()
    def fmt(column, scale, template):
        view[column] = (view[column] * scale).map(lambda v: "" if pd.isna(v) else template.format(v))

    fmt("top1", 100, "{:.2f} %")
    fmt("size_bytes", 1e-6, "{:.2f} MB")
    fmt("macs", 1e-6, "{:.1f} M")
    view = view.rename(columns={"size_bytes": "size", "latency_first_ms": "first run (ms)",
                                "latency_p50_ms": "p50 (ms)", "latency_p99_ms": "p99 (ms)",
                                "throughput_fps": "fps (1 thr)", "throughput_fps_best": "fps (best)",
                                "peak_rss_mb": "peak RSS (MB)"})
    view = view.astype(object).where(view.notna(), "")  # a failed row shows blanks, not nan
    return "# Summary\n\n" + view.to_markdown(index=False, floatfmt=".2f") + "\n"


def pipeline_markdown(params, results):
    """Seed 000's pre-processing table per device (workflow/pipeline_bench.py), when enabled."""
    if not params["benchmark"]["pipeline"]["enabled"]:
        return ""
    text = "\n## Pre-processing pipeline: RGB (resize + YUV->RGB + infer) vs YUV 4:2:0 (resize + infer)\n"
    for device in params["benchmark"]["devices"]:
        table = pd.DataFrame(read_json(Path(results) / "pipeline" / device / "pipeline.json")["table"])
        columns = ["width", "height", "status", "rgb_latency_ms", "rgb_single_fps", "rgb_multi_fps", "yuv_latency_ms",
                   "yuv_single_fps", "yuv_multi_fps", "gain_latency_pct", "gain_single_pct", "gain_multi_pct"]
        table = table.reindex(columns=columns + (["reason"] if (table["status"] != "ok").any() else []))
        text += f"\n### {device}\n\n" + table.to_markdown(index=False, floatfmt=".2f") + "\n"
    return text


def aggregate(params, results, out):
    table = pd.DataFrame(list(rows(params, results)), columns=COLUMNS)
    if table.empty:
        raise UserError("params.yaml: the experiment matrix is empty (no models or devices)")
    # counts stay exact integers (a failed row's blank would make them floats, written to 6 digits)
    counts = ["epochs", "prune_iteration", "test_images", "params", "macs", "size_bytes", "threads",
              "throughput_best_threads"]
    table[counts] = table[counts].apply(pd.to_numeric).round().astype("Int64")
    out = Path(out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_text(out.with_suffix(".md"), to_markdown(table) + pipeline_markdown(params, results))
    return table


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="results/summary.csv")
    args = parser.parse_args(argv)
    table = aggregate(load_params(args.params), args.results, args.out)
    print(f"wrote {args.out} ({len(table)} rows) and {Path(args.out).with_suffix('.md')}")


if __name__ == "__main__":
    main()
