"""Export stage: trained checkpoint -> ONNX, checked against PyTorch on real test images.

    python -m workflow.export --params params.yaml --checkpoint results/models/M/model.pt \
        --packed data/packed/rgb/test.npy --out results/artifacts/M/onnx-fp32.onnx

Options (params.yaml ``export``): opset, dynamic batch axis, onnxslim
simplification, and the Hailo-friendly flavour of seed 000 (no constant folding,
TrainingMode.PRESERVE, so BatchNormalization nodes reach the Hailo parser).
The model is written only after the parity check passes; a report beside it
(<artifact>.json) records the maximum absolute difference.
"""
import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from workflow.config import load_params, params_hash
from workflow.datasets import open_packed, to_model_inputs
from workflow.errors import UserError, cli
from workflow.io import atomic_path, sha256_file, write_json
from workflow.models import load_checkpoint
from workflow.provenance import provenance


def export_onnx(model, ckpt, path, cfg):
    fmt = ckpt["spec"]["input_format"]
    names = list(model.input_names)
    h, w = ckpt["height"], ckpt["width"]
    example = tuple(torch.zeros(1, *shape) for shape in
                    ([(3, h, w)] if fmt == "rgb" else [(1, h, w), (2, h // 2, w // 2)]))
    dynamic_axes = {n: {0: "batch"} for n in names + ["logits"]} if cfg["dynamic_batch"] else None
    hailo = cfg["hailo_friendly"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, example, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          opset_version=cfg["opset"], dynamic_axes=dynamic_axes,
                          do_constant_folding=not hailo,
                          training=torch.onnx.TrainingMode.PRESERVE if hailo else torch.onnx.TrainingMode.EVAL)
    if cfg["simplify"]:
        import onnxslim

        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    onnx.checker.check_model(str(path))


def parity(model, onnx_path, inputs):
    """Max |ONNX Runtime - PyTorch| over the logits of real images, and argmax agreement."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], inputs)[0]
    with torch.no_grad():
        torch_logits = model(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()
    return (float(np.abs(onnx_logits - torch_logits).max()),
            float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean()))


def export(params, checkpoint, packed, out):
    cfg = params["export"]
    model, ckpt = load_checkpoint(checkpoint)
    images = np.asarray(open_packed(packed)["image"][:cfg["parity_samples"]])
    inputs = to_model_inputs(images, ckpt["spec"]["input_format"], ckpt["height"], ckpt["width"])
    out = Path(out)
    with atomic_path(out) as tmp:
        export_onnx(model, ckpt, tmp, cfg)
        max_abs_diff, argmax_agreement = parity(model, tmp, inputs)
        if not max_abs_diff <= cfg["parity_atol"]:
            raise UserError(f"{out}: ONNX parity check failed: max |onnx - torch| = {max_abs_diff:.3g} > "
                            f"export.parity_atol {cfg['parity_atol']} on {len(images)} test images")
    graph = onnx.load(str(out))
    report = {
        "artifact": out.name, "model": ckpt["name"], "format": "onnx", "precision": "fp32",
        "input_format": ckpt["spec"]["input_format"], "inputs": list(model.input_names),
        "opset": cfg["opset"], "simplified": cfg["simplify"], "hailo_friendly": cfg["hailo_friendly"],
        "dynamic_batch": cfg["dynamic_batch"], "nodes": len(graph.graph.node),
        "batchnorm_nodes": sum(n.op_type == "BatchNormalization" for n in graph.graph.node),
        "parity": {"samples": len(images), "max_abs_diff": max_abs_diff, "argmax_agreement": argmax_agreement,
                   "atol": cfg["parity_atol"]},
        "sha256": sha256_file(out), "source_checkpoint_sha256": sha256_file(checkpoint),
        "provenance": provenance(params_hash(cfg)),
    }
    write_json(out.with_suffix(".json"), report)
    return report


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--packed", required=True, help="packed test split used for the parity check")
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parser.parse_args(argv)
    report = export(load_params(args.params), args.checkpoint, args.packed, args.out)
    print(f"exported {args.out}: {report['nodes']} nodes, parity max abs diff "
          f"{report['parity']['max_abs_diff']:.2e} on {report['parity']['samples']} images")


if __name__ == "__main__":
    main()
