"""QAT stage: quantization-aware fine-tuning of a trained model with torchao's PT2E flow, exported as ONNX QDQ.

    python -m workflow.qat --params params.yaml --checkpoint results/models/M/model.pt \
        --reference results/artifacts/M/onnx-fp32.onnx --data data/packed \
        --epochs 1 --steps 40 --lr 0.001 --out results/artifacts/M/onnx-int8-qat.onnx

The maintained API (torch.ao's FX graph mode, ``prepare_qat_fx``, is deprecated in favour of it):
the model is captured with ``torch.export`` (batch dimension dynamic), annotated by torchao's
``X86InductorQuantizer``, prepared with ``prepare_qat_pt2e`` (Conv+BN pairs become fake-quantized convs
that learn through simulated BN folding), fine-tuned with the shared training loop
(workflow.training), and converted with ``convert_pt2e``: BN folded into the convs, weights stored
as int8 constants, every quantization point a quantize/dequantize pair. ``torch.onnx.export``
(its torch.export-based exporter) writes those pairs as QuantizeLinear/DequantizeLinear with int8
weight initializers, which ONNX Runtime runs as integer kernels. The exporter's lowest opset is 18:
the file is opset max(export.opset, 18).

Scheme (X86InductorQuantizer's, the same as the static PTQ artifact, so the two compare):
activations uint8 asymmetric per tensor, weights int8 symmetric per output channel (or per tensor
with --no-per-channel), moving-average min/max fake quantizers. The input normalisation (Sub, Mul
by constants) stays float: the first quantization is after it. ``--freeze-bn-after`` stops BN's
statistics after that many optimizer steps (the late-QAT step; PyTorch's PT2E QAT tutorial sets the
BN ops' ``training`` flag to False in the captured graph).

The file is written only after checks through ONNX Runtime: the exported graph against the
converted PyTorch model, and against the fp32 ONNX model on the calibration images (as
workflow.quantize does). A failure of the conversion is recorded as a failed artifact (status failed
+ reason), not a crash.
"""
import argparse
import collections
import contextlib
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F
from torchao.quantization.pt2e import (FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver,
                                       allow_exported_model_train_eval, disable_observer, qat_utils)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (X86InductorQuantizer,
                                                                         get_default_x86_inductor_quantization_config)

from workflow import layout
from workflow.artifacts import write_failed
from workflow.config import load_params, params_hash
from workflow.errors import UserError, cli, positive_int
from workflow.input_pipeline import PackedData
from workflow.io import atomic_path, sha256_file, write_json
from workflow.model_specs import QAT_DEFAULTS
from workflow.models import example_inputs, load_checkpoint
from workflow.producers import ARTIFACT_HELP, parse_args
from workflow.provenance import provenance
from workflow.quantize import (MIN_ARGMAX_AGREEMENT, ConversionFailed, fixed_batch, load_calibration, load_model,
                               parity, run_logits)
from workflow.training import epoch_loader, evaluate, setup, sgd, train_one_epoch

MIN_ONNX_OPSET = 18  # torch.onnx's torch.export-based exporter


def quantizer(per_channel):
    config = get_default_x86_inductor_quantization_config(is_qat=True)
    if not per_channel:
        observer = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=2 ** -12)
        weight = dataclasses.replace(config.weight, qscheme=torch.per_tensor_symmetric, ch_axis=None,
                                     observer_or_fake_quant_ctr=observer)
        config = dataclasses.replace(config, weight=weight)
    return X86InductorQuantizer().set_global(config)


@contextlib.contextmanager
def folding_only_present_convs():
    """convert_pt2e folds BN into convs by matching patterns it traces with torch.export for each of conv1d,
    conv2d, conv_transpose1d and conv_transpose2d (31 patterns each, about 4 s a kind on 2 cores), whether
    the graph has that kind or not; skip the kinds the graph lacks: the same converted model (byte for byte
    the same ONNX file), 11 s sooner per QAT stage. A torchao without that helper converts as it is."""
    fold = getattr(qat_utils, "_fold_conv_bn_qat_helper", None)
    ops = {F.conv1d: torch.ops.aten.conv1d, F.conv2d: torch.ops.aten.conv2d,
           F.conv_transpose1d: torch.ops.aten.conv_transpose1d, F.conv_transpose2d: torch.ops.aten.conv_transpose2d}

    def fold_if_present(graph, conv_fn, example_inputs, is_cuda):
        op = ops.get(conv_fn)
        if op is not None and not any(getattr(n.target, "overloadpacket", None) is op for n in graph.graph.nodes):
            return graph
        return fold(graph, conv_fn, example_inputs, is_cuda)

    if fold is not None:
        qat_utils._fold_conv_bn_qat_helper = fold_if_present
    try:
        yield
    finally:
        if fold is not None:
            qat_utils._fold_conv_bn_qat_helper = fold


