"""Aggregate stage: every metrics file -> results/summary.csv and results/summary.md.

    python -m workflow.aggregate --params params.yaml --results results --out results/summary.csv

One row per (model variant, seed, artifact = format + precision, runtime, delegate, device).
Columns are documented in README.md ("summary.csv columns"). With several seeds, summary.md adds
the mean ± std over seeds of every configuration beside the per-seed rows.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from workflow import layout
from workflow.accuracy import per_image_classes, wilson_interval
from workflow.config import load_params
from workflow.device_runner import RUNTIME_BY_SUFFIX
from workflow.errors import UserError, cli
from workflow.io import atomic_path, read_json, write_text
from workflow.model_specs import base_model, model_seed
from workflow.producers import artifacts_of

COLUMNS = [
    "model", "arch", "width_mult", "input_format", "imgsz", "teacher", "kd_type", "kd_alpha", "prune_ratio",
    "prune_iteration", "epochs", "seed", "artifact", "format", "precision", "quant_method", "calibration", "runtime",
    "delegate", "device", "device_kind", "status", "reason", "top1", "top1_ci_low", "top1_ci_high", "top1_pytorch",
    "test_images", "top1_device", "top1_device_images", "top1_host_same_images", "top1_device_delta",
    "device_agreement", "device_check", "params", "macs", "size_bytes", "threads",
    "latency_first_ms", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
    "throughput_fps", "throughput_fps_best", "throughput_best_threads", "peak_rss_mb",
    "providers", "cpu_model", "git_commit",
]


# One vocabulary across runtimes. precision: the number format of the weights (fp32, fp16, int8);
# quant_method: how int8 was reached (dynamic: activations quantized at run time, static: calibrated
# ranges, qat). TFLite's converter settings name them dynamic_int8 and full_integer.
PRECISIONS = {"dynamic_int8": "int8"}
QUANT_METHODS = {"full_integer": "static"}
# The measurements summary.md averages over seeds
MEASURES = ["top1", "latency_p50_ms", "latency_p99_ms", "throughput_fps", "peak_rss_mb"]


def bench_columns(stats, run):
    """Latency at the first thread count of the device's sweep; best throughput over the sweep. Peak RSS
    of the runner process once it has loaded the model and timed it at that thread count (the first thing
    it measures; each delegate setting runs in a process of its own)."""
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
        "throughput_best_threads": int(best_t),
        "peak_rss_mb": first.get("peak_rss_mb_so_far", run["memory"]["peak_rss_mb"]),
        "providers": "+".join(run["runtime"]["providers_active"]), "cpu_model": run["host"]["cpu_model"],
    }


def artifact_columns(params, artifact, report):
    """What the artifact is: format, precision, how it was quantized and the runtime that runs it."""
    entry = params["artifacts"][artifact]
    quantize = entry.get("quantize", {})
    precision = report.get("precision", artifact.split("-", 1)[1])
    method = "qat" if "qat" in entry else report.get("quant_method", quantize.get("method"))
    return {"format": report.get("format", artifact.split("-")[0]),
            "precision": PRECISIONS.get(precision, precision),
            "quant_method": QUANT_METHODS.get(method, method),
            "calibration": report.get("calibration"),
            "runtime": RUNTIME_BY_SUFFIX[layout.FILE_SUFFIX[layout.file_format(artifact)]]}


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


def device_accuracy_columns(params, quantized, evaluation, run):
    """The top-1 the device itself measured (runner --accuracy-data) beside the host's on the same images.

    ``device_check`` is ``mismatch`` when they differ by more than benchmark.accuracy.tolerance
    (``quantized`` for int8 artifacts, ``float`` otherwise), ``different images`` when the device's
    labels are not the host evaluation's first ones; ``device_agreement`` is the share of images whose
    predicted class is the same on both.
    """
    measured = run.get("accuracy")
    if not measured:
        return {}
    columns = {"top1_device": measured["top1"], "top1_device_images": measured["images"]}
    host = per_image_classes(evaluation)
    if host is None:  # a host evaluation without per-image predictions: nothing to compare
        return columns
    labels = np.asarray(measured["labels"])
    host_labels, host_predictions = (a[:len(labels)] for a in host)
    if not np.array_equal(labels, host_labels):
        return {**columns, "device_check": "different images"}
    host_top1 = float((host_predictions == labels).mean())
    delta = measured["top1"] - host_top1
    tolerance = params["benchmark"]["accuracy"]["tolerance"]["quantized" if quantized else "float"]
    return {**columns, "top1_host_same_images": host_top1, "top1_device_delta": delta,
            "device_agreement": float((host_predictions == np.asarray(measured["predictions"])).mean()),
            "device_check": "ok" if abs(delta) <= tolerance + 1e-9 else "mismatch"}


def optimization_columns(params, train):
    """How the model was made: distillation (teacher, type, factor) and pruning (ratio, passes)."""
    columns = {key: train.get(key) for key in ("teacher", "kd_type", "kd_alpha", "prune_ratio", "prune_iteration")}
    if columns["teacher"] in params["models"]:  # the teacher of the same seed, named as in params.yaml
        columns["teacher"] = base_model(params, columns["teacher"])
    return {**columns, "epochs": train.get("total_epochs", train.get("epochs"))}


def accuracy_columns(evaluation):
    """top-1, its 95 % Wilson interval on the test images, and the model's input size."""
    low, high = wilson_interval(round(evaluation["top1"] * evaluation["test_images"]), evaluation["test_images"])
    return {"top1": evaluation["top1"], "top1_ci_low": low, "top1_ci_high": high,
            "test_images": evaluation["test_images"], "imgsz": evaluation.get("imgsz")}


