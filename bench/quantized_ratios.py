"""Latency and size of every quantized artifact relative to its fp32 source, per runtime, from one run.

    .venv/bin/python bench/quantized_ratios.py [--results results] [--params params.yaml]

For each model, device and runtime setting (ONNX Runtime's execution provider; LiteRT with
XNNPACK on and off) the fp32 source is the same format's fp32 artifact (onnx-fp32 for ORT
PTQ, the fp32 .tflite for TFLite). Latency ratio = p50 of the quantized artifact / p50 of
the source at the same thread count, both from the same run's benchmark files (the first of
benchmark.threads, and the best thread count); size ratio = file size / source file size.
Seed 004 reports about 0.64-0.84x latency and 0.25x size for int8.

Writes bench/results/quantized_ratios.json.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.config import load_params  # noqa: E402
from workflow.producers import artifacts_of  # noqa: E402
from workflow.io import read_json, write_json  # noqa: E402

FLOAT_PRECISIONS = ("fp32", "fp16")


def runs(bench):
    """{setting: runner result}: the delegate runs of a .tflite, else the one run by its providers."""
    if "runs" in bench:
        return {run["delegate"]: run for run in bench["runs"]}
    return {"+".join(bench["runtime"]["providers_active"]): bench}


def p50(run, threads):
    return run["threads"][str(threads)]["latency_ms"]["p50"]


def best_p50(run):
    return min(t["latency_ms"]["p50"] for t in run["threads"].values())


def source_of(params, model, artifact, reports):
    """The fp32 artifact of the same format (and converter) that ``artifact`` was made beside."""
    fmt = artifact.split("-")[0]
    candidates = [a for a in artifacts_of(params, model) if a.startswith(f"{fmt}-")
                  and reports[a].get("precision", a.split("-", 1)[1]) == "fp32"
                  and reports[a].get("converter") == reports[artifact].get("converter")]
    return candidates[0] if candidates else None


def ratios(params, results):
    results = Path(results)
    threads = params["benchmark"]["threads"][0]
    rows = []
    for model in params["models"]:
        names = artifacts_of(params, model)
        reports = {a: read_json(results / "artifacts" / model / f"{a}.json") for a in names}
        for artifact in names:
            precision = reports[artifact].get("precision", artifact.split("-", 1)[1])
            if precision in FLOAT_PRECISIONS:
                continue
            source = source_of(params, model, artifact, reports)
            for device in params["benchmark"]["devices"]:
                row = {"model": model, "device": device, "artifact": artifact, "precision": precision,
                       "source": source}
                bench = read_json(results / "bench" / device / model / f"{artifact}.json")
                if source is None or bench.get("status") != "ok" or reports[artifact].get("status") != "ok":
                    reason = ("no fp32 artifact of the same format" if source is None
                              else bench.get("reason") or reports[artifact].get("reason"))
                    rows.append({**row, "status": "failed", "reason": reason})
                    continue
                source_bench = read_json(results / "bench" / device / model / f"{source}.json")
                if source_bench.get("status") != "ok":
                    rows.append({**row, "status": "failed", "reason": f"{source}: {source_bench.get('reason')}"})
                    continue
                size = bench["model_stats"]["size_bytes"] / source_bench["model_stats"]["size_bytes"]
                source_runs = runs(source_bench)
                for setting, run in runs(bench).items():
                    ref = source_runs.get(setting)
                    if ref is None:
                        continue
                    rows.append({**row, "status": "ok", "runtime": run["runtime"]["name"], "setting": setting,
                                 "threads": threads, "p50_ms": p50(run, threads), "source_p50_ms": p50(ref, threads),
                                 "latency_ratio": p50(run, threads) / p50(ref, threads),
                                 "latency_ratio_best_threads": best_p50(run) / best_p50(ref),
                                 "size_ratio": size})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    rows = ratios(params, args.results)
    ok = [r for r in rows if r["status"] == "ok"]
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['model']:22s} {r['artifact']:22s} {r['runtime']:12s} {r['setting']:22s} latency "
                  f"{r['latency_ratio']:.2f}x ({r['p50_ms']:.3f} / {r['source_p50_ms']:.3f} ms), size {r['size_ratio']:.2f}x")
        else:
            print(f"{r['model']:22s} {r['artifact']:22s} failed: {r['reason']}")
    summary = {}
    for key in sorted({(r["runtime"], r["setting"]) for r in ok}):
        group = [r for r in ok if (r["runtime"], r["setting"]) == key]
        summary[" ".join(key)] = {
            "latency_ratio_min": min(r["latency_ratio"] for r in group),
            "latency_ratio_max": max(r["latency_ratio"] for r in group),
            "size_ratio_min": min(r["size_ratio"] for r in group),
            "size_ratio_max": max(r["size_ratio"] for r in group), "artifacts": len(group)}
    write_json(ROOT / "bench" / "results" / "quantized_ratios.json",
               {"rows": rows, "summary": summary, "seed_004": {"latency_ratio": [0.64, 0.84], "size_ratio": 0.25}})


if __name__ == "__main__":
    main()