def batch_dims(count):
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in range(count))


def prepare(model, input_format, height, width, per_channel):
    """The model captured by torch.export and prepared for QAT (fake quantizers, Conv+BN QAT fusion)."""
    example = example_inputs(input_format, height, width, 2)
    graph = torch.export.export(model.train(), example, dynamic_shapes=batch_dims(len(example))).module()
    return allow_exported_model_train_eval(prepare_qat_pt2e(graph, quantizer(per_channel)))


def freeze_batchnorm(graph):
    """BN statistics stop moving: the captured BN ops' ``training`` argument set to False."""
    for node in graph.graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target) and isinstance(node.args[5], bool):
            node.args = (*node.args[:5], False, *node.args[6:])
    graph.recompile()


def export_qdq(converted, input_names, input_format, height, width, path, export_cfg):
    opset = max(export_cfg["opset"], MIN_ONNX_OPSET)
    dynamic = batch_dims(len(input_names)) if export_cfg["dynamic_batch"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(converted, example_inputs(input_format, height, width, 2), dynamo=True,
                                    input_names=list(input_names), output_names=["logits"], opset_version=opset,
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return opset


def finetune(qat_model, data, cfg, seed, settings, device):
    dataset = data.train_set(cfg["augment"])
    optimizer = sgd(qat_model, settings["lr"], cfg)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    steps = 0

    def count_and_freeze(model):
        nonlocal steps
        steps += 1
        if settings["freeze_bn_after"] is not None and steps == settings["freeze_bn_after"]:
            freeze_batchnorm(model)  # the usual late-QAT step: BN statistics stop moving

    history = []
    for epoch in range(settings["epochs"]):
        loader = epoch_loader(dataset, cfg, seed, 700 + epoch)
        stats = train_one_epoch(qat_model, loader, optimizer, lambda logits, target, _: criterion(logits, target),
                                device, after_backward=count_and_freeze, max_steps=settings["steps"],
                                desc=f"QAT epoch {epoch + 1}")
        history.append({"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_top1": stats["train_top1"]})
        print(f"QAT epoch {epoch + 1}/{settings['epochs']}: train loss {stats['train_loss']:.4f} "
              f"top1 {stats['train_top1']:.4f}", flush=True)
    return history, steps


def qat(params, checkpoint, reference, data_dir, out, settings, seed=None):
    """QAT fine-tuning of a trained checkpoint; ``seed``: the model's training seed (default params.yaml seed)."""
    cfg, seed = params["train"], params["seed"] if seed is None else seed
    model, ckpt = load_checkpoint(checkpoint)
    reference_graph = load_model(reference)
    fmt, height, width = ckpt["spec"]["input_format"], ckpt["height"], ckpt["width"]
    data = PackedData(data_dir, fmt)
    data_dir = Path(data_dir)
    calib, manifest = layout.packed_split(fmt, "calib", data_dir), layout.packed_manifest(fmt, data_dir)
    calib_inputs, _ = load_calibration(calib, manifest, params["data"]["calib_subset"])
    out = Path(out)
    base = {"artifact": out.name, "format": "onnx", "precision": "int8", "input_format": fmt,
            "inputs": list(model.input_names), "source_model": str(checkpoint), "method": "qat",
            "api": "torchao PT2E (prepare_qat_pt2e, X86InductorQuantizer, convert_pt2e)",
            "quant_format": "qdq", "calibration": None, "weight_type": "qint8", "activation_type": "quint8",
            **settings}
    device = setup(cfg, seed)
    try:
        with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="qat.") as work:
            start = time.perf_counter()
            qat_model = prepare(model, fmt, height, width, settings["per_channel"]).to(device)
            history, steps = finetune(qat_model, data, cfg, seed, settings, device)
            train_seconds = time.perf_counter() - start
            qat_model.apply(disable_observer)  # the quantization ranges are final: nothing below moves them
            qat_model.eval()
            with folding_only_present_convs():
                converted = allow_exported_model_train_eval(convert_pt2e(qat_model.cpu()))
            test = evaluate(converted, data.test_set(), len(ckpt["classes"]), torch.device("cpu"))
            exported = Path(work) / "qat.onnx"
            opset = export_qdq(converted, model.input_names, fmt, height, width, exported, params["export"])
            batch = fixed_batch(reference_graph) or params["evaluate"]["batch_size"]
            export_check = export_parity(converted, exported, calib_inputs, model.input_names, batch)
            check = parity(reference, exported, calib_inputs, batch)
            if check["argmax_agreement"] < MIN_ARGMAX_AGREEMENT:
                raise ConversionFailed(
                    f"QAT broke the model: argmax agrees with fp32 on only {check['argmax_agreement']:.0%} of "
                    f"{check['samples']} calibration images (< {MIN_ARGMAX_AGREEMENT:.0%})")
            tmp.write_bytes(exported.read_bytes())
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of QAT or its export is this format's result
        reason = write_failed(out, {**base, "provenance": provenance(params_hash(settings))}, err)
        print(f"warning: {out}: QAT failed ({reason}); recorded as status failed", file=sys.stderr)
        return {**base, "status": "failed", "reason": reason}
    graph = onnx.load(str(out))
    report = {
        **base, "status": "ok", "opset": opset, "nodes": len(graph.graph.node),
        "node_types": dict(sorted(collections.Counter(n.op_type for n in graph.graph.node).items())),
        "size_bytes": out.stat().st_size, "source_size_bytes": Path(reference).stat().st_size,
        "size_ratio": out.stat().st_size / Path(reference).stat().st_size,
        "train_steps": steps, "train_seconds": train_seconds, "history": history,
        "top1_pytorch_quantized": test["top1"],
        "export_parity": export_check, "parity": check, "calib_size": check["samples"],
        "sha256": sha256_file(out), "source_checkpoint_sha256": sha256_file(checkpoint),
        "source_model_sha256": sha256_file(reference), "calib_sha256": sha256_file(calib),
        "reference_nodes": len(reference_graph.graph.node),
        "provenance": provenance(params_hash({"settings": settings, "train": cfg, "seed": seed})),
    }
    write_json(out.with_suffix(".json"), report)
    return report


def export_parity(converted, path, inputs, input_names, batch_size):
    """ONNX Runtime vs the converted PyTorch model: the export must compute the same function."""
    onnx_logits = run_logits(path, inputs, batch_size)
    with torch.no_grad():
        torch_logits = converted(*(torch.from_numpy(inputs[n]) for n in input_names)).numpy()
    return {"max_abs_diff": float(np.abs(onnx_logits - torch_logits).max()),
            "argmax_agreement": float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoint", required=True, help="the trained fp32 model.pt")
    parser.add_argument("--reference", required=True, help="its fp32 ONNX export (parity and size reference)")
    parser.add_argument("--data", default=layout.PACKED, help="folder with the packed train/ and <format>/ splits")
    parser.add_argument("--epochs", type=positive_int, default=QAT_DEFAULTS["epochs"])
    parser.add_argument("--steps", type=positive_int, help="optimizer steps per epoch (default: whole split)")
    parser.add_argument("--lr", type=float, default=QAT_DEFAULTS["lr"])
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=QAT_DEFAULTS["per_channel"])
    parser.add_argument("--freeze-bn-after", type=int, help="optimizer steps before BN statistics freeze")
    parser.add_argument("--artifact", help=ARTIFACT_HELP)
    parser.add_argument("--seed", type=int, help="the model's training seed (default: params.yaml seed)")
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parse_args(parser, argv)
    params = load_params(args.params)
    settings = {"epochs": args.epochs, "steps": args.steps, "lr": args.lr, "per_channel": args.per_channel,
                "freeze_bn_after": args.freeze_bn_after}
    report = qat(params, args.checkpoint, args.reference, args.data, args.out, settings, args.seed)
    if report["status"] == "ok":
        print(f"QAT {args.out}: {report['size_ratio']:.2f}x the fp32 size, {report['train_steps']} steps, "
              f"argmax agreement with fp32 {report['parity']['argmax_agreement']:.3f}, "
              f"export max |onnx - torch| {report['export_parity']['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
