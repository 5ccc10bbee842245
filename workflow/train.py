"""Train stage: one model variant from params.yaml ``models``.

    python -m workflow.train --params params.yaml --model mobilenetv2-yuv420 \
        --data data/packed --out results/models/mobilenetv2-yuv420

Deterministic under ``seed`` (same seed -> identical losses and accuracies on the
same machine and library versions). A checkpoint is written every epoch under
results/checkpoints/<model>/; a rerun resumes from the newest complete one and
finishes with the same result as an uninterrupted run.

The data (workflow/input_pipeline.py): the packed RGB training split, cropped (the
ImageNet protocol's random-resized crop when set) and augmented (seed 002's list) on the
RGB image; the YUV model gets the augmented image through the same RGB->I420 conversion
the pack stage uses, so both input formats see identical content. Evaluation uses each
format's own packed test split.

With train.processes_per_node x train.nodes > 1 it runs as that many DDP processes (started by
``python -m workflow.distributed``; workflow/distributed.py): each trains on its share of every epoch,
the metrics are summed over all of them, and only the first writes checkpoints and outputs.

A model may set its own ``epochs``, ``lr`` and ``schedule``. With ``distill`` it learns from a
teacher checkpoint (--teacher; workflow/distill.py): the teacher (frozen, eval mode)
sees the same augmented image in its own input format, before sensor noise; ``init``
starts the student from another model's checkpoint (--init) instead of from scratch.
"""
import argparse
import time
from pathlib import Path

import torch
from torch import nn

from workflow import layout
from workflow.config import load_params, params_hash
from workflow.distill import FeatureDistiller, output_kd_loss
from workflow.distributed import barrier, init_group, launcher, leave, world_from_env
from workflow.errors import UserError, cli
from workflow.input_pipeline import PackedData
from workflow.io import sha256_file, write_json
from workflow.model_specs import distill_settings, model_seed, total_epochs
from workflow.models import INPUT_SIZES, build_model, count_params
from workflow.provenance import provenance
from workflow.training import (WithExtras, distribute, epoch_loader, evaluate, load_frozen, load_latest_checkpoint,
                               lr_at, save_checkpoint, save_torch, set_lr, setup, sgd, train_one_epoch,
                               write_history)


def model_train_config(params, spec):
    """train section with the model's own epochs, lr and schedule, if it sets them."""
    return {**params["train"], **{key: spec[key] for key in ("epochs", "lr", "schedule") if key in spec}}


class Distillation:
    """The student's loss with a teacher (output or feature KD), or plain cross-entropy without one."""

    def __init__(self, settings, student, teacher_path, fmt, classes, height, width, criterion, device, model_name):
        self.settings, self.criterion, self.distiller = settings, criterion, None
        self.teacher = self.teacher_ckpt = None
        if settings is None:
            return
        if teacher_path is None:
            raise UserError(f"--teacher: required, the model distils from {settings['teacher']!r}")
        self.teacher, self.teacher_ckpt = load_frozen(teacher_path, "teacher")
        if self.teacher_ckpt["classes"] != classes:
            raise UserError(f"{teacher_path}: the teacher predicts {self.teacher_ckpt['classes']}, the student's "
                            f"data has {classes}")
        if (self.teacher_ckpt["height"], self.teacher_ckpt["width"]) != (height, width):
            raise UserError(f"{teacher_path}: the teacher was trained on {self.teacher_ckpt['height']}x"
                            f"{self.teacher_ckpt['width']} images, the student's data is {height}x{width}")
        self.teacher.to(device)
        if settings["type"] == "feature":
            example = {"student": example_batch(fmt, height, width),
                       "teacher": example_batch(self.teacher_format, height, width)}
            self.distiller = FeatureDistiller(student, self.teacher, settings["layers"], example,
                                              settings["feature_loss"], f"models.{model_name}.distill.layers")
            self.distiller.to(device)
            student.train()

    @property
    def teacher_format(self):
        return self.teacher_ckpt["spec"]["input_format"] if self.teacher is not None else None

    def loss(self, logits, target, teacher_inputs):
        if self.teacher is None:
            return self.criterion(logits, target)
        with torch.no_grad():
            teacher_logits = self.teacher(*teacher_inputs)
        s = self.settings
        if s["type"] == "output":
            return output_kd_loss(logits, teacher_logits, target, s["alpha"], s["temperature"],
                                  self.criterion.label_smoothing)
        return self.criterion(logits, target) + s["feature_weight"] * self.distiller.loss()


