"""The virtual aarch64 board (scripts/virtual-board.sh): set-up time, deploy overhead, emulated vs native latency.

    sudo .venv/bin/python bench/virtual_board.py [setup] [deploy] [ratio]    # all three by default

setup   `up` from scratch in a fresh state folder (debootstrap, the aarch64 wheels downloaded past
        pip's cache), then `down` and `up` again from that cache. The board has one network
        namespace, so the running board is taken down first (and brought back afterwards).
        Debian's qemu-user-static / binfmt-support / debootstrap count only when missing.
deploy  as bench/deploy_overhead.py, on virtual-a53: a first deploy into an empty device cache
        (runner, model, samples uploaded and hashed on the board) vs a cached re-run vs local,
        through workflow.benchmark.run_on_device, --repeats times each.
ratio   a small project (the two baseline models, 1 epoch on the in-repo CIFAR-10 images; ONNX fp32
        and static int8, TFLite fp32 and full int8, XNNPACK on and off) benchmarked by the DAG on
        local, virtual-a53 and virtual-a72: p50 on the emulated board / p50 on this machine, per
        artifact. No target: it documents that emulated timings are not board timings.

Writes bench/results/virtual_board.json (a part run alone keeps the other parts' figures).
Needs root (the board); deploy and ratio bring the board up (from its cache) if it is down and take
it down again afterwards.
"""
import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import CIFAR_NPZ, copy_project, sh  # noqa: E402
from deploy_overhead import make_model  # noqa: E402
from workflow.benchmark import run_on_device  # noqa: E402
from workflow.io import read_json, write_json  # noqa: E402

SCRIPT = ROOT / "scripts" / "virtual-board.sh"
INVENTORY = ROOT / "config" / "devices.yaml"
OUT = ROOT / "bench" / "results" / "virtual_board.json"
STATE = Path(os.environ.get("VBOARD_DIR", "/var/cache/edge-vision-repro/virtual-board"))
MACHINE_NOTE = ("measured on our 2-core machine while other jobs shared it (load above 2): emulated figures "
                "get a small share of the CPU at nice 19; rerun on an idle machine for the reference figures")
# fewer timed runs than deploy_overhead.py's 50: one emulated inference takes ~0.1-0.3 s
RUNNER_ARGS = ["--runtime", "onnxruntime", "--warmup", "2", "--min-runs", "10", "--min-duration", "0",
               "--threads", "1"]
RATIO_ARTIFACTS = ("onnx-fp32", "onnx-int8-static", "tflite-fp32", "tflite-int8-full")
RATIO_DEVICES = ("local", "virtual-a53", "virtual-a72")


def board(command, env=None):
    """Run virtual-board.sh ``command``: (wall seconds, its progress lines); exits on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"error: virtual-board.sh {command} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - t0, proc.stderr


def step_seconds(log):
    """The script's own per-step timings: {step: seconds}."""
    patterns = {"debootstrap": r"root file system built in (\d+) s", "venv": r"/opt/venv ready in (\d+) s",
                "tflite_runtime_env": r"/opt/tflite-runtime ready in (\d+) s", "up_total": r"up in (\d+) s"}
    return {name: int(m.group(1)) for name, pattern in patterns.items() if (m := re.search(pattern, log))}


def is_up():
    return subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0


def setup():
    was_up = is_up()
    board("down")
    with tempfile.TemporaryDirectory(prefix="vboard-bench-", dir="/var/tmp") as state:
        env = {"VBOARD_DIR": state, "PIP_NO_CACHE_DIR": "1"}
        scratch_s, scratch_log = board("up", env)
        board("down", env)
        cached_s, _ = board("up", env)
        down_s, _ = board("down", env)
        rootfs_mb = int(subprocess.run(["du", "-sm", f"{state}/rootfs"], capture_output=True, text=True)
                        .stdout.split()[0])
    if was_up:
        board("up")
    print(f"set-up from scratch {scratch_s:.0f} s, from the cache {cached_s:.1f} s, down {down_s:.1f} s, "
          f"root file system {rootfs_mb} MB")
    return {"from_scratch_s": scratch_s, "from_scratch_steps_s": step_seconds(scratch_log),
            "from_cache_s": cached_s, "down_s": down_s, "rootfs_mb": rootfs_mb,
            "note": "wheels fetched without pip's cache; apt packages were already installed (a fresh "
                    "machine adds their apt-get install, ~15 s here)"}


def timed(device, files, scratch, inventory):
    t0 = time.perf_counter()
    result, deploy = run_on_device(device, [*RUNNER_ARGS, "--device-name", device], files, scratch, inventory)
    entry = {"wall_s": time.perf_counter() - t0, "runner_p50_ms": result["threads"]["1"]["latency_ms"]["p50"]}
    if deploy:
        entry.update(deploy_s=deploy["deploy_s"], run_s=deploy["run_s"], bytes_uploaded=deploy["bytes_uploaded"],
                     files_uploaded=len(deploy["uploaded"]), files_cached=len(deploy["cached"]))
    return entry