def rows(params, results):
    for model, spec in params["models"].items():
        train = read_json(layout.train_metrics(model, results))
        for artifact in artifacts_of(params, model):
            report = read_json(layout.report_path(model, artifact, results))
            evaluation = read_json(layout.eval_path(model, artifact, results))
            for device in params["benchmark"]["devices"]:
                bench = read_json(layout.bench_path(device, model, artifact, results))
                for delegate, run in delegates(params, artifact, bench):
                    # a model instance of params.yaml seeds: the model's own name and the training seed
                    row = {"model": base_model(params, model), "arch": spec["arch"], "width_mult": spec["width_mult"],
                           "input_format": spec["input_format"], **optimization_columns(params, train),
                           "seed": model_seed(params, model), "artifact": artifact,
                           **artifact_columns(params, artifact, report), "delegate": delegate, "device": device,
                           "device_kind": bench.get("device_kind"), "top1_pytorch": train["top1"],
                           "git_commit": bench["provenance"]["git_commit"]}
                    failed = next((r for r in (report, evaluation) if r.get("status") == "failed"), None)
                    if failed:  # a failed format is a row with the reason, never a missing row
                        yield {**row, "status": "failed", "reason": failed["reason"]}
                        continue
                    row.update(accuracy_columns(evaluation))
                    if bench.get("status") == "failed":  # the device gave no numbers; the accuracy stands
                        yield {**row, "status": "failed", "reason": bench["reason"]}
                        continue
                    yield {**row, "status": "ok", **bench_columns(bench["model_stats"], run),
                           **device_accuracy_columns(params, bool(row["quant_method"]), evaluation, run)}


