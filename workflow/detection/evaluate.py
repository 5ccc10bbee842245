"""Detection evaluate stage: COCO mAP and the pre/inference/post time split of one artifact on the val split.

    python -m workflow.detection.evaluate --params params.yaml --model yolov5n \
        --artifact results/detection/artifacts/yolov5n/onnx-int8-static.onnx --data data/detection \
        --out results/detection/eval/yolov5n/onnx-int8-static.json

--artifact is an exported file (.onnx / .tflite, with its <artifact>.json export report beside
it) or the trained model.pt (the PyTorch reference). Every artifact goes through the same
runner (workflow.detection.runner): letterbox pre-processing, the runtime, decoding and NMS
in numpy, so mAP differences come from the artifact alone. mAP50-95 and mAP50 are
pycocotools' COCOeval on the val labels exported by the pack stage (val_coco.json).

An artifact whose export failed (report status "failed") gives a metrics file with
status "failed" and the reason, so the summary shows the row.
"""
import argparse
import contextlib
import functools
import io
from pathlib import Path

from tqdm import tqdm

from workflow import layout
from workflow.config import load_params, params_hash
from workflow.detection.pack import verify_split
from workflow.detection.plan import imgsz_hw
from workflow.detection.runner import load_model, run, summarize
from workflow.errors import UserError, cli
from workflow.io import read_json, write_json
from workflow.provenance import provenance


def coco_map(gt_path, detections, image_ids):
    """(mAP50-95, mAP50) of the detections by pycocotools; 0 when there is no detection at all."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for image_id, (boxes, scores, classes) in zip(image_ids, detections):
        for (x1, y1, x2, y2), score, cls in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
            results.append({"image_id": image_id, "category_id": int(cls),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    if not results:
        return 0.0, 0.0, 0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(max(evaluator.stats[0], 0.0)), float(max(evaluator.stats[1], 0.0)), len(results)


def artifact_facts(artifact):
    """(name, format, precision, export report) of an artifact path."""
    artifact = Path(artifact)
    if artifact.suffix == ".pt":
        return "pytorch", "pytorch", "fp32", None
    report_path = artifact.with_suffix(".json")
    report = read_json(report_path)
    return artifact.stem, report["format"], report["precision"], report


def evaluate(params, name, artifact, data_dir, out):
    det = params["detection"]
    if name not in det["models"]:
        raise UserError(f"--model {name!r}: not in params.yaml detection.models")
    spec, ev = det["models"][name], det["evaluate"]
    data_dir = Path(data_dir)
    manifest = verify_split(data_dir, "val")
    artifact_name, fmt, precision, report = artifact_facts(artifact)
    height, width = imgsz_hw(spec)
    row = {"model": name, "artifact": artifact_name, "format": fmt, "precision": precision,
           "imgsz": [height, width], "val_images": manifest["splits"]["val"]["images"],
           "size_bytes": Path(artifact).stat().st_size if Path(artifact).exists() else None}
    digest = params_hash({"evaluate": ev, "model": spec})
    if report is not None and report.get("status") == "failed":
        failed = {**row, "status": "failed", "reason": report["reason"]}
        write_json(out, {**failed, "provenance": provenance(digest, ("ultralytics", "pycocotools"))})
        return failed
    gt = read_json(data_dir / "val_coco.json")
    images = [data_dir / image["file_name"] for image in gt["images"]]
    image_ids = [image["id"] for image in gt["images"]]
    try:
        model = load_model(artifact, ev["num_threads"])
        bar = functools.partial(tqdm, desc=f"{name}/{artifact_name}", unit="img")
        detections, times = run(model, images, height, width, manifest["nc"], ev["conf"], ev["iou"],
                                ev["max_det"], ev["warmup_runs"], progress=bar)
    except ValueError as err:
        raise UserError(str(err)) from None
    map50_95, map50, n_dets = coco_map(data_dir / "val_coco.json", detections, image_ids)
    result = {**row, "status": "ok", "reason": "", "map50_95": map50_95, "map50": map50, "detections": n_dets,
              "runtime": model.providers[0], "threads": ev["num_threads"], **summarize(times),
              "conf": ev["conf"], "iou": ev["iou"], "max_det": ev["max_det"],
              "provenance": provenance(digest, ("ultralytics", "pycocotools", "ai-edge-litert"))}
    write_json(out, result)
    return result


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--data", default=layout.DET_DATA)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    r = evaluate(load_params(args.params), args.model, args.artifact, args.data, args.out)
    if r.get("status") == "ok":
        print(f"{args.model}/{r['artifact']}: mAP50-95 {r['map50_95']:.4f} mAP50 {r['map50']:.4f}, "
              f"pre/infer/post {r['pre_mean_ms']:.1f}/{r['infer_mean_ms']:.1f}/{r['post_mean_ms']:.1f} ms")
    else:
        print(f"{args.model}/{r['artifact']}: failed")


if __name__ == "__main__":
    main()
