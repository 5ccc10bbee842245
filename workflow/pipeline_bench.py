"""Pre-processing pipeline stage (seed 000 §7-8): RGB vs YUV 4:2:0 input, per source resolution.

    python -m workflow.pipeline_bench --params params.yaml --device local \
        --rgb-model results/artifacts/mobilenetv2-rgb/onnx-fp32.onnx \
        --yuv-model results/artifacts/mobilenetv2-yuv420/onnx-fp32.onnx \
        --out results/pipeline/local/pipeline.json

A real photograph (``benchmark.pipeline.frame``; by default the bus.jpg that ships
with ultralytics) is scaled to each resolution of ``benchmark.pipeline.resolutions``
and converted to an I420 frame, as a camera delivers it. On the device, the runner
(``device_runner.py --pipeline``, OpenCV) times per frame: the RGB model's chain
(resize the Y, U, V planes to the model size -> YUV->RGB conversion -> infer) against
the YUV model's (resize the planes -> infer), single-threaded and with
``benchmark.pipeline.workers`` worker threads. Writes, beside ``--out``:

  table.csv   seed 000's table: per resolution, latency (p50, ms), single-thread fps and
              multi-thread fps of both models, and the YUV model's gain in %; ``imgsz`` is the
              models' input size (HxW) every frame is resized to
  fig20.csv   seed 000's Fig. 20 data: the gains against the image area (pixels)

and ``--out`` (all measurements and provenance) last. Gains: latency
``(1 - yuv/rgb) * 100``, throughput ``(yuv/rgb - 1) * 100``.
"""
import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.benchmark import check_runtime_listed, device_settings, failed_result, run_on_device
from workflow.config import check_device, load_params, params_hash
from workflow.errors import UserError, cli
from workflow.inventory import device_kind, device_profile
from workflow.io import atomic_path, sha256_file, write_json
from workflow.provenance import provenance
from workflow.remote import DeviceFailure

TABLE_COLUMNS = ["width", "height", "area_px", "imgsz", "status", "reason",
                 "rgb_latency_ms", "rgb_single_fps", "rgb_multi_fps",
                 "yuv_latency_ms", "yuv_single_fps", "yuv_multi_fps",
                 "gain_latency_pct", "gain_single_pct", "gain_multi_pct",
                 "rgb_resize_ms", "rgb_color_conversion_ms", "rgb_infer_ms",
                 "yuv_resize_ms", "yuv_color_conversion_ms", "yuv_infer_ms", "workers", "device_kind"]
FIG20_COLUMNS = ["area_px", "width", "height", "gain_latency_pct", "gain_single_pct", "gain_multi_pct"]


def default_frame():
    """ultralytics/assets/bus.jpg, found without importing ultralytics."""
    spec = importlib.util.find_spec("ultralytics")
    path = Path(spec.submodule_search_locations[0]) / "assets" / "bus.jpg" if spec else None
    if path is None or not path.is_file():
        raise UserError("benchmark.pipeline.frame: null needs ultralytics' assets/bus.jpg (pip install ultralytics), "
                        "or set it to a photo file")
    return path


def read_photo(path):
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"benchmark.pipeline.frame: {path} is not a readable image file")
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB


def table_rows(result, resolutions):
    if result["status"] != "ok":
        return [{"width": w, "height": h, "area_px": w * h, "status": "failed", "reason": result["reason"]}
                for w, h in resolutions]
    rows = []
    imgsz = "x".join(map(str, result["models"]["rgb"]["input_hw"]))  # what each frame is resized to
    for entry in result["resolutions"]:
        rgb, yuv = entry["rgb"], entry["yuv"]
        row = {"width": entry["width"], "height": entry["height"], "area_px": entry["area_px"], "imgsz": imgsz,
               "status": "ok",
               "reason": "", "workers": yuv["multi_thread"]["workers"]}
        for kind, data in (("rgb", rgb), ("yuv", yuv)):
            row[f"{kind}_latency_ms"] = data["single_thread"]["latency_ms"]["p50"]
            row[f"{kind}_single_fps"] = data["single_thread"]["fps"]
            row[f"{kind}_multi_fps"] = data["multi_thread"]["fps"]
            for stage, ms in data["single_thread"]["stages_mean_ms"].items():
                row[f"{kind}_{stage}_ms"] = ms
        row["gain_latency_pct"] = (1 - row["yuv_latency_ms"] / row["rgb_latency_ms"]) * 100
        row["gain_single_pct"] = (row["yuv_single_fps"] / row["rgb_single_fps"] - 1) * 100
        row["gain_multi_pct"] = (row["yuv_multi_fps"] / row["rgb_multi_fps"] - 1) * 100
        rows.append(row)
    return rows


