"""Prune stage: network slimming of a trained model by real structural channel removal.

    python -m workflow.prune --params params.yaml --model mobilenetv2-rgb-pruned \
        --source results/models/mobilenetv2-rgb/model.pt --data data/packed \
        --out results/models/mobilenetv2-rgb-pruned

Seed 003's recipe (Liu et al. 2017, "Network Slimming"), on the model named by ``prune.from``:

1. sparse training: ``sparse_epochs`` of cross-entropy + ``sparsity_lambda`` * sum |gamma| over
   the BatchNorm scales (the L1 subgradient is added to the gammas' gradients);
2. ``iterations`` times: remove the ``ratio`` lowest-scoring channels (BN |gamma|, one global
   ranking over all layers) and fine-tune for ``finetune_epochs``, the L1 term still on so the
   next pass again ranks sparse scales.

Removal is structural, through torch-pruning's dependency graph: coupled channels (residual
additions, depthwise convs, the YUV stem's concatenation) go together and the layers really
shrink; no masks. The classifier's outputs are kept. Sparse training is part of this stage, from
the source model's checkpoint, so the unpruned model of ``prune.from`` stays the plain baseline
its summary rows describe, and one pruned variant never retrains it.

The outputs are the train stage's (model.pt with the pruned layer shapes, train_metrics.json,
history.csv), so export, quantization, evaluation and benchmarks run unchanged, plus
prune_report.json: parameters, MACs, size and the per-layer channel counts of each iteration
(seed 003's Table 3).
"""
import argparse
import io
import time
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from workflow import layout
from workflow.config import load_params, params_hash
from workflow.errors import UserError, cli
from workflow.input_pipeline import PackedData
from workflow.io import sha256_file, write_json
from workflow.model_specs import model_seed, prune_settings, total_epochs
from workflow.models import count_params, example_inputs, layer_shapes
from workflow.provenance import provenance
from workflow.training import (epoch_loader, evaluate, load_frozen, save_torch, setup, sgd, train_one_epoch,
                               write_history)

# No layer loses more than this share of its channels in one pass, so none disappears.
MAX_LAYER_RATIO = 0.9