def example_batch(fmt, height, width):
    shapes = [(3, height, width)] if fmt == "rgb" else [(1, height, width), (2, height // 2, width // 2)]
    return tuple(torch.rand(2, *shape) * 255 for shape in shapes)


def train(params, model_name, data_dir, out_dir, ckpt_dir, teacher_path=None, init_path=None, seed=None):
    """Train one model; ``seed`` defaults to the model instance's training seed (params.yaml ``seeds``)."""
    if model_name not in params["models"]:
        raise UserError(f"params.yaml: key 'models': no model named {model_name!r} "
                        f"(have: {', '.join(params['models'])})")
    seed = model_seed(params, model_name) if seed is None else seed
    world = world_from_env(params["train"])
    device = setup(params["train"], seed, world)
    init_group(world, device)
    try:
        return train_model(params, model_name, data_dir, out_dir, ckpt_dir, teacher_path, init_path, world, device,
                           seed)
    finally:
        leave(world)


def train_model(params, model_name, data_dir, out_dir, ckpt_dir, teacher_path, init_path, world, device, seed):
    spec = params["models"][model_name]
    cfg, kd = model_train_config(params, spec), distill_settings(spec)
    fmt = spec["input_format"]
    teacher_format = params["models"][kd["teacher"]]["input_format"] if kd else None
    data = PackedData(data_dir, fmt)
    classes, height, width = data.classes, data.height, data.width
    check_input_size(spec, model_name, height, width)

    model = build_model(spec, len(classes), height).to(device)
    upstream = {}
    if kd is not None and kd["init"] != "scratch":
        if init_path is None:
            raise UserError(f"--init: required, the student starts from {kd['init']!r}'s checkpoint")
        model.load_state_dict(load_frozen(init_path, "init")[1]["state_dict"])
        upstream["init"] = sha256_file(init_path)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    distillation = Distillation(kd, model, teacher_path, fmt, classes, height, width, criterion, device, model_name)
    if kd is not None:
        upstream["teacher"] = sha256_file(teacher_path)
    trained = WithExtras(model, distillation.distiller)
    optimizer = sgd(trained, cfg["lr"], cfg)
    dataset = data.train_set(cfg["augment"], teacher_format)
    test_set = data.test_set()

    run_key = params_hash({"seed": seed, "model": spec, "train": {k: v for k, v in cfg.items()
                                                                  if k not in ("num_workers",)},
                           "data": data.sha256, "upstream": upstream, "checkpoint_format": 2})
    history, start_epoch, train_seconds = [], 0, 0.0
    state = load_latest_checkpoint(ckpt_dir, run_key)
    if state is not None:
        trained.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, train_seconds = state["history"], state["epoch"] + 1, state["train_seconds"]
        if world.is_main:
            print(f"resuming {model_name} from epoch {start_epoch}")
    trainee = distribute(trained, world, device)

    for epoch in range(start_epoch, cfg["epochs"]):
        epoch_start = time.perf_counter()
        lr = lr_at(epoch, cfg)
        set_lr(optimizer, lr)
        loader = epoch_loader(dataset, cfg, seed, epoch, world)
        stats = train_one_epoch(trainee, loader, optimizer, distillation.loss, device, world,
                                desc=f"{model_name} epoch {epoch + 1}/{cfg['epochs']}")
        test = evaluate(model, test_set, len(classes), device, world)
        train_seconds += time.perf_counter() - epoch_start
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": stats["train_loss"],
                        "train_top1": stats["train_top1"], "test_loss": test["loss"], "test_top1": test["top1"],
                        "images": stats["images"], "loop_seconds": stats["seconds"]})
        if world.is_main:
            print(f"{model_name} epoch {epoch + 1}/{cfg['epochs']}: lr {lr:.5f} train loss {stats['train_loss']:.4f} "
                  f"top1 {stats['train_top1']:.4f} | test loss {test['loss']:.4f} top1 {test['top1']:.4f} "
                  f"| {stats['images'] / stats['seconds']:.0f} images/s", flush=True)
            save_checkpoint(ckpt_dir, epoch, {"epoch": epoch, "run_key": run_key, "model": trained.state_dict(),
                                              "optimizer": optimizer.state_dict(), "history": history,
                                              "train_seconds": train_seconds})
        barrier(world)  # no process runs ahead of a checkpoint it could need to resume from

    final = evaluate(model, test_set, len(classes), device, world)
    if not world.is_main:
        return None
    out_dir = Path(out_dir)
    model_path = out_dir / "model.pt"
    save_torch({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "spec": spec,
                "name": model_name, "classes": classes, "height": height, "width": width,
                "yuv_matrix": data.manifest.get("yuv_matrix")}, model_path)
    write_history(out_dir / "history.csv", history)
    metrics = {
        "model": model_name, "seed": seed, "input_format": fmt, "arch": spec["arch"], "width_mult": spec["width_mult"],
        "top1": final["top1"], "loss": final["loss"], "per_class_top1": dict(zip(classes, final["per_class_top1"])),
        "epochs": cfg["epochs"], "total_epochs": total_epochs(params, model_name), "lr": cfg["lr"],
        "train_images": len(dataset), "test_images": len(test_set),
        **distill_metrics(kd, distillation),
        "params": count_params(model), "device": str(device),
        "world_size": world.size, "launcher": launcher(world), "batch_size": cfg["batch_size"],
        "wall_time_s": round(train_seconds, 2),
        # images/s of the training loop alone (augmentation, forward, backward, step; no evaluation)
        "train_images_per_s": round(sum(h["images"] for h in history) / sum(h["loop_seconds"] for h in history), 2),
        "model_sha256": sha256_file(model_path),
        "provenance": provenance(run_key),
    }
    write_json(out_dir / "train_metrics.json", metrics)  # written last: marks the stage complete
    return metrics


