"""What the detection track builds from params.yaml `detection` (paths: workflow/layout.py)."""
ARTIFACTS = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "tflite-fp32", "tflite-int8")


def imgsz_hw(spec):
    """A model's input size as (height, width); an int is square."""
    size = spec["imgsz"]
    return (size, size) if isinstance(size, int) else tuple(size)


def model_artifacts(det, model):
    """The model's artifacts (its own `artifacts` list or detection.artifacts), onnx-fp32 first when the
    ONNX Runtime quantizers need it."""
    wanted = det["models"][model].get("artifacts", det["artifacts"])
    if any(a.startswith("onnx-int8") for a in wanted) and "onnx-fp32" not in wanted:
        wanted = ["onnx-fp32", *wanted]
    return [a for a in ARTIFACTS if a in wanted]


def teacher_model(det, model):
    """The teacher's name when it is another detection model of this DAG, else None."""
    teacher = det["models"][model].get("teacher")
    return teacher if teacher in det["models"] else None


def prune_source(det, model):
    """The entry a `prune` entry starts from, else None."""
    return det["models"][model].get("prune", {}).get("source")
