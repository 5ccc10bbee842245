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

A model may set its own ``epochs``, ``lr`` and ``schedule``. With ``distill`` it learns from a
teacher checkpoint (--teacher; workflow/distill.py): the teacher (frozen, eval mode)
sees the same augmented image in its own input format, before sensor noise; ``init``
starts the student from another model's checkpoint (--init) instead of from scratch.
"""
import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from workflow import layout
from workflow.config import load_params, params_hash
from workflow.distill import FeatureDistiller, output_kd_loss
from workflow.errors import UserError, cli
from workflow.input_pipeline import PackedData
from workflow.io import atomic_path, sha256_file, write_json, write_text
from workflow.model_specs import distill_settings, total_epochs
from workflow.models import build_model, count_params, load_checkpoint
from workflow.provenance import provenance


def lr_at(epoch, train):
    """Seed 000's mixed schedule: cosine decay for ``cosine_epochs``, then step drops at ``milestones``."""
    s = train["schedule"]
    base, final_ratio = train["lr"], s["cosine_final_ratio"]
    if epoch < s["cosine_epochs"]:
        return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * epoch / s["cosine_epochs"])))
    lr = base * (final_ratio if s["cosine_epochs"] else 1.0)
    return lr * s["gamma"] ** sum(epoch >= m for m in s["milestones"])


@torch.no_grad()
def evaluate(model, test_set, num_classes, device, batch_size=256):
    model.eval()
    loss_sum, preds = 0.0, []
    for inputs, target in test_set.batches(batch_size):
        logits = model(*[x.to(device) for x in inputs])
        loss_sum += nn.functional.cross_entropy(logits, target.to(device), reduction="sum").item()
        preds.append(logits.argmax(1).cpu())
    preds, labels = torch.cat(preds), test_set.labels
    correct = preds == labels
    per_class = [correct[labels == c].float().mean().item() if (labels == c).any() else None
                 for c in range(num_classes)]
    return {"top1": correct.float().mean().item(), "loss": loss_sum / len(labels), "per_class_top1": per_class}


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- checkpoints
def save_torch(obj, path):
    """torch.save through a file object: the archive does not embed the (temporary) file name,
    so the same weights always give the same bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def checkpoint_paths(ckpt_dir):
    return sorted(Path(ckpt_dir).glob("epoch-*.pt"))


def save_checkpoint(ckpt_dir, epoch, state):
    """Write epoch-NNNN.pt atomically, then its .sha256; a .pt without a .sha256 is incomplete."""
    path = Path(ckpt_dir) / f"epoch-{epoch:04d}.pt"
    save_torch(state, path)
    write_text(path.with_suffix(".pt.sha256"), sha256_file(path) + "\n")
    for old in checkpoint_paths(ckpt_dir)[:-2]:  # keep the two newest
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)


def load_latest_checkpoint(ckpt_dir, run_key):
    """The newest complete checkpoint of this exact configuration, or None."""
    for path in reversed(checkpoint_paths(ckpt_dir)):
        sidecar = path.with_suffix(".pt.sha256")
        if not sidecar.exists():
            continue  # interrupted while writing: not a checkpoint
        if sha256_file(path) != sidecar.read_text().strip():
            raise UserError(f"{path}: checkpoint checksum mismatch (corrupt); delete it to restart training "
                            "from the previous checkpoint")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
            raise UserError(f"{path}: cannot read checkpoint ({type(err).__name__}); delete it") from None
        if state.get("run_key") != run_key:
            print(f"note: {path} belongs to another configuration; starting from scratch")
            return None
        return state
    return None


# ----------------------------------------------------------------------------- main
def resolve_device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: key 'train.device': got \"cuda\", but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def model_train_config(params, spec):
    """train section with the model's own epochs, lr and schedule, if it sets them."""
    return {**params["train"], **{key: spec[key] for key in ("epochs", "lr", "schedule") if key in spec}}


def load_frozen(path, role):
    """A trained model from its model.pt, frozen in eval mode (a teacher), and its checkpoint dict."""
    model, ckpt = load_checkpoint(path, role)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ckpt


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