def check_input_size(spec, model_name, height, width):
    size = INPUT_SIZES.get(spec["arch"])
    if size and (height, width) != size:
        raise UserError(f"params.yaml: key 'models.{model_name}.arch': {spec['arch']} takes {size[0]}x{size[1]} "
                        f"images, the packed data is {height}x{width}")


def distill_metrics(kd, distillation):
    """What the summary's teacher / kd_type / kd_alpha columns show, and the teacher's own top-1."""
    if kd is None:
        return {"teacher": None, "kd_type": None, "kd_alpha": None}
    factor = kd["alpha"] if kd["type"] == "output" else kd["feature_weight"]
    return {"teacher": kd["teacher"], "kd_type": kd["type"], "kd_alpha": factor, "distill": kd,
            "teacher_arch": distillation.teacher_ckpt["spec"]["arch"]}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of params.yaml models")
    parser.add_argument("--data", default=layout.PACKED, help="folder with the packed train/ and <format>/ splits")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoints", help="default: results/checkpoints/<model>")
    parser.add_argument("--teacher", help="the teacher's model.pt (models with distill)")
    parser.add_argument("--init", help="the model.pt the student starts from (distill.init)")
    parser.add_argument("--seed", type=int, help="training seed (default: the model's, from params.yaml seeds)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    ckpt_dir = args.checkpoints or layout.epoch_checkpoints(args.model)
    metrics = train(params, args.model, args.data, args.out, ckpt_dir, args.teacher, args.init, args.seed)
    if metrics is not None:  # the main process of a DDP job
        print(f"{args.model}: test top-1 {metrics['top1']:.4f} after {metrics['epochs']} epochs "
              f"({metrics['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
