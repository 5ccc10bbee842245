"""QAT stage: PyTorch quantization-aware fine-tuning of a trained model, exported as ONNX QDQ.

    python -m workflow.qat --params params.yaml --checkpoint results/models/M/model.pt \
        --reference results/artifacts/M/onnx-fp32.onnx --data data/packed \
        --epochs 1 --steps 40 --lr 0.001 --out results/artifacts/M/onnx-int8-qat.onnx

Why torch.ao FX graph mode: it traces our wrapper models (normalisation inside, the YUV stem's
two inputs and concatenation, pruned layer shapes) without code changes, fuses Conv+BN(+ReLU)
into QAT modules that learn through BN folding, and its FakeQuantize modules export through
torch.onnx as QuantizeLinear/DequantizeLinear pairs. PT2E is not in this torch build
(torch.ao.quantization.quantize_pt2e moved to torchao, whose quantizers target ExecuTorch
backends rather than an ONNX QDQ graph).

Scheme (the same as the static PTQ artifact, so the two compare): activations uint8 asymmetric
per tensor, weights int8 symmetric per output channel (or per tensor), moving-average min/max
observers. The input normalisation stays float (the first quantization is after it).

After fine-tuning, observers are switched off and BN statistics frozen; each Conv+BN QAT module
is replaced by a Conv with the BN folded in and the trained weight fake-quantizer (the same
function in eval mode), then exported. ONNX Runtime then sees DQ -> Conv -> Q patterns it runs
as integer kernels. The file is written only after checks through ONNX Runtime: the exported
graph against the fake-quantized PyTorch model, and against the fp32 ONNX model on the
calibration images (as workflow.quantize does). Weights are stored as int8 initializers
(the QuantizeLinear of each constant weight is evaluated at export). A failure of the conversion is recorded as a
failed artifact (status failed + reason), not a crash.
"""
import argparse
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.qat as nnqat
from torch import nn
from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                   QConfig, QConfigMapping, disable_observer)
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from workflow import layout
from workflow.artifacts import write_failed
from workflow.config import load_params, params_hash
from workflow.errors import UserError, cli, positive_int
from workflow.finetune import sgd, train_epoch
from workflow.input_pipeline import PackedData
from workflow.io import atomic_path, sha256_file, write_json
from workflow.model_specs import QAT_DEFAULTS
from workflow.models import _set_module, example_inputs, load_checkpoint
from workflow.producers import ARTIFACT_HELP, parse_args
from workflow.provenance import provenance
from workflow.quantize import (MIN_ARGMAX_AGREEMENT, ConversionFailed, fixed_batch, load_calibration, load_model,
                               parity, run_logits)
from workflow.train import evaluate, resolve_device, seed_everything

NORMALIZE_MODULES = ("normalize", "normalize_y", "normalize_uv")


def qconfig(per_channel):
    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    if per_channel:
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                        quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                        ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=activation, weight=weight)


def prepare(model, input_format, height, width, per_channel):
    mapping = QConfigMapping().set_global(qconfig(per_channel))
    for name in NORMALIZE_MODULES:
        mapping.set_module_name(name, None)
    return prepare_qat_fx(model.train(), mapping, example_inputs(input_format, height, width, 2))


def fold_batchnorm(qat_model):
    """Conv+BN QAT modules -> Conv (BN folded) keeping the trained weight fake-quantizer; same eval output."""
    qat_model.apply(disable_observer)
    qat_model.apply(nniqat.freeze_bn_stats)
    for name, module in list(qat_model.named_modules()):
        if not isinstance(module, (nniqat.ConvBn2d, nniqat.ConvBnReLU2d)):
            continue
        fused = module.to_float()
        conv = fused[0] if isinstance(fused, nn.Sequential) else fused
        folded = nnqat.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                              padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                              qconfig=module.qconfig)
        folded.weight, folded.bias = conv.weight, conv.bias
        folded.weight_fake_quant = module.weight_fake_quant
        _set_module(qat_model, name, nn.Sequential(folded, nn.ReLU()) if isinstance(module, nniqat.ConvBnReLU2d)
                    else folded)
    qat_model.recompile()
    return qat_model.eval()