def to_markdown(table):
    on_device = ["top1_device", "device_check"] if table["top1_device"].notna().any() else []
    columns = ["model", "input_format", "imgsz", "seed", "artifact", "runtime", "delegate", "device", "status", "top1",
               *on_device, "params", "macs", "size_bytes", "threads", "latency_first_ms", "latency_p50_ms",
               "latency_p99_ms", "throughput_fps", "throughput_fps_best", "peak_rss_mb"]
    view = table[[c for c in columns if c != "seed" or table["seed"].nunique() > 1]].copy()

    def fmt(column, scale, template):
        view[column] = (view[column] * scale).map(lambda v: "" if pd.isna(v) else template.format(v))

    view["top1"] = [f"{100 * t:.2f} % [{100 * lo:.1f}, {100 * hi:.1f}]" if pd.notna(t) else ""
                    for t, lo, hi in zip(table["top1"], table["top1_ci_low"], table["top1_ci_high"])]
    if on_device:
        fmt("top1_device", 100, "{:.2f} %")
    fmt("size_bytes", 1e-6, "{:.2f} MB")
    fmt("macs", 1e-6, "{:.1f} M")
    view = view.rename(columns={"top1": "top-1 [95 % interval]", "top1_device": "top1 on device", "size_bytes": "size",
                                "latency_first_ms": "first run (ms)", "latency_p50_ms": "p50 (ms)",
                                "latency_p99_ms": "p99 (ms)", "throughput_fps": "fps (at threads)",
                                "throughput_fps_best": "fps (best)", "peak_rss_mb": "peak RSS (MB)"})
    view = view.astype(object).where(view.notna(), "")  # a failed row shows blanks, not nan
    return "# Summary\n\n" + view.to_markdown(index=False, floatfmt=".2f") + "\n" + seed_markdown(table)


# What makes two rows the same configuration run with different seeds
CONFIGURATION = ["model", "artifact", "delegate", "device", "threads"]


def seed_means(table):
    """Per configuration with results for more than one seed: the seeds and mean ± std of each measure."""
    ok = table[table["status"] == "ok"]
    out = []
    for key, group in ok.groupby(CONFIGURATION, dropna=False, sort=False):
        if group["seed"].nunique() < 2:
            continue
        row = {**dict(zip(CONFIGURATION, key)), "seeds": " ".join(map(str, sorted(group["seed"].unique())))}
        for column in MEASURES:
            values = group[column].dropna()
            row[column] = f"{values.mean():.4g} ± {values.std(ddof=1):.2g}" if len(values) > 1 else ""
        out.append(row)
    return pd.DataFrame(out)


def seed_markdown(table):
    means = seed_means(table)
    if means.empty:
        return ""
    return ("\n## Mean ± std over seeds (sample std; the per-seed rows are above)\n\n"
            + means.astype(object).where(means.notna(), "").to_markdown(index=False) + "\n")


def pipeline_markdown(params, results):
    """Seed 000's pre-processing table per device (workflow/pipeline_bench.py), when enabled."""
    if not params["benchmark"]["pipeline"]["enabled"]:
        return ""
    text = "\n## Pre-processing pipeline: RGB (resize + YUV->RGB + infer) vs YUV 4:2:0 (resize + infer)\n"
    for device in params["benchmark"]["devices"]:
        table = pd.DataFrame(read_json(layout.pipeline_json(device, results))["table"])
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
    parser.add_argument("--results", default=layout.RESULTS)
    parser.add_argument("--out", default=layout.SUMMARY)
    args = parser.parse_args(argv)
    table = aggregate(load_params(args.params), args.results, args.out)
    print(f"wrote {args.out} ({len(table)} rows) and {Path(args.out).with_suffix('.md')}")
    for _, row in table[table["device_check"] == "mismatch"].iterrows():
        print(f"warning: {row['model']} {row['artifact']} ({row['delegate']}) on {row['device']}: top-1 "
              f"{row['top1_device']:.4f} on the device vs {row['top1_host_same_images']:.4f} on the host "
              f"({int(row['top1_device_images'])} images), beyond benchmark.accuracy.tolerance")
    for _, row in table[table["device_check"] == "different images"].iterrows():
        print(f"warning: {row['model']} {row['artifact']} on {row['device']}: the device's test images are not the "
              f"host evaluation's (labels differ): rerun both stages")


if __name__ == "__main__":
    main()