def deploy(repeats):
    runs = {"local": [], "cold": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="vboard-deploy-") as tmp:
        tmp = Path(tmp)
        files = make_model(tmp)
        # its own work dir on the board, so emptying it never touches the tests' cache
        devices = yaml.safe_load(INVENTORY.read_text())["devices"]
        entry = {**devices["virtual-a53"], "workdir": "/root/edge-bench-deploy-bench", "retries": 0}
        inventory = tmp / "devices.yaml"
        inventory.write_text(yaml.safe_dump({"devices": {"virtual-a53": entry}}))
        device_cache = STATE / "rootfs" / "root" / "edge-bench-deploy-bench"
        for _ in range(repeats):
            runs["local"].append(timed("local", files, tmp, inventory))
            shutil.rmtree(device_cache, ignore_errors=True)  # an empty device cache
            runs["cold"].append(timed("virtual-a53", files, tmp, inventory))
            runs["cached"].append(timed("virtual-a53", files, tmp, inventory))
        shutil.rmtree(device_cache, ignore_errors=True)
    median = {kind: {key: float(np.median([r[key] for r in entries])) for key in entries[0]}
              for kind, entries in runs.items()}
    for kind, m in median.items():
        extra = f", deploy {m['deploy_s']:.2f} s, {m['bytes_uploaded'] / 1e6:.2f} MB up" if "deploy_s" in m else ""
        print(f"deploy {kind:7s} wall {m['wall_s']:.2f} s{extra}")
    return {"device": "virtual-a53", "runner_args": RUNNER_ARGS, "repeats": repeats, "median": median,
            "cold_minus_cached_s": median["cold"]["wall_s"] - median["cached"]["wall_s"],
            "cached_minus_local_s": median["cached"]["wall_s"] - median["local"]["wall_s"], "runs": runs}


def ratio():
    with tempfile.TemporaryDirectory(prefix="vboard-ratio-") as tmp:
        project = copy_project(Path(tmp))
        settings = ["data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=512", "data.test_subset=256",
                    "data.calib_subset=32", "train.epochs=1", "train.batch_size=64", "train.num_threads=2",
                    "train.schedule.cosine_epochs=1", "train.schedule.milestones=[]",
                    f"benchmark.devices=[{', '.join(RATIO_DEVICES)}]", "benchmark.threads=[1]",
                    "benchmark.stream_workers=[]", "benchmark.perf_counters=false", "benchmark.accuracy.images=0",
                    "benchmark.emulated.min_runs=20", "benchmark.pipeline.enabled=false"]
        sh(project, sys.executable, "-m", "workflow.set_params", *settings)
        params_path = project / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["models"] = {m: params["models"][m] for m in ("mobilenetv2-rgb", "mobilenetv2-yuv420")}
        params["artifacts"] = {a: params["artifacts"][a] for a in RATIO_ARTIFACTS}
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        sh(project, sys.executable, "-m", "workflow.dag")
        t0 = time.perf_counter()
        sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv", timeout=5400)
        dag_s = time.perf_counter() - t0
        table = pd.read_csv(project / "results" / "summary.csv")
    table["delegate"] = table["delegate"].fillna("")
    keys = ["model", "artifact", "delegate"]
    p50 = table.pivot_table(index=keys, columns="device", values="latency_p50_ms").reset_index()
    rows = []
    for _, row in p50.iterrows():
        entry = {k: row[k] for k in keys}
        entry["p50_ms"] = {d: float(row[d]) for d in RATIO_DEVICES}
        for device in RATIO_DEVICES[1:]:
            entry[f"ratio_{device}"] = float(row[device] / row["local"])
        rows.append(entry)
        print(f"{entry['model']:20s} {entry['artifact']:18s} {entry['delegate']:24s} "
              + "  ".join(f"{d} {entry[f'ratio_{d}']:.0f}x" for d in RATIO_DEVICES[1:]))
    ratios = [r[f"ratio_{d}"] for r in rows for d in RATIO_DEVICES[1:]]
    return {"artifacts": rows, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_median": float(np.median(ratios)), "dag_wall_s": dag_s,
            "settings": settings + [f"artifacts={list(RATIO_ARTIFACTS)}", "models=[mobilenetv2-rgb, mobilenetv2-yuv420]"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="setup, deploy, ratio (default: all three)")
    parser.add_argument("--repeats", type=int, default=3, help="deploy: runs of each kind")
    parser.add_argument("--machine-note", default=MACHINE_NOTE,
                    help="how busy the machine was (recorded as machine_note)")
    args = parser.parse_args()
    unknown = set(args.parts) - {"setup", "deploy", "ratio"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: expected setup, deploy, ratio")
    if os.geteuid() != 0:
        sys.exit("error: the virtual board needs root: run this with sudo")
    parts = args.parts or ["setup", "deploy", "ratio"]
    report = read_json(OUT) if OUT.exists() else {}
    report.update(what="the virtual aarch64 board (scripts/virtual-board.sh): set-up time, deploy overhead, "
                       "emulated vs native latency", machine_note=args.machine_note,
                  host={"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version()})
    was_up = is_up()
    try:
        for part in parts:
            if part == "setup":
                report["setup"] = setup()
            else:
                if not is_up():  # deploy and ratio measure on the board (from its cache: seconds)
                    board("up")
                report[part] = deploy(args.repeats) if part == "deploy" else ratio()
            write_json(OUT, report)  # after each part: a later failure keeps what was measured
    finally:
        if not was_up:  # left as it was found
            board("down")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
