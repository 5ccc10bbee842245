"""Detection export stage: one artifact of a trained detector (ONNX / TFLite, fp32 / int8).

    python -m workflow.detection.export --params params.yaml --model yolov5n --artifact onnx-int8-static \
        --checkpoint results/detection/models/yolov5n/model.pt --data data/detection \
        --out results/detection/artifacts/yolov5n/onnx-int8-static.onnx

Artifacts (params.yaml `detection.artifacts`):
  onnx-fp32          ultralytics' exporter (format onnx, fixed batch 1 and h x w, opset
                     `detection.export.opset`, onnxslim). It is the tool that knows the head:
                     the graph ends in decoded boxes and class scores, as the runner expects.
  onnx-int8-dynamic  ONNX Runtime quantize_dynamic of onnx-fp32 (seed 001's recipe: per channel,
                     uint8 weights), through workflow.quantize's wrapper and quant_pre_process
  onnx-int8-static   ONNX Runtime quantize_static (QDQ, int8 weights, uint8 activations) calibrated
                     on the packed calib split, letterboxed exactly as in evaluation; the head's
                     decoding (DFL, box/score concat) stays float (see head_decode_nodes)
  tflite-fp32        ultralytics' exporter (format litert, via litert-torch: input stays NCHW)
  tflite-int8        the same with int8=True: full-integer post-training quantization calibrated
                     on the calib split (calib.yaml; never on the val images that are evaluated)

The ONNX and LiteRT conversions come from ultralytics' exporter rather than workflow.export:
that stage exports the classification models of workflow.models, while the exporter handles
the YOLO head (anchor decoding, DFL) and its known export flags. The quantizers are the same
ONNX Runtime functions the classification track uses.

A report <out without suffix>.json (written last) records format, precision, settings, size,
seconds and a parity figure: max |artifact - fp32| head output on the calib images. A
conversion that fails writes an empty artifact file and a report with status "failed" and the
reason, so the summary shows a failed row instead of a missing one.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from workflow.detection.ultra import OFFLINE_SETTINGS  # first: offline settings before ultralytics loads
from workflow import layout
from workflow.config import load_params, params_hash
from workflow.detection.pack import verify_split
from workflow.detection.runner import load_model, preprocess
from workflow.detection.plan import imgsz_hw
from workflow.errors import UserError, cli
from workflow.io import atomic_path, sha256_file, write_json, write_text
from workflow.provenance import provenance

ARTIFACTS = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "tflite-fp32", "tflite-int8")
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
PARITY_IMAGES = 8


def artifact_file(model_dir, artifact):
    return f"{model_dir}/{artifact}{SUFFIX[artifact.split('-')[0]]}"


def calibration_inputs(data_dir, height, width, layout="NCHW"):
    manifest = verify_split(data_dir, "calib")
    paths = [Path(data_dir) / "images" / "calib" / f["image"] for f in manifest["splits"]["calib"]["files"]]
    return np.concatenate([preprocess(p, height, width, layout)[0] for p in paths])


def ultralytics_export(checkpoint, fmt, height, width, work, **kwargs):
    """Export a copy of the checkpoint inside ``work`` (the exporter writes beside its input)."""
    from ultralytics import YOLO

    src = Path(work) / "model.pt"
    shutil.copyfile(checkpoint, src)
    return Path(YOLO(str(src)).export(format=fmt, imgsz=[height, width], batch=1, device="cpu", **kwargs))


def export_onnx(checkpoint, height, width, ex, data_dir, work, source):
    path = ultralytics_export(checkpoint, "onnx", height, width, work, opset=ex["opset"], simplify=True,
                              dynamic=False)
    return path, {"opset": ex["opset"], "simplify": "onnxslim"}


def head_decode_nodes(path):
    """Nodes of the Detect head after its conv branches: DFL decoding and the box/score concat.

    Static quantization keeps them in float: one uint8 scale over boxes in pixels (0..imgsz) and
    class scores (0..1) leaves the scores a single step or two, and mAP collapses.
    """
    nodes = onnx.load(str(path)).graph.node
    head = max(int(n.name.split("/")[1].split(".")[1]) for n in nodes if n.name.startswith("/model."))
    return [n.name for n in nodes if n.name.startswith(f"/model.{head}/")
            and "/cv2." not in n.name and "/cv3." not in n.name]


def quantize_static_head_float(src, dst, s, inputs):
    """workflow.quantize's static settings, with the head's decoding left in float."""
    from onnxruntime.quantization import quantize_static

    from workflow.quantize import CALIBRATIONS, FORMATS, QUANT_TYPES, PackedCalibrationReader

    quantize_static(src, dst, PackedCalibrationReader(inputs, s["calib_batch"]),
                    quant_format=FORMATS[s["quant_format"]], calibrate_method=CALIBRATIONS[s["calibration"]],
                    per_channel=s["per_channel"], activation_type=QUANT_TYPES[s["activation_type"]],
                    weight_type=QUANT_TYPES[s["weight_type"]], nodes_to_exclude=head_decode_nodes(src),
                    extra_options={"CalibStridedMinMax": 1, **({"CalibPercentile": s["percentile"]}
                                                               if s["calibration"] == "percentile" else {})})


def quantize_onnx(method):
    def export(checkpoint, height, width, ex, data_dir, work, source):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from workflow.quantize import quantize_dynamic_model, quiet_ort_logging

        if source is None or not Path(source).is_file():
            raise UserError(f"{method} quantization needs the onnx-fp32 artifact: pass --source")
        settings = {"per_channel": ex["per_channel"], "calib_batch": 1,
                    "weight_type": ex["dynamic_weight_type"] if method == "dynamic" else "qint8",
                    "activation_type": "quint8", "quant_format": "qdq", "calibration": ex["static_calibration"],
                    "percentile": 99.999}
        inputs = {"images": calibration_inputs(data_dir, height, width)} if method == "static" else None
        pre, out = Path(work) / "pre.onnx", Path(work) / f"int8-{method}.onnx"
        with quiet_ort_logging():
            quant_pre_process(str(source), str(pre))
            (quantize_dynamic_model if method == "dynamic" else quantize_static_head_float)(pre, out, settings,
                                                                                              inputs)
        keep = ("per_channel", "weight_type") + (("activation_type", "quant_format", "calibration")
                                                 if method == "static" else ())
        float_nodes = head_decode_nodes(pre) if method == "static" else []
        return out, {"method": method, **{k: settings[k] for k in keep}, "float_nodes": len(float_nodes),
                     "calib_images": len(inputs["images"]) if inputs else 0}
    return export


def export_tflite(int8):
    def export(checkpoint, height, width, ex, data_dir, work, source):
        kwargs = {"int8": True, "data": str(Path(data_dir) / "calib.yaml")} if int8 else {}
        path = ultralytics_export(checkpoint, "litert", height, width, work, **kwargs)
        return path, {"converter": "litert-torch (ultralytics format=litert)",
                      "quantization": "full-integer static, calib split" if int8 else None}
    return export


EXPORTERS = {"onnx-fp32": export_onnx, "onnx-int8-dynamic": quantize_onnx("dynamic"),
             "onnx-int8-static": quantize_onnx("static"), "tflite-fp32": export_tflite(False),
             "tflite-int8": export_tflite(True)}


def parity(artifact, checkpoint, inputs, threads):
    """The artifact's raw head output vs PyTorch's on a few calibration images.

    max |diff| overall and of the class scores alone, and how many distinct score values the
    artifact produced: one level means int8 crushed every score to the same value (mAP collapses
    even when the boxes are fine; an undertrained model's tiny scores show it first).
    """
    reference, model = load_model(checkpoint, threads), load_model(artifact, threads)
    outputs, references = [], []
    for x in inputs[:PARITY_IMAGES]:
        x = x[None]
        y = model(x.transpose(0, 2, 3, 1).copy() if model.layout == "NHWC" else x)
        outputs.append(np.asarray(y, np.float32))
        references.append(reference(x))
    y, r = np.concatenate(outputs), np.concatenate(references)
    return {"images": len(outputs), "max_abs_diff_vs_pytorch": float(np.abs(y - r).max()),
            "score_max_abs_diff": float(np.abs(y[:, 4:] - r[:, 4:]).max()),
            "score_levels": int(len(np.unique(y[:, 4:]))), "score_levels_pytorch": int(len(np.unique(r[:, 4:])))}


def export(params, name, artifact, checkpoint, data_dir, out, source):
    det = params["detection"]
    if name not in det["models"]:
        raise UserError(f"--model {name!r}: not in params.yaml detection.models")
    if artifact not in EXPORTERS:
        raise UserError(f"--artifact {artifact!r}: expected one of {', '.join(EXPORTERS)}")
    if not Path(checkpoint).is_file():
        raise UserError(f"{checkpoint}: checkpoint not found (run the detection train stage)")
    spec, ex = det["models"][name], det["export"]
    height, width = imgsz_hw(spec)
    out = Path(out)
    report_path = out.with_suffix(".json")
    report_path.unlink(missing_ok=True)
    fmt, precision = artifact.split("-")[0], "int8" if "int8" in artifact else "fp32"
    report = {"model": name, "artifact": artifact, "format": fmt, "precision": precision,
              "imgsz": [height, width], "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detexport.") as work:
        try:
            produced, settings = EXPORTERS[artifact](checkpoint, height, width, ex, data_dir, work, source)
            with atomic_path(out) as tmp:
                shutil.copyfile(produced, tmp)
            report.update(status="ok", reason="", settings=settings, seconds=time.perf_counter() - start,
                          size_bytes=out.stat().st_size, sha256=sha256_file(out),
                          parity=parity(out, checkpoint, calibration_inputs(data_dir, height, width),
                                        det["evaluate"]["num_threads"]))
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a converter failing is a result (a failed row), not a crash
            write_text(out, "")
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
            report.update(status="failed", reason=reason, seconds=time.perf_counter() - start)
            print(f"export {name}/{artifact} failed: {reason}")
    report["offline_settings"] = OFFLINE_SETTINGS
    report["provenance"] = provenance(params_hash({"export": ex, "model": spec}),
                                      ("ultralytics", "litert-torch", "ai-edge-litert"))
    write_json(report_path, report)
    return report


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--artifact", required=True, choices=ARTIFACTS)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=layout.DET_DATA)
    parser.add_argument("--source", help="the onnx-fp32 artifact (for the ONNX Runtime quantizers)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    r = export(load_params(args.params), args.model, args.artifact, args.checkpoint, args.data, args.out,
               args.source)
    if r["status"] == "ok":
        print(f"exported {args.out} ({r['size_bytes'] / 1e6:.2f} MB, {r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
