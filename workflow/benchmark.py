"""Benchmark stage: latency, throughput and memory of one exported model on one device.

    python -m workflow.benchmark --params params.yaml --device local --model-name mobilenetv2-rgb \
        --artifact results/export/mobilenetv2-rgb/model.onnx \
        --packed data/packed/rgb/test.npy --manifest data/packed/rgb/manifest.json \
        --out results/bench/local/mobilenetv2-rgb/model.json

The timing itself is done by workflow/device_runner.py in a fresh process on the
device (so peak RSS is the model's, not this stage's): ``local`` or an inventory
device over SSH (workflow/remote.py). This stage prepares its inputs (the first
``benchmark.samples`` test images), and adds the graph's size, parameters and MACs,
checksums, deploy facts and provenance to the runner's result. A device that gives no
result after its retries is recorded with status ``failed`` and the reason (exit 0), so
other devices and artifacts go on.

With ``benchmark.accuracy.images`` > 0 the runner also computes top-1 on the first N
images of the packed test split on the device (the split goes through the device's
content-addressed cache like the model); aggregate puts it beside the host's. An
emulated device (inventory ``emulated: true``) times with ``benchmark.emulated``.

The runtime follows the file: .onnx -> onnxruntime, .tflite -> litert (run once per
``benchmark.litert_xnnpack`` setting, ``--xnnpack on|off``; the result then holds one
entry per delegate under ``runs``), .hef -> hailort. A converted file's parameters are counted
from the file by its conversion stage (the rule of workflow/onnx_stats.py; its report records
them), its MACs are those of the ONNX model it was converted from.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from workflow.artifacts import failure_reason
from workflow.config import check_device, load_params, params_hash
from workflow.datasets import load_packed, to_model_inputs
from workflow.device_runner import RUNTIME_BY_SUFFIX
from workflow.errors import UserError, cli
from workflow.inventory import DEFAULT_INVENTORY, device_kind, device_profile
from workflow.io import read_json, sha256_file, write_json
from workflow.onnx_stats import onnx_stats
from workflow.provenance import provenance
from workflow.remote import DeviceFailure, run_remote

RUNNER = Path(__file__).with_name("device_runner.py")
# Python module each runtime needs on the device (checked on `local` before running)
RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "hailort": "hailo_platform"}


def run_on_device(device, runner_args, files, workdir, inventory=DEFAULT_INVENTORY):
    """Run device_runner.py on ``device``; return (its result dict, deploy facts or None).

    The one place that knows how to reach a device. ``files`` maps runner flags to local
    files (``{"--model": path}``); a remote device gets them through its content-addressed
    cache. ``local`` runs the runner in a fresh process with this interpreter. A device
    that produces no result raises DeviceFailure (after the profile's retries, for a
    remote one); a mistake in the inputs (runner exit status 2) raises UserError.
    """
    profile = device_profile(device, inventory)
    if profile is not None:
        return run_remote(profile, runner_args, files)
    out = Path(workdir) / "runner.json"
    argv = [sys.executable, str(RUNNER), *runner_args]
    for flag, path in files.items():
        argv += [flag, str(path)]
    returncode, stderr = run_with_lifeline([*argv, "--out", str(out)], Path(workdir) / "runner.log")
    if returncode != 0:
        last = (stderr.strip().splitlines() or [f"no error output, exit status {returncode}"])[-1]
        last = last.removeprefix("error: ")
        if returncode == 2:
            raise UserError(f"device_runner on {device} failed: {last}")
        if returncode == 3:
            raise DeviceFailure(f"the runtime on {device} cannot run the model: {last}", retry=False)
        if returncode == 4:  # the runtime is not installed here
            raise DeviceFailure(f"not run: {last}", retry=False)
        raise DeviceFailure(f"runner on {device} crashed (exit status {returncode}): {last}", retry=False)
    return json.loads(out.read_text()), None


def run_with_lifeline(argv, log):
    """Run the local runner in its own session with a pipe from this process as its stdin
    (``--lifeline``): if this stage dies, the runner ends too instead of measuring on beside
    the next job. Returns (exit status, its stdout and stderr)."""
    with open(log, "w+") as output:
        with subprocess.Popen([*argv, "--lifeline"], stdin=subprocess.PIPE, stdout=output, stderr=output,
                              start_new_session=True) as proc:
            returncode = proc.wait()
        output.seek(0)
        return returncode, output.read()


def failed_result(device, failure):
    """What a benchmark that produced no numbers records: a row with status failed and why."""
    return {"status": "failed", "reason": failure.reason, "device_name": device, "attempts": failure.attempts}


def check_runtime_listed(profile, runtime):
    """A remote device runs only the runtimes its inventory entry lists; anything else fails without a try."""
    if profile is not None and runtime not in profile["runtimes"]:
        raise DeviceFailure(f"runtime {runtime} is not installed on {profile['name']} (inventory runtimes: "
                            f"{', '.join(profile['runtimes'])})", retry=False)


def device_settings(settings, profile):
    """params.yaml benchmark.* as they apply to this device: an emulated one (inventory emulated: true)
    times with benchmark.emulated's shorter settings, since qemu runs it tens to a thousand times slower."""
    if device_kind(profile) != "emulated":
        return settings
    emulated = settings["emulated"]
    return {**settings, **{k: v for k, v in emulated.items() if k != "pipeline"},
            "pipeline": {**settings["pipeline"], **emulated["pipeline"]}}