def scalar_qparams(graph):
    """torch.onnx writes per-tensor scales and zero points as 1-element vectors; ONNX Runtime's fused
    integer kernels (QLinearAdd, ...) require scalars."""
    names = {i for n in graph.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:]}
    tensors = [t for t in graph.graph.initializer if t.name in names]
    tensors += [a.t for n in graph.graph.node if n.op_type == "Constant" and n.output[0] in names
                for a in n.attribute if a.name == "value"]
    for t in tensors:
        if list(t.dims) == [1]:
            del t.dims[:]
    return graph


def store_int8_weights(graph):
    """QuantizeLinear of a constant weight -> its int8/uint8 values as an initializer, so the file holds
    8-bit weights (as ONNX Runtime's static QDQ models do) instead of float weights quantized at load."""
    init = {t.name: t for t in graph.graph.initializer}
    consts = {n.output[0]: a.t for n in graph.graph.node if n.op_type == "Constant" for a in n.attribute
              if a.name == "value"}
    value = lambda name: numpy_helper.to_array(init[name] if name in init else consts[name])
    kept = []
    for node in graph.graph.node:
        weight, *qparams = node.input
        if node.op_type != "QuantizeLinear" or weight not in init or any(q not in init and q not in consts
                                                                         for q in qparams):
            kept.append(node)
            continue
        x, scale, zero_point = value(weight), value(qparams[0]), value(qparams[1])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1:  # per channel: broadcast along the axis
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        info = np.iinfo(zero_point.dtype)
        q = np.clip(np.rint(x / scale) + zero_point.astype(np.int32), info.min, info.max).astype(zero_point.dtype)
        graph.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    used = {i for n in graph.graph.node for i in n.input}
    unused = [t for t in graph.graph.initializer if t.name not in used]  # the float weights
    for t in unused:
        graph.graph.initializer.remove(t)
    return graph


def export_qdq(model, input_names, input_format, height, width, path, export_cfg):
    dynamic_axes = ({n: {0: "batch"} for n in [*input_names, "logits"]} if export_cfg["dynamic_batch"] else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, example_inputs(input_format, height, width), str(path), dynamo=False,
                          input_names=list(input_names), output_names=["logits"], opset_version=export_cfg["opset"],
                          dynamic_axes=dynamic_axes)
    graph = scalar_qparams(onnx.load(str(path)))
    if export_cfg["simplify"]:
        import onnxslim

        graph = onnxslim.slim(graph)
    onnx.save(store_int8_weights(graph), str(path))
    onnx.checker.check_model(str(path))


def finetune(qat_model, data, cfg, seed, settings, device):
    dataset = data.train_set(cfg["augment"])
    optimizer = sgd(qat_model, settings["lr"], cfg)
    steps = 0

    def count_and_freeze(model):
        nonlocal steps
        steps += 1
        if settings["freeze_bn_after"] is not None and steps == settings["freeze_bn_after"]:
            model.apply(nniqat.freeze_bn_stats)  # the usual late-QAT step: BN statistics stop moving

    history = []
    for epoch in range(settings["epochs"]):
        stats = train_epoch(qat_model, dataset, optimizer, cfg, seed, 700 + epoch, device,
                            after_backward=count_and_freeze, max_steps=settings["steps"])
        history.append({"epoch": epoch + 1, **stats})
        print(f"QAT epoch {epoch + 1}/{settings['epochs']}: train loss {stats['train_loss']:.4f} "
              f"top1 {stats['train_top1']:.4f}", flush=True)
    return history, steps