def conv_channels(model):
    """Output channels of every Conv2d, by module name."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def footprint(model, example):
    """Parameters, MACs per image and serialized size of the model as it is now."""
    macs, _ = tp.utils.count_ops_and_params(model, example)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {"params": count_params(model), "macs": int(macs), "size_bytes": buffer.getbuffer().nbytes}


def slimming_pruner(model, example, settings):
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return tp.pruner.BNScalePruner(model, example, importance=tp.importance.BNScaleImportance(),
                                   reg=settings["sparsity_lambda"], global_pruning=True,
                                   pruning_ratio=settings["ratio"], max_pruning_ratio=MAX_LAYER_RATIO,
                                   ignored_layers=[classifier])


def prune(params, model_name, source, data_dir, out_dir, seed=None):
    if model_name not in params["models"] or "prune" not in params["models"][model_name]:
        pruned = [m for m, s in params["models"].items() if "prune" in s]
        raise UserError(f"params.yaml: key 'models': no model named {model_name!r} with a prune section "
                        f"(have: {', '.join(pruned) or 'none'})")
    spec, cfg = params["models"][model_name], params["train"]
    seed = model_seed(params, model_name) if seed is None else seed
    settings = prune_settings(spec)
    fmt = spec["input_format"]
    device = setup(cfg, seed)

    model, ckpt = load_frozen(source, "source")
    for p in model.parameters():
        p.requires_grad_(True)
    data = PackedData(data_dir, fmt)
    classes, height, width = ckpt["classes"], ckpt["height"], ckpt["width"]
    if data.classes != classes:
        raise UserError(f"{source}: trained on classes {classes}, the packed data has {data.classes}")
    dataset, test_set = data.train_set(cfg["augment"]), data.test_set()
    model.to(device)
    example = tuple(x.to(device) for x in example_inputs(fmt, height, width))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    history, epoch, start = [], 0, time.perf_counter()

    def fit(epochs, pruner, phase):
        nonlocal epoch
        optimizer = sgd(model, settings["lr"], cfg)  # fresh: the parameters change shape at each pass
        for _ in range(epochs):
            loader = epoch_loader(dataset, cfg, seed, 500 + epoch)
            stats = train_one_epoch(model, loader, optimizer, lambda logits, target, _: criterion(logits, target),
                                    device, after_backward=pruner.regularize, desc=f"{model_name} {phase}")
            test = evaluate(model, test_set, len(classes), device)
            epoch += 1
            history.append({"epoch": epoch, "phase": phase, "lr": settings["lr"], "train_loss": stats["train_loss"],
                            "train_top1": stats["train_top1"], "test_loss": test["loss"], "test_top1": test["top1"]})
            print(f"{model_name} {phase} epoch {epoch}: train loss {stats['train_loss']:.4f} | "
                  f"test top1 {test['top1']:.4f}", flush=True)

    def record(iteration):
        model.eval()
        test = evaluate(model, test_set, len(classes), device)
        return {"iteration": iteration, **footprint(model, example), "top1": test["top1"],
                "channels": conv_channels(model)}

    iterations = [record(0)]
    pruner = slimming_pruner(model, example, settings)
    fit(settings["sparse_epochs"], pruner, "sparse")
    for i in range(1, settings["iterations"] + 1):
        pruner.step()  # structural removal of the lowest-|gamma| channels
        pruner = slimming_pruner(model, example, settings)  # the graph of the smaller model
        fit(settings["finetune_epochs"], pruner, f"finetune-{i}")
        iterations.append(record(i))
        print(f"{model_name} pruning pass {i}: {iterations[-1]['params']} params, "
              f"{iterations[-1]['macs'] / 1e6:.1f} M MACs, top1 {iterations[-1]['top1']:.4f}", flush=True)
    train_seconds = time.perf_counter() - start

    model.cpu().eval()
    out_dir = Path(out_dir)
    model_path = out_dir / "model.pt"
    save_torch({"state_dict": model.state_dict(), "layer_shapes": layer_shapes(model), "spec": spec,
                "name": model_name, "classes": classes, "height": height, "width": width,
                "yuv_matrix": ckpt.get("yuv_matrix")}, model_path)
    write_history(out_dir / "history.csv", history)
    run_key = params_hash({"seed": seed, "model": spec, "train": cfg, "source": sha256_file(source),
                           "data": data.sha256})
    layers = list(iterations[0]["channels"])
    report = {
        "model": model_name, "from": settings["from"], "settings": settings,
        "importance": "BatchNorm |gamma|, global ranking (torch-pruning BNScaleImportance)",
        "iterations": [{k: v for k, v in it.items() if k != "channels"} for it in iterations],
        # Seed 003's Table 3: channels of every conv layer, unpruned and after each pass.
        "channels": [{"layer": name, "channels": [it["channels"].get(name) for it in iterations]}
                     for name in layers],
        "params_ratio": iterations[-1]["params"] / iterations[0]["params"],
        "macs_ratio": iterations[-1]["macs"] / iterations[0]["macs"],
        "history": history, "provenance": provenance(run_key),
    }
    write_json(out_dir / "prune_report.json", report)
    final = evaluate(model, test_set, len(classes), torch.device("cpu"))
    metrics = {
        "model": model_name, "seed": seed, "input_format": fmt, "arch": spec["arch"], "width_mult": spec["width_mult"],
        "top1": final["top1"], "loss": final["loss"], "per_class_top1": dict(zip(classes, final["per_class_top1"])),
        "epochs": settings["sparse_epochs"] + settings["iterations"] * settings["finetune_epochs"],
        "total_epochs": total_epochs(params, model_name), "lr": settings["lr"], "train_images": len(dataset),
        "test_images": len(test_set), "params": count_params(model),
        "device": str(device), "wall_time_s": round(train_seconds, 2), "model_sha256": sha256_file(model_path),
        "teacher": None, "kd_type": None, "kd_alpha": None,
        "prune_from": settings["from"], "prune_ratio": settings["ratio"], "prune_iteration": settings["iterations"],
        "provenance": provenance(run_key),
    }
    write_json(out_dir / "train_metrics.json", metrics)  # written last: marks the stage complete
    return report, metrics


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of params.yaml models with a prune section")
    parser.add_argument("--source", required=True, help="model.pt of the model named by prune.from")
    parser.add_argument("--seed", type=int, help="training seed (default: the model's, from params.yaml seeds)")
    parser.add_argument("--data", default=layout.PACKED, help="folder with the packed train/ and <format>/ splits")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    report, metrics = prune(load_params(args.params), args.model, args.source, args.data, args.out, args.seed)
    first, last = report["iterations"][0], report["iterations"][-1]
    print(f"{args.model}: {first['params']} -> {last['params']} params ({report['params_ratio']:.2f}x), "
          f"{first['macs'] / 1e6:.1f} -> {last['macs'] / 1e6:.1f} M MACs, test top-1 {metrics['top1']:.4f}")


if __name__ == "__main__":
    main()
