"""onnx2tf vs litert-torch on our two models: conversion time, parity, op coverage, layout, size, LiteRT latency.

    .venv/bin/python bench/tflite_converters.py [--results results] [--packed data/packed]

Uses the default run's trained models and fp32 ONNX files (./run.sh first). Each conversion
is the real stage, ``python -m workflow.tflite --precision fp32``, in a fresh process, so the
wall time includes the converter's imports (TensorFlow for onnx2tf, torch + the LiteRT
converter for litert-torch) as a DAG job pays them. Parity is the stage's own check against
the fp32 ONNX model on the packed calibration split; op coverage is the converted graph's op
types (ops outside the TFLite builtin set, e.g. Flex or custom ops, are listed apart); latency
is the p50 of 200 single-image LiteRT runs with XNNPACK at 1 thread.

Writes bench/results/tflite_converters.json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.config import load_params  # noqa: E402
from workflow.datasets import load_packed, to_model_inputs  # noqa: E402
from workflow.io import read_json, write_json  # noqa: E402
from workflow.provenance import cpu_model  # noqa: E402

CONVERTERS = ("onnx2tf", "litert_torch")
RUNS = 200


def convert(converter, model, fmt, results, packed, out):
    args = [sys.executable, "-m", "workflow.tflite", "--params", str(ROOT / "params.yaml"),
            "--model", str(results / "artifacts" / model / "onnx-fp32.onnx"), "--precision", "fp32",
            "--converter", converter, "--calib", str(packed / fmt / "calib.npy"),
            "--manifest", str(packed / fmt / "manifest.json"), "--out", str(out)]
    if converter == "litert_torch":
        args += ["--checkpoint", str(results / "models" / model / "model.pt")]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {converter} on {model}: {proc.stderr.strip().splitlines()[-1]}")
    return wall, read_json(out.with_suffix(".json"))


def latency_ms(path, fmt, packed):
    from workflow.litert import LiteRTModel

    manifest = read_json(packed / fmt / "manifest.json")
    images, _ = load_packed(packed / fmt / "test.npy", manifest, "test")
    inputs = to_model_inputs(images[:1], fmt, manifest["height"], manifest["width"])
    model = LiteRTModel(path, num_threads=1)
    feeds = model.match_inputs(inputs)
    if model.max_batch is None:
        model._resize(1)
    for index, array in feeds.items():
        model.interpreter.set_tensor(index, array)
    for _ in range(20):
        model.interpreter.invoke()
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter_ns()
        model.interpreter.invoke()
        times.append(time.perf_counter_ns() - t0)
    return float(np.percentile(times, 50) / 1e6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--packed", default="data/packed")
    args = parser.parse_args()
    results, packed = Path(args.results), Path(args.packed)
    params = load_params(ROOT / "params.yaml")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="converters-") as work:
        for model, spec in params["models"].items():
            fmt = spec["input_format"]
            if not (results / "models" / model / "model.pt").is_file():
                raise SystemExit(f"error: {results}/models/{model}/model.pt not found (run ./run.sh first)")
            for converter in CONVERTERS:
                out = Path(work) / f"{model}-{converter}.tflite"
                wall, report = convert(converter, model, fmt, results, packed, out)
                ops = report.get("op_types", {})
                figures[f"{model}/{converter}"] = {
                    "model": model, "converter": converter, "status": report["status"],
                    "reason": report.get("reason"),
                    "process_seconds": wall, "convert_seconds": report.get("convert_seconds"),
                    "max_abs_diff_vs_onnx": report.get("parity", {}).get("max_abs_diff"),
                    "argmax_agreement": report.get("parity", {}).get("argmax_agreement"),
                    "layout": report.get("layout"), "inputs": report.get("inputs"),
                    "size_bytes": report.get("size_bytes"), "ops": sum(ops.values()), "op_types": ops,
                    "non_builtin_ops": sorted(op for op in ops if op.startswith(("FLEX", "CUSTOM", "Flex"))),
                    "litert_p50_ms_1thread_xnnpack": latency_ms(out, fmt, packed) if report["status"] == "ok"
                    else None,
                }
    for key, f in figures.items():
        print(f"{key:40s} {f['status']:6s} process {f['process_seconds']:5.1f} s, convert "
              f"{f['convert_seconds'] or 0:5.1f} s, max diff {f['max_abs_diff_vs_onnx']}, {f['layout']}, "
              f"{f['ops']} ops, p50 {f['litert_p50_ms_1thread_xnnpack']} ms")
    write_json(ROOT / "bench" / "results" / "tflite_converters.json",
               {"figures": figures, "host": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model()}})


if __name__ == "__main__":
    main()
