"""Deploy overhead of a remote benchmark: first deploy (empty device cache) vs a cached re-run vs local.

    .venv/bin/python bench/deploy_overhead.py [--repeats 3]

Starts a throwaway OpenSSH server on loopback (tests/sshd.py; needs openssh-server) and
benchmarks the project's MobileNetV2 (width 0.5, 32x32 RGB, ONNX) through the real
code path, workflow.benchmark.run_on_device, three ways, ``--repeats`` times each:

  local    the runner in a local subprocess (no SSH)
  cold     over SSH into an empty content-addressed cache: runner, model and samples
           are uploaded and hashed on the device
  cached   over SSH again: everything is already cached, nothing is uploaded

Same runner settings everywhere (10 warm-up, 50 timed runs, 1 thread). Writes
bench/results/deploy_overhead.json. Targets: a cached re-run uploads 0 bytes, and its
wall time exceeds the local run by at most 1.5 s (SSH handshake, cache checks, result
fetch, clean-up); loopback has no network latency, so on a board add its round trips.
"""
import argparse
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sshd  # noqa: E402
from workflow.benchmark import run_on_device  # noqa: E402
from workflow.io import write_json  # noqa: E402
from workflow.models import build_model  # noqa: E402

TARGET_CACHED_OVERHEAD_S = 1.5
RUNNER_ARGS = ["--runtime", "onnxruntime", "--warmup", "10", "--min-runs", "50", "--min-duration", "0",
               "--threads", "1"]


def make_model(folder):
    model = build_model({"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"}, 10, 32).eval()
    path = folder / "mobilenetv2-rgb.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    samples = folder / "samples.npz"
    np.savez(samples, image=np.random.default_rng(0).uniform(0, 255, (32, 3, 32, 32)).astype(np.float32))
    return {"--model": path, "--inputs": samples}


def timed(device, files, scratch, inventory):
    t0 = time.perf_counter()
    result, deploy = run_on_device(device, RUNNER_ARGS, files, scratch, inventory)
    wall = time.perf_counter() - t0
    entry = {"wall_s": wall, "runner_p50_ms": result["threads"]["1"]["latency_ms"]["p50"]}
    if deploy:
        entry.update(deploy_s=deploy["deploy_s"], run_s=deploy["run_s"], bytes_uploaded=deploy["bytes_uploaded"],
                     files_uploaded=len(deploy["uploaded"]), files_cached=len(deploy["cached"]))
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine-note", default="", help="how busy the machine was (recorded as machine_note)")
    args = parser.parse_args()
    if not sshd.available():
        sys.exit("error: openssh-server is not installed (bash scripts/ci-deps.sh)")
    runs = {"local": [], "cold": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        tmp = Path(tmp)
        files = make_model(tmp)
        model_bytes = files["--model"].stat().st_size
        with sshd.LoopbackSshd(tmp / "sshd") as server:
            inventory = tmp / "devices.yaml"
            inventory.write_text(yaml.safe_dump({"devices": {"loopback": server.device(retries=0)}}))
            for _ in range(args.repeats):
                runs["local"].append(timed("local", files, tmp, inventory))
                shutil.rmtree(server.workdir, ignore_errors=True)  # empty device cache
                runs["cold"].append(timed("loopback", files, tmp, inventory))
                runs["cached"].append(timed("loopback", files, tmp, inventory))
    median = {kind: {key: float(np.median([r[key] for r in entries])) for key in entries[0]}
              for kind, entries in runs.items()}
    overhead = median["cached"]["wall_s"] - median["local"]["wall_s"]
    report = {
        "what": "remote benchmark wall time over loopback SSH: first deploy vs cached re-run vs local",
        "model_bytes": model_bytes,
        "runner_args": RUNNER_ARGS,
        "repeats": args.repeats,
        "median": median,
        "cold_minus_cached_s": median["cold"]["wall_s"] - median["cached"]["wall_s"],
        "cached_minus_local_s": overhead,
        "target": {"cached_bytes_uploaded": 0, "cached_minus_local_s_max": TARGET_CACHED_OVERHEAD_S},
        "met": median["cached"]["bytes_uploaded"] == 0 and overhead <= TARGET_CACHED_OVERHEAD_S,
        "runs": runs,
        "host": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "machine_note": args.machine_note,
    }
    out = ROOT / "bench" / "results" / "deploy_overhead.json"
    write_json(out, report)
    for kind, m in median.items():
        extra = f", deploy {m['deploy_s']:.2f} s, {m['bytes_uploaded'] / 1e6:.2f} MB up" if "deploy_s" in m else ""
        print(f"{kind:7s} wall {m['wall_s']:.2f} s{extra}")
    print(f"cached - local: {overhead:.2f} s (target <= {TARGET_CACHED_OVERHEAD_S} s) -> {out}")


if __name__ == "__main__":
    main()
