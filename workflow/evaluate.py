"""Evaluate stage: top-1 of an exported artifact on the packed test split, run by its own runtime.

    python -m workflow.evaluate --params params.yaml --artifact results/artifacts/M/onnx-fp32.onnx \
        --packed data/packed/rgb/test.npy --manifest data/packed/rgb/manifest.json \
        --out results/eval/M/onnx-fp32.json

This is the accuracy of what ships, not of the PyTorch checkpoint. The result keeps every test
image's predicted class and label (``predictions``, ``labels``: workflow/accuracy.py), so that two
artifacts evaluated on the same images can be compared image by image (a paired interval) and a
device's own answers can be checked against the host's (workflow/aggregate.py).
"""
import argparse
from pathlib import Path

import numpy as np

from workflow.accuracy import pack_classes
from workflow.artifacts import failure_reason
from workflow.config import load_params, params_hash
from workflow.datasets import INPUT_NAMES, load_packed, to_model_inputs
from workflow.errors import UserError, cli
from workflow.io import read_json, sha256_file, write_json
from workflow.provenance import provenance


class OnnxRuntimeModel:
    runtime = "onnxruntime"

    def __init__(self, path, num_threads):
        import onnx
        import onnxruntime as ort

        try:
            onnx.checker.check_model(str(path))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = num_threads
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except FileNotFoundError:
            raise UserError(f"{path}: model not found (run the export stage)") from None
        except Exception as err:  # noqa: BLE001 - onnx/ORT raise many types for a bad file
            raise UserError(f"{path}: not a valid ONNX model ({str(err).splitlines()[0][:120]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.max_batch = None if not isinstance(batch_dim, int) else batch_dim
        self.providers = self.session.get_providers()
        import onnxruntime

        self.version = onnxruntime.__version__

    def __call__(self, inputs):
        return self.session.run(None, inputs)[0]


def litert_model(path, num_threads):
    from workflow.litert import LiteRTModel

    if not Path(path).is_file():
        raise UserError(f"{path}: model not found (run the tflite stage)")
    return LiteRTModel(path, num_threads)  # XNNPACK on, TFLite's default


RUNTIMES = {".onnx": OnnxRuntimeModel, ".tflite": litert_model}


def not_run_reason(artifact):
    """Why an artifact cannot be evaluated on this machine, else None (HEF files need a Hailo device)."""
    if Path(artifact).suffix != ".hef":
        return None
    import importlib.util

    if importlib.util.find_spec("hailo_platform") is None:
        return "not run: HailoRT (hailo_platform) is not installed"
    return "not run: evaluating a .hef on a Hailo device is not implemented yet"


def load_runtime_model(path, num_threads):
    suffix = Path(path).suffix
    if suffix not in RUNTIMES:
        raise UserError(f"{path}: no runtime for '{suffix}' files (supported: {', '.join(RUNTIMES)})")
    return RUNTIMES[suffix](path, num_threads)


def evaluate(params, artifact, packed, manifest_path, out):
    cfg = params["evaluate"]
    reason = failure_reason(artifact) or not_run_reason(artifact)
    if reason:  # the conversion failed (or cannot run here): carry the reason into this result
        result = {"artifact": str(artifact), "status": "failed", "reason": reason,
                  "provenance": provenance(params_hash(cfg))}
        write_json(out, result)
        return result
    manifest = read_json(manifest_path)
    images, labels = load_packed(packed, manifest, "test")
    model = load_runtime_model(artifact, cfg["num_threads"])
    names = INPUT_NAMES[manifest["color_format"]]
    # ONNX inputs match by name; a LiteRT model maps the data onto its inputs by name or shape itself
    if isinstance(model, OnnxRuntimeModel) and sorted(names) != sorted(model.input_names):
        raise UserError(f"{artifact}: model inputs {model.input_names} do not match the "
                        f"{manifest['color_format']} packed data ({sorted(names)})")
    batch = model.max_batch or cfg["batch_size"]
    preds = np.concatenate([  # batch by batch from the memory map: the split never sits in memory as floats
        model(to_model_inputs(images[s:s + batch], manifest["color_format"], manifest["height"],
                              manifest["width"])).argmax(1) for s in range(0, len(labels), batch)])
    correct = preds == labels
    classes = manifest["classes"]
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (labels, preds), 1)
    result = {
        "artifact": str(artifact), "status": "ok", "artifact_sha256": sha256_file(artifact),
        "runtime": model.runtime, "runtime_version": model.version, "providers": model.providers,
        "input_format": manifest["color_format"],
        "imgsz": f"{manifest['height']}x{manifest['width']}",  # HxW, as the detection track writes it
        "test_images": int(len(labels)),
        "top1": float(correct.mean()),
        "per_class_top1": {c: float(correct[labels == i].mean()) if (labels == i).any() else None
                           for i, c in enumerate(classes)},
        "confusion_matrix": confusion.tolist(),
        # every image's class and label in split order (workflow/accuracy.py): per-image correctness for
        # paired intervals (workflow/papers.py), the host's answers a device's are checked against (aggregate)
        "predictions": pack_classes(preds), "labels": pack_classes(labels),
        "provenance": provenance(params_hash(cfg)),
    }
    write_json(out, result)
    return result


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--packed", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = evaluate(load_params(args.params), args.artifact, args.packed, args.manifest, args.out)
    if result["status"] == "failed":
        print(f"{args.artifact}: not evaluated ({result['reason']})")
        return
    print(f"{args.artifact}: top-1 {result['top1']:.4f} on {result['test_images']} images ({result['runtime']})")


if __name__ == "__main__":
    main()
