"""Benchmark stage: latency, throughput and memory of one exported model on one device.

    python -m workflow.benchmark --params params.yaml --device local --model-name mobilenetv2-rgb \
        --artifact results/export/mobilenetv2-rgb/model.onnx \
        --packed data/packed/rgb/test.npy --manifest data/packed/rgb/manifest.json \
        --out results/bench/local/mobilenetv2-rgb/model.json

The timing itself is done by workflow/device_runner.py in a fresh process on the
device (so peak RSS is the model's, not this stage's). This stage prepares its
inputs (the first ``benchmark.samples`` test images), and adds the graph's size,
parameters and MACs, checksums and provenance to the runner's result.

The runtime follows the file: .onnx -> onnxruntime, .tflite -> litert (run once per
``benchmark.litert_xnnpack`` setting, ``--xnnpack on|off``; the result then holds one
entry per delegate under ``runs``), .hef -> hailort. Parameters and MACs of a converted
file are those of the ONNX model it was converted from (its report records them).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from workflow.artifacts import failure_reason
from workflow.config import load_params, params_hash
from workflow.datasets import load_packed, to_model_inputs
from workflow.errors import UserError, cli
from workflow.io import read_json, sha256_file, write_json
from workflow.onnx_stats import onnx_stats
from workflow.provenance import provenance

RUNNER = Path(__file__).with_name("device_runner.py")
RUNTIME_BY_SUFFIX = {".onnx": "onnxruntime", ".tflite": "litert", ".hef": "hailort"}
# Python module each runtime needs on the device (checked on `local` before running)
RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "hailort": "hailo_platform"}


def run_on_device(device, runner_args, workdir):
    """Run device_runner.py with ``runner_args`` on ``device``; return its result dict.

    The one place that knows how to reach a device. ``local`` runs the runner in a
    fresh process with this interpreter; the result lands in the scratch ``workdir``.
    """
    if device != "local":
        raise UserError(f"device {device!r}: only 'local' is supported")
    out = Path(workdir) / "runner.json"
    proc = subprocess.run([sys.executable, str(RUNNER), *runner_args, "--out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"no error output, exit status {proc.returncode}"]
        raise UserError(f"device_runner on {device} failed: {lines[-1].removeprefix('error: ')}")
    return json.loads(out.read_text())


def model_stats(artifact):
    """Parameters and MACs counted from the ONNX graph; for a converted format, of the ONNX model it was
    converted from (recorded in its report), with this file's own size."""
    if artifact.suffix == ".onnx":
        return onnx_stats(artifact)
    report = read_json(artifact.with_suffix(".json"))
    return {"params": report.get("params"), "macs": report.get("macs"), "size_bytes": artifact.stat().st_size}


def runner_settings(params, runtime):
    """One runner run per setting: LiteRT with and without XNNPACK (benchmark.litert_xnnpack), else one."""
    if runtime == "litert":
        return [("xnnpack" if on else "none", ["--xnnpack", "on" if on else "off"])
                for on in params["benchmark"]["litert_xnnpack"]]
    return [(None, [])]


def not_run_reason(device, runtime):
    import importlib.util

    if device == "local" and importlib.util.find_spec(RUNTIME_MODULE[runtime]) is None:
        return f"not run: {runtime} ({RUNTIME_MODULE[runtime]}) is not installed on {device}"
    return None