def pipeline_bench(params, device, rgb_model, yuv_model):
    profile = device_profile(device, params["benchmark"]["inventory"])
    settings = device_settings(params["benchmark"], profile)["pipeline"]
    for path in (rgb_model, yuv_model):
        if not Path(path).is_file():
            raise UserError(f"{path}: model artifact not found (run the export stage)")
    frame = Path(settings["frame"]) if settings["frame"] else default_frame()
    photo = read_photo(frame)
    resolutions = [tuple(r) for r in settings["resolutions"]]
    runner_args = ["--pipeline", "--runtime", "onnxruntime",
                   "--resolutions", ",".join(f"{w}x{h}" for w, h in resolutions),
                   "--workers", str(settings["workers"]), "--warmup", str(settings["warmup_frames"]),
                   "--min-runs", str(settings["min_frames"]), "--min-duration", str(settings["min_duration_s"]),
                   "--device-name", device]
    if profile and profile["cpus"]:
        runner_args += ["--cpus", ",".join(map(str, profile["cpus"]))]
    deploy = None
    with tempfile.TemporaryDirectory(prefix="pipeline-") as workdir:
        frame_npy = Path(workdir) / "frame.npy"
        np.save(frame_npy, photo)
        files = {"--model": Path(rgb_model), "--yuv-model": Path(yuv_model), "--frame": frame_npy}
        try:
            check_runtime_listed(profile, "onnxruntime")
            result, deploy = run_on_device(device, runner_args, files, workdir, params["benchmark"]["inventory"])
        except DeviceFailure as failure:
            result = failed_result(device, failure)
    kind = device_kind(profile)
    return {
        "device": device,
        "device_kind": kind,
        "rgb_artifact": str(rgb_model), "rgb_sha256": sha256_file(rgb_model),
        "yuv_artifact": str(yuv_model), "yuv_sha256": sha256_file(yuv_model),
        "photo": {"path": str(frame), "sha256": sha256_file(frame), "height": photo.shape[0], "width": photo.shape[1]},
        **result,
        "deploy": deploy,
        "table": [{**row, "device_kind": kind} for row in table_rows(result, resolutions)],
        "provenance": provenance(params_hash(settings), extra_packages=("opencv-python",)),
    }


def write_csv(path, rows, columns):
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False, float_format="%.6g")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--device", required=True, help="one of params.yaml benchmark.devices")
    p.add_argument("--rgb-model", required=True, help="the RGB model (.onnx)")
    p.add_argument("--yuv-model", required=True, help="the YUV 4:2:0 model (.onnx)")
    p.add_argument("--out", required=True, help="result JSON; table.csv and fig20.csv are written beside it")
    return p.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    params = load_params(args.params)
    check_device(params, args.device)
    result = pipeline_bench(params, args.device, args.rgb_model, args.yuv_model)
    out = Path(args.out)
    write_csv(out.with_name("table.csv"), result["table"], TABLE_COLUMNS)
    write_csv(out.with_name("fig20.csv"), [r for r in result["table"] if r["status"] == "ok"], FIG20_COLUMNS)
    write_json(out, result)
    print(f"pipeline on {args.device}: {result['status']}"
          + (f" ({result['reason']})" if result["status"] != "ok" else "") + f" -> {out}")


if __name__ == "__main__":
    main()