def accuracy_options(settings, packed, manifest):
    """Runner flags and files of the on-device top-1 on the first benchmark.accuracy.images packed images."""
    images = settings["accuracy"]["images"]
    if not images:
        return [], {}
    return (["--accuracy-format", manifest["color_format"], "--accuracy-size",
             f"{manifest['height']}x{manifest['width']}", "--accuracy-images", str(images)],
            {"--accuracy-data": Path(packed)})


def save_samples(path, arrays):
    """np.savez with fixed member timestamps: the same samples give the same bytes, so a device's
    content-addressed cache holds them from the first run on."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def runner_options(settings, profile, runtime, xnnpack=None):
    """Runner flags from params.yaml benchmark.*, the device's inventory profile and the LiteRT delegate."""
    threads = (profile or {}).get("threads") or settings["threads"]
    args = ["--runtime", runtime, "--warmup", str(settings["warmup_runs"]), "--min-runs", str(settings["min_runs"]),
            "--min-duration", str(settings["min_duration_s"]), "--threads", ",".join(map(str, threads))]
    if settings["stream_workers"]:
        args += ["--stream-workers", ",".join(map(str, settings["stream_workers"]))]
    if xnnpack is not None:
        args += ["--xnnpack", "on" if xnnpack else "off"]
    if settings["perf_counters"]:
        args.append("--perf")
    rt = settings["rt"]
    if rt["period_ms"]:
        args += ["--rt-period-ms", str(rt["period_ms"]), "--rt-deadline-ms", str(rt["deadline_ms"]),
                 "--rt-jobs", str(rt["jobs"]), "--rt-priority", str(rt["priority"])]
    if profile and profile["cpus"]:
        args += ["--cpus", ",".join(map(str, profile["cpus"]))]
    if profile and profile["governor"]:
        args += ["--expect-governor", profile["governor"]]
    return args


def model_stats(artifact):
    """Parameters and MACs counted from the ONNX graph; for a converted format, as its report records
    them (parameters of the file itself, MACs of the ONNX model it came from), with this file's own size."""
    if artifact.suffix == ".onnx":
        return onnx_stats(artifact)
    report = read_json(artifact.with_suffix(".json"))
    return {"params": report.get("params"), "macs": report.get("macs"), "size_bytes": artifact.stat().st_size}


def delegate_settings(params, runtime):
    """One runner run per setting: LiteRT with and without XNNPACK (benchmark.litert_xnnpack), else one."""
    if runtime == "litert":
        return [("xnnpack" if on else "none", on) for on in params["benchmark"]["litert_xnnpack"]]
    return [(None, None)]


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
    profile = device_profile(device, params["benchmark"]["inventory"])
    settings = device_settings(params["benchmark"], profile)
    images, _ = load_packed(packed, manifest, split)
    inputs = to_model_inputs(images[:settings["samples"]], input_format, manifest["height"], manifest["width"])

    base = {"model_name": model_name, "device": device, "device_kind": device_kind(profile), "artifact": str(artifact),
            "artifact_sha256": sha256_file(artifact), "input_format": input_format}
    reason = not_run_reason(device, runtime)
    if reason:  # e.g. a .hef with no Hailo runtime here: a row that says so, not a stopped DAG
        return {**base, "status": "failed", "reason": reason, "provenance": provenance(params_hash(settings))}
    runs, deploy = [], None
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        samples = Path(workdir) / "samples.npz"
        save_samples(samples, inputs)
        accuracy_args, accuracy_files = accuracy_options(settings, packed, manifest)
        try:
            check_runtime_listed(profile, runtime)
            for delegate, xnnpack in delegate_settings(params, runtime):
                runner_args = [*runner_options(settings, profile, runtime, xnnpack), *accuracy_args,
                               "--device-name", device]
                result, deploy = run_on_device(device, runner_args,
                                               {"--model": artifact, "--inputs": samples, **accuracy_files},
                                               workdir, settings["inventory"])
                runs.append((delegate, result))
        except DeviceFailure as failure:
            return {**base, **failed_result(device, failure), "model_stats": model_stats(artifact),
                    "provenance": provenance(params_hash(settings))}

    result = {**base, "status": "ok", "model_stats": model_stats(artifact), "deploy": deploy}
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
    check_device(params, args.device)
    reason = failure_reason(args.artifact)
    if reason:  # the conversion failed: nothing to time, the row says why
        kind = device_kind(device_profile(args.device, params["benchmark"]["inventory"]))
        write_json(args.out, {"model_name": args.model_name, "device": args.device, "device_kind": kind,
                              "artifact": args.artifact, "status": "failed", "reason": reason,
                              "provenance": provenance(params_hash(params["benchmark"]))})
        print(f"{args.artifact}: not benchmarked, its conversion failed ({reason})")
        return
    result = benchmark(params, args.device, args.model_name, args.artifact, args.packed, args.manifest)
    write_json(args.out, result)
    if result["status"] != "ok":
        print(f"{args.model_name} on {args.device}: failed: {result['reason']} -> {args.out}")
        return
    for run in result.get("runs", [result]):
        first = run["threads"][str(run["settings"]["threads"][0])]
        delegate = f" ({run['delegate']})" if "delegate" in run else ""
        print(f"{args.model_name} on {args.device}{delegate}: p50 {first['latency_ms']['p50']:.3f} ms at "
              f"{first['threads']} thread(s), peak RSS {run['memory']['peak_rss_mb']:.0f} MB -> {args.out}")


if __name__ == "__main__":
    main()