def benchmark(params, device, model_name, artifact, packed, manifest_path):
    if model_name not in params["models"]:
        raise UserError(f"--model-name {model_name!r} is not in params.yaml models "
                        f"({', '.join(params['models'])})")
    artifact = Path(artifact)
    if not artifact.is_file():
        raise UserError(f"{artifact}: model artifact not found (run the export stage)")
    runtime = RUNTIME_BY_SUFFIX.get(artifact.suffix)
    if runtime is None:
        raise UserError(f"{artifact}: no runtime for '{artifact.suffix}' files "
                        f"(supported: {', '.join(RUNTIME_BY_SUFFIX)})")
    manifest = read_json(manifest_path)
    input_format = manifest["color_format"]
    if params["models"][model_name]["input_format"] != input_format:
        raise UserError(f"{manifest_path}: packed data is {input_format}, model {model_name} takes "
                        f"{params['models'][model_name]['input_format']}")
    split = Path(packed).stem
    if split not in manifest["splits"]:
        raise UserError(f"{packed}: split '{split}' is not in {manifest_path}")
    settings = params["benchmark"]
    images, _ = load_packed(packed, manifest, split)
    inputs = to_model_inputs(images[:settings["samples"]], input_format, manifest["height"], manifest["width"])

    base = {"model_name": model_name, "device": device, "artifact": str(artifact),
            "artifact_sha256": sha256_file(artifact), "input_format": input_format}
    reason = not_run_reason(device, runtime)
    if reason:  # e.g. a .hef with no Hailo runtime here: a row that says so, not a stopped DAG
        return {**base, "status": "failed", "reason": reason, "provenance": provenance(params_hash(settings))}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        samples = Path(workdir) / "samples.npz"
        np.savez(samples, **inputs)
        for delegate, extra in runner_settings(params, runtime):
            runner_args = ["--model", str(artifact), "--inputs", str(samples), "--runtime", runtime, *extra,
                           "--warmup", str(settings["warmup_runs"]), "--min-runs", str(settings["min_runs"]),
                           "--min-duration", str(settings["min_duration_s"]),
                           "--threads", ",".join(map(str, settings["threads"])), "--device-name", device]
            runs.append((delegate, run_on_device(device, runner_args, workdir)))

    result = {**base, "status": "ok", "model_stats": model_stats(artifact)}
    if runs[0][0] is None:
        result.update(runs[0][1])  # one run: the runner's result at the top level
    else:  # one result per delegate setting; aggregate makes a row of each
        result["runs"] = [{"delegate": delegate, **run} for delegate, run in runs]
    return {**result, "provenance": provenance(params_hash(settings))}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark one exported model on one device.")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--device", required=True, help="one of params.yaml benchmark.devices")
    p.add_argument("--model-name", required=True, help="a key of params.yaml models")
    p.add_argument("--artifact", required=True, help="the exported model (.onnx, .tflite, .hef)")
    p.add_argument("--packed", required=True, help="packed test split, e.g. data/packed/rgb/test.npy")
    p.add_argument("--manifest", required=True, help="its manifest.json")
    p.add_argument("--out", required=True, help="result JSON, e.g. results/bench/<device>/<model>/<stem>.json")
    return p.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    params = load_params(args.params)
    if args.device not in params["benchmark"]["devices"]:
        raise UserError(f"--device {args.device!r} is not in params.yaml benchmark.devices "
                        f"({', '.join(params['benchmark']['devices'])})")
    reason = failure_reason(args.artifact)
    if reason:  # the conversion failed: nothing to time, the row says why
        write_json(args.out, {"model_name": args.model_name, "device": args.device, "artifact": args.artifact,
                              "status": "failed", "reason": reason,
                              "provenance": provenance(params_hash(params["benchmark"]))})
        print(f"{args.artifact}: not benchmarked, its conversion failed ({reason})")
        return
    result = benchmark(params, args.device, args.model_name, args.artifact, args.packed, args.manifest)
    write_json(args.out, result)
    if result["status"] == "failed":
        print(f"{args.artifact}: not benchmarked ({result['reason']})")
        return
    for run in result.get("runs", [result]):
        first = run["threads"][str(params["benchmark"]["threads"][0])]
        delegate = f" ({run['delegate']})" if "delegate" in run else ""
        print(f"{args.model_name} on {args.device}{delegate}: p50 {first['latency_ms']['p50']:.3f} ms at "
              f"{first['threads']} thread(s), peak RSS {run['memory']['peak_rss_mb']:.0f} MB -> {args.out}")


if __name__ == "__main__":
    main()
