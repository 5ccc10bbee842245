"""Overhead of the benchmark runner's timing loop against a bare InferenceSession.run loop.

    .venv/bin/python bench/harness_overhead.py [--model m.onnx] [--blocks 20] [--runs 200]

Both loops run in this process at 1 thread on the same model and input samples, in
alternating blocks (the order flips every block), so drift in clock speed or
temperature hits both alike. The runner side is the real code path of
workflow/device_runner.py: its ONNX Runtime adapter (session options, feeds) and its
``time_runs`` loop. The bare side is ``t0; sess.run(None, feed); t1`` on a session
with only ``intra_op_num_threads=1`` set. Without --model it exports the project's
MobileNetV2 (width 0.5, 10 classes, 32x32 RGB, as trained by the pipeline).

Writes bench/results/harness_overhead.json; the target is runner p50 <= 1.05 x bare p50.
"""
import argparse
import importlib.util
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.io import write_json  # noqa: E402

TARGET = 1.05


def load_runner():
    """Import device_runner.py from its file, as a board does (it is not used as a package module there)."""
    spec = importlib.util.spec_from_file_location("device_runner", ROOT / "workflow" / "device_runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_model(folder):
    import torch

    from workflow.models import build_model

    spec = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"}
    model = build_model(spec, num_classes=10, image_size=32).eval()
    path = Path(folder) / "mobilenetv2-0.5-rgb32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def bare_loop(sess, feeds, runs):
    clock = time.perf_counter_ns
    latencies = []
    for i in range(runs):
        feed = feeds[i % len(feeds)]
        t0 = clock()
        sess.run(None, feed)
        latencies.append(clock() - t0)
    return latencies


def measure(model, blocks, runs, samples, warmup):
    runner = load_runner()
    adapter = runner.OnnxRuntime(model, None)
    adapter.load(1)
    shapes = {name: [1 if d is None else d for d in shape] for name, shape, _ in adapter.input_specs()}
    rng = np.random.default_rng(0)
    raw = [{name: rng.uniform(0, 255, shape).astype(np.float32) for name, shape in shapes.items()}
           for _ in range(samples)]
    feeds = [adapter.make_feed(sample) for sample in raw]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    bare = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    runner.time_runs(adapter.run, feeds, warmup, 1, 0)
    bare_loop(bare, raw, warmup)
    runner_ns, bare_ns = [], []
    for block in range(blocks):
        sides = ["runner", "bare"] if block % 2 == 0 else ["bare", "runner"]
        for side in sides:
            if side == "runner":
                runner_ns += runner.time_runs(adapter.run, feeds, 0, runs, 0)[0]
            else:
                bare_ns += bare_loop(bare, raw, runs)
    return np.asarray(runner_ns) / 1e6, np.asarray(bare_ns) / 1e6, runner.cpu_model()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="an .onnx model (default: export the project's MobileNetV2 0.5 at 32x32)")
    p.add_argument("--blocks", type=int, default=20)
    p.add_argument("--runs", type=int, default=200, help="runs per block and side")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "harness_overhead.json"))
    p.add_argument("--machine-note", default="", help="how busy the machine was (recorded as machine_note)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else export_model(tmp)
        runner_ms, bare_ms, cpu = measure(model, args.blocks, args.runs, args.samples, args.warmup)

    runner_p50, bare_p50 = float(np.median(runner_ms)), float(np.median(bare_ms))
    ratio = runner_p50 / bare_p50
    result = {
        "runner_p50_ms": runner_p50,
        "bare_p50_ms": bare_p50,
        "ratio": ratio,
        "target": f"<={TARGET}",
        "meets_target": ratio <= TARGET,
        "runner_mean_ms": float(runner_ms.mean()),
        "bare_mean_ms": float(bare_ms.mean()),
        "runner_p90_ms": float(np.percentile(runner_ms, 90)),
        "bare_p90_ms": float(np.percentile(bare_ms, 90)),
        "runs_each": len(runner_ms),
        "blocks": args.blocks,
        "runs_per_block": args.runs,
        "threads": 1,
        "model": str(args.model) if args.model else "exported: workflow.models mobilenetv2 w0.5, 10 classes, 32x32 rgb",
        "onnxruntime": ort.__version__,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "machine_note": args.machine_note,
    }
    write_json(args.out, result)
    print(f"runner p50 {runner_p50:.4f} ms, bare p50 {bare_p50:.4f} ms, ratio {ratio:.3f} "
          f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}) over {len(runner_ms)} runs each "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