def train(params, model_name, data_dir, out_dir, ckpt_dir, teacher_path=None, init_path=None):
    if model_name not in params["models"]:
        raise UserError(f"params.yaml: key 'models': no model named {model_name!r} "
                        f"(have: {', '.join(params['models'])})")
    spec, seed = params["models"][model_name], params["seed"]
    cfg, kd = model_train_config(params, spec), distill_settings(spec)
    fmt = spec["input_format"]
    data = PackedData(data_dir, fmt)
    height, width, classes = data.height, data.width, data.classes

    device = resolve_device(cfg["device"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg["num_threads"])
    seed_everything(seed)

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
    trained = list(model.parameters()) + (list(distillation.distiller.parameters()) if distillation.distiller else [])
    decay, no_decay = [], []
    for p in trained:  # no weight decay on BN and bias parameters (torchvision reference)
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": cfg["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"])
    dataset = data.train_set(cfg["augment"], distillation.teacher_format)
    test_set = data.test_set()

    run_key = params_hash({"seed": seed, "model": spec, "train": {k: v for k, v in cfg.items()
                                                                  if k not in ("num_workers",)},
                           "data": data.sha256, "upstream": upstream})
    history, start_epoch, train_seconds = [], 0, 0.0
    state = load_latest_checkpoint(ckpt_dir, run_key)
    if state is not None:
        model.load_state_dict(state["model"])
        if distillation.distiller is not None:
            distillation.distiller.load_state_dict(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, train_seconds = state["history"], state["epoch"] + 1, state["train_seconds"]
        print(f"resuming {model_name} from epoch {start_epoch}")

    for epoch in range(start_epoch, cfg["epochs"]):
        epoch_start = time.perf_counter()
        # Every epoch's randomness derives from (seed, epoch) alone, so a resumed run
        # replays exactly what an uninterrupted one would have done.
        seed_everything(seed * 1000 + epoch)
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=True,
                                             generator=generator, num_workers=cfg["num_workers"],
                                             drop_last=len(dataset) > cfg["batch_size"])
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum = correct = seen = 0
        bar = tqdm(loader, desc=f"{model_name} epoch {epoch + 1}/{cfg['epochs']}", leave=False,
                   mininterval=1.0, disable=None)
        for inputs, teacher_inputs, target in bar:
            # uint8 pixels from the loader (a quarter of float32 through its workers' shared memory and to the device)
            inputs, target = [x.to(device).float() for x in inputs], target.to(device)
            logits = model(*inputs)
            loss = distillation.loss(logits, target, [x.to(device).float() for x in teacher_inputs])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(target)
            correct += (logits.argmax(1) == target).sum().item()
            seen += len(target)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.4f}")
        test = evaluate(model, test_set, len(classes), device)
        train_seconds += time.perf_counter() - epoch_start
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_top1": correct / seen,
                        "test_loss": test["loss"], "test_top1": test["top1"]})
        print(f"{model_name} epoch {epoch + 1}/{cfg['epochs']}: lr {lr:.5f} train loss {loss_sum / seen:.4f} "
              f"top1 {correct / seen:.4f} | test loss {test['loss']:.4f} top1 {test['top1']:.4f}", flush=True)
        save_checkpoint(ckpt_dir, epoch, {"epoch": epoch, "run_key": run_key, "model": model.state_dict(),
                                          "distiller": distillation.distiller and distillation.distiller.state_dict(),
                                          "optimizer": optimizer.state_dict(), "history": history,
                                          "train_seconds": train_seconds})

    final = evaluate(model, test_set, len(classes), device)
    out_dir = Path(out_dir)
    model_path = out_dir / "model.pt"
    save_torch({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "spec": spec,
                "name": model_name, "classes": classes, "height": height, "width": width,
                "yuv_matrix": data.manifest.get("yuv_matrix")}, model_path)
    write_text(out_dir / "history.csv", "epoch,lr,train_loss,train_top1,test_loss,test_top1\n" + "".join(
        f"{h['epoch']},{h['lr']:.6g},{h['train_loss']:.6f},{h['train_top1']:.6f},{h['test_loss']:.6f},"
        f"{h['test_top1']:.6f}\n" for h in history))
    metrics = {
        "model": model_name, "input_format": fmt, "arch": spec["arch"], "width_mult": spec["width_mult"],
        "top1": final["top1"], "loss": final["loss"], "per_class_top1": dict(zip(classes, final["per_class_top1"])),
        "epochs": cfg["epochs"], "total_epochs": total_epochs(params, model_name), "lr": cfg["lr"],
        "train_images": len(dataset), "test_images": len(test_set),
        **distill_metrics(kd, distillation),
        "params": count_params(model), "device": str(device),
        "wall_time_s": round(train_seconds, 2), "model_sha256": sha256_file(model_path),
        "provenance": provenance(run_key),
    }
    write_json(out_dir / "train_metrics.json", metrics)  # written last: marks the stage complete
    return metrics


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
    parser.add_argument("--data", default=layout.PACKED, help="folder with the packed rgb/ and <format>/ splits")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoints", help="default: results/checkpoints/<model>")
    parser.add_argument("--teacher", help="the teacher's model.pt (models with distill)")
    parser.add_argument("--init", help="the model.pt the student starts from (distill.init)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    ckpt_dir = args.checkpoints or layout.epoch_checkpoints(args.model)
    metrics = train(params, args.model, args.data, args.out, ckpt_dir, args.teacher, args.init)
    print(f"{args.model}: test top-1 {metrics['top1']:.4f} after {metrics['epochs']} epochs "
          f"({metrics['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
