"""File layout of the detection track, shared by workflow.dag (DVC stages) and rules/detection.smk."""
DATA = "data/detection"
RESULTS = "results/detection"
ARTIFACTS = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "tflite-fp32", "tflite-int8")
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
PACK_OUTPUTS = tuple(f"{DATA}/{f}" for f in ("images", "labels", "data.yaml", "calib.yaml", "val_coco.json",
                                              "manifest.json"))


def imgsz_hw(spec):
    """A model's input size as (height, width); an int is square."""
    size = spec["imgsz"]
    return (size, size) if isinstance(size, int) else tuple(size)


def model_dir(model):
    return f"{RESULTS}/models/{model}"


def artifact_path(model, artifact):
    return f"{RESULTS}/artifacts/{model}/{artifact}{SUFFIX[artifact.split('-')[0]]}"


def report_path(model, artifact):
    return f"{RESULTS}/artifacts/{model}/{artifact}.json"


def eval_path(model, artifact):
    return f"{RESULTS}/eval/{model}/{artifact}.json"


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


def train_command(det, model):
    teacher, source = teacher_model(det, model), prune_source(det, model)
    extra = f" --teacher {model_dir(teacher)}/model.pt" if teacher else ""
    extra += f" --prune-from {model_dir(source)}/model.pt" if source else ""
    return (f"python -m workflow.detection.train --params params.yaml --model {model} --data {DATA} "
            f"--out {model_dir(model)}{extra}")


def export_command(model, artifact):
    source = f" --source {artifact_path(model, 'onnx-fp32')}" if artifact.startswith("onnx-int8") else ""
    return (f"python -m workflow.detection.export --params params.yaml --model {model} --artifact {artifact} "
            f"--checkpoint {model_dir(model)}/model.pt --data {DATA} --out {artifact_path(model, artifact)}{source}")


def evaluate_command(model, artifact):
    path = f"{model_dir(model)}/model.pt" if artifact == "pytorch" else artifact_path(model, artifact)
    return (f"python -m workflow.detection.evaluate --params params.yaml --model {model} --artifact {path} "
            f"--data {DATA} --out {eval_path(model, artifact)}")


def summary_inputs(det):
    files = []
    for model in det["models"]:
        files.append(f"{model_dir(model)}/train_metrics.json")
        files += [eval_path(model, a) for a in ("pytorch", *model_artifacts(det, model))]
        files += [report_path(model, a) for a in model_artifacts(det, model)]
    return files


AGGREGATE_COMMAND = (f"python -m workflow.detection.aggregate --params params.yaml --results {RESULTS} "
                     f"--out {RESULTS}/summary.csv")