def qat(params, checkpoint, reference, data_dir, out, settings):
    cfg, seed = params["train"], params["seed"]
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
            "quant_format": "qdq", "calibration": None, "weight_type": "qint8", "activation_type": "quint8",
            **settings}
    device = resolve_device(cfg["device"])
    torch.set_num_threads(cfg["num_threads"])
    seed_everything(seed)
    try:
        with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="qat.") as work:
            start = time.perf_counter()
            qat_model = prepare(model, fmt, height, width, settings["per_channel"]).to(device)
            history, steps = finetune(qat_model, data, cfg, seed, settings, device)
            train_seconds = time.perf_counter() - start
            qat_model = fold_batchnorm(qat_model.cpu())
            test = evaluate(qat_model, data.test_set(), len(ckpt["classes"]), torch.device("cpu"))
            exported = Path(work) / "qat.onnx"
            export_qdq(qat_model, model.input_names, fmt, height, width, exported, params["export"])
            batch = fixed_batch(reference_graph) or params["evaluate"]["batch_size"]
            export_check = export_parity(qat_model, exported, calib_inputs, model.input_names, batch)
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
        **base, "status": "ok", "opset": params["export"]["opset"], "nodes": len(graph.graph.node),
        "node_types": dict(sorted(collections.Counter(n.op_type for n in graph.graph.node).items())),
        "size_bytes": out.stat().st_size, "source_size_bytes": Path(reference).stat().st_size,
        "size_ratio": out.stat().st_size / Path(reference).stat().st_size,
        "train_steps": steps, "train_seconds": train_seconds, "history": history,
        "top1_pytorch_fake_quant": test["top1"],
        "export_parity": export_check, "parity": check, "calib_size": check["samples"],
        "sha256": sha256_file(out), "source_checkpoint_sha256": sha256_file(checkpoint),
        "source_model_sha256": sha256_file(reference), "calib_sha256": sha256_file(calib),
        "reference_nodes": len(reference_graph.graph.node),
        "provenance": provenance(params_hash({"settings": settings, "train": cfg, "seed": seed})),
    }
    write_json(out.with_suffix(".json"), report)
    return report


def export_parity(qat_model, path, inputs, input_names, batch_size):
    """ONNX Runtime vs the fake-quantized PyTorch model: the export must compute the same function."""
    onnx_logits = run_logits(path, inputs, batch_size)
    with torch.no_grad():
        torch_logits = qat_model(*(torch.from_numpy(inputs[n]) for n in input_names)).numpy()
    return {"max_abs_diff": float(np.abs(onnx_logits - torch_logits).max()),
            "argmax_agreement": float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoint", required=True, help="the trained fp32 model.pt")
    parser.add_argument("--reference", required=True, help="its fp32 ONNX export (parity and size reference)")
    parser.add_argument("--data", default=layout.PACKED, help="folder with the packed rgb/ and <format>/ splits")
    parser.add_argument("--epochs", type=positive_int, default=QAT_DEFAULTS["epochs"])
    parser.add_argument("--steps", type=positive_int, help="optimizer steps per epoch (default: whole split)")
    parser.add_argument("--lr", type=float, default=QAT_DEFAULTS["lr"])
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=QAT_DEFAULTS["per_channel"])
    parser.add_argument("--freeze-bn-after", type=int, help="optimizer steps before BN statistics freeze")
    parser.add_argument("--artifact", help=ARTIFACT_HELP)
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parse_args(parser, argv)
    params = load_params(args.params)
    settings = {"epochs": args.epochs, "steps": args.steps, "lr": args.lr, "per_channel": args.per_channel,
                "freeze_bn_after": args.freeze_bn_after}
    report = qat(params, args.checkpoint, args.reference, args.data, args.out, settings)
    if report["status"] == "ok":
        print(f"QAT {args.out}: {report['size_ratio']:.2f}x the fp32 size, {report['train_steps']} steps, "
              f"argmax agreement with fp32 {report['parity']['argmax_agreement']:.3f}, "
              f"export max |onnx - torch| {report['export_parity']['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
