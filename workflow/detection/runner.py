"""Run a YOLO detector artifact image by image, timing pre-processing, inference and post-processing apart.

The split is the one seed 001's Model Compression Box reports per session (average
pre-process, inference and post-process time). This file is the detection counterpart of
workflow/device_runner.py and, like it, depends only on numpy, OpenCV and the runtime it
drives (onnxruntime, ai_edge_litert; torch only for the PyTorch reference), so it can be
copied to a board.

  pre   decode (cv2.imread) + letterbox to the model's h x w (aspect kept, grey 114 padding,
        centred, bilinear; as ultralytics' LetterBox) + RGB, 0..1 float, NCHW or NHWC
  infer the runtime call only
  post  decode the (4 + nc) x anchors head output (cx, cy, w, h in input pixels, class
        scores), confidence threshold, class-aware NMS, max_det, boxes back to image pixels
"""
import time
from pathlib import Path

import cv2
import numpy as np


def letterbox(image, height, width):
    """Resize keeping the aspect ratio and pad to height x width; returns (image, gain, (pad_x, pad_y))."""
    h0, w0 = image.shape[:2]
    gain = min(height / h0, width / w0)
    new_w, new_h = max(1, round(w0 * gain)), max(1, round(h0 * gain))
    if (new_w, new_h) != (w0, h0):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, gain, (left, top)


def preprocess(path, height, width, layout="NCHW"):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode the image")
    boxed, gain, pad = letterbox(image, height, width)
    x = boxed[:, :, ::-1].astype(np.float32) / 255.0  # BGR -> RGB, 0..1
    x = x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x), gain, pad, image.shape[:2]


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression on xyxy boxes; indices kept, best first."""
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def postprocess(output, nc, gain, pad, shape, conf, iou, max_det):
    """Head output (4 + nc, anchors) -> (xyxy boxes in image pixels, scores, classes)."""
    pred = output.reshape(4 + nc, -1) if output.shape[-1] != 4 + nc else output.reshape(-1, 4 + nc).T
    scores_all = pred[4:]
    classes = scores_all.argmax(0)
    scores = scores_all[classes, np.arange(pred.shape[1])]
    mask = scores > conf
    xywh, scores, classes = pred[:4, mask].T, scores[mask], classes[mask]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    offset = classes[:, None].astype(np.float32) * 7680.0  # class-aware NMS in one pass
    keep = nms(boxes + offset, scores, iou)[:max_det]
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / gain).clip(0, shape[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / gain).clip(0, shape[0])
    return boxes, scores, classes


class OnnxModel:
    def __init__(self, path, threads):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.layout = "NHWC" if self.input.shape[-1] == 3 else "NCHW"
        self.providers = self.session.get_providers()

    def __call__(self, x):
        return self.session.run(None, {self.input.name: x})[0]


class TfliteModel:
    """A LiteRT model; int8 inputs/outputs are (de)quantized with their own scale and zero point."""

    def __init__(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.layout = "NHWC" if self.input["shape"][-1] == 3 else "NCHW"
        self.providers = ["LiteRT-CPU"]

    def __call__(self, x):
        scale, zero = self.input["quantization"]
        if self.input["dtype"] != np.float32:
            x = np.clip(np.round(x / scale + zero), np.iinfo(self.input["dtype"]).min,
                        np.iinfo(self.input["dtype"]).max).astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        y = (y.astype(np.float32) - zero) * scale if self.output["dtype"] != np.float32 else y.copy()
        # ultralytics' LiteRT graphs give cx, cy, w, h divided by the input width/height
        height, width = (x.shape[1:3] if self.layout == "NHWC" else x.shape[2:4])
        y[:, :4] *= np.array([width, height, width, height], np.float32)[None, :, None]
        return y


class TorchModel:
    """The PyTorch reference: an ultralytics checkpoint, evaluated through the same pre/post-processing."""

    def __init__(self, path, threads):
        import torch

        import workflow.detection.ultra  # noqa: F401 - unpickling imports ultralytics: keep it offline

        torch.set_num_threads(threads)
        self.torch = torch
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        self.model = (ckpt.get("ema") or ckpt["model"]).float().fuse().eval()  # BN folded, as exported
        self.layout = "NCHW"
        self.providers = [f"torch-{torch.__version__}"]

    def __call__(self, x):
        with self.torch.no_grad():
            y = self.model(self.torch.from_numpy(x))
        return (y[0] if isinstance(y, (tuple, list)) else y).numpy()


BACKENDS = {".onnx": OnnxModel, ".tflite": TfliteModel, ".pt": TorchModel}


def load_model(path, threads):
    suffix = Path(path).suffix
    if suffix not in BACKENDS:
        raise ValueError(f"{path}: unknown artifact type {suffix!r} (expected {', '.join(BACKENDS)})")
    return BACKENDS[suffix](path, threads)


def run(model, images, height, width, nc, conf, iou, max_det, warmup_runs=3, progress=iter):
    """Detections and per-image stage times (ms) over ``images`` (paths).

    Returns ([(boxes, scores, classes)], {"pre": [...], "infer": [...], "post": [...]}); the
    first ``warmup_runs`` passes over the first image are not timed. ``progress`` wraps the
    image loop (e.g. tqdm).
    """
    if images and warmup_runs:
        x, *_ = preprocess(images[0], height, width, model.layout)
        for _ in range(warmup_runs):
            model(x)
    detections, times = [], {"pre": [], "infer": [], "post": []}
    for path in progress(images):
        t0 = time.perf_counter()
        x, gain, pad, shape = preprocess(path, height, width, model.layout)
        t1 = time.perf_counter()
        y = model(x)
        t2 = time.perf_counter()
        detections.append(postprocess(np.asarray(y, dtype=np.float32), nc, gain, pad, shape, conf, iou, max_det))
        t3 = time.perf_counter()
        times["pre"].append((t1 - t0) * 1e3)
        times["infer"].append((t2 - t1) * 1e3)
        times["post"].append((t3 - t2) * 1e3)
    return detections, times


def summarize(times):
    """Mean and p50 of each stage and of their sum, in ms."""
    out = {}
    total = np.sum([times[k] for k in ("pre", "infer", "post")], axis=0)
    for key, values in (*times.items(), ("total", total)):
        values = np.asarray(values, dtype=np.float64)
        out[f"{key}_mean_ms"] = float(values.mean()) if values.size else None
        out[f"{key}_p50_ms"] = float(np.median(values)) if values.size else None
    return out
