"""The training loop shared by the train, prune and QAT stages (torchvision references/classification style).

    seed_everything, setup          determinism, threads, device (and the DDP process group: workflow.distributed)
    sgd, lr_at, set_lr              optimizer with param groups, seed 000's mixed schedule
    epoch_loader, train_one_epoch   one epoch over any torch Dataset of (inputs, extra inputs, label) items
                                    (input_pipeline.PackedData.train_set: uint8 or float32 pixels 0..255)
    evaluate                        top-1, loss and per-class top-1 over a packed test split (PackedData.test_set)
    save_checkpoint, load_latest_checkpoint, save_torch, write_history    resumable, atomic files

Determinism: every epoch's randomness (shuffling, augmentation, noise) derives from (seed, stream, rank)
alone, where ``stream`` numbers the epochs of a stage, so a run resumed from a checkpoint replays exactly
what an uninterrupted one would have done, and the same seed gives identical results for a given world
size. Under DDP each process draws its own share of every epoch (DistributedSampler) and augments it with
its own generator; the epoch metrics are summed over all processes, so they describe the whole epoch as
one process would report it.
"""
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from workflow.distributed import SINGLE, all_reduce_sum
from workflow.errors import UserError
from workflow.io import atomic_path, sha256_file, write_text
from workflow.models import load_checkpoint


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stream_seed(seed, stream, rank=0):
    """The seed of one epoch (``stream``) on one process: rank 0's is the single-process seed."""
    return seed * 1000 + stream + rank * 10**9


def resolve_device(name, local_rank=0):
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: key 'train.device': got \"cuda\", but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def setup(cfg, seed, world=SINGLE):
    """Deterministic kernels, the thread count and the seed; returns this process's device."""
    device = resolve_device(cfg["device"], world.local_rank)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg["num_threads"])
    seed_everything(seed)
    return device


# ----------------------------------------------------------------------------- optimizer and schedule
def sgd(module, lr, cfg):
    """SGD with momentum; weight decay on weights only, not on BN scales and biases (torchvision reference)."""
    trained = [p for p in module.parameters() if p.requires_grad]
    decay, no_decay = [p for p in trained if p.ndim > 1], [p for p in trained if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg["weight_decay"]},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"])


def lr_at(epoch, train):
    """Seed 000's mixed schedule: cosine decay for ``cosine_epochs``, then step drops at ``milestones``."""
    s = train["schedule"]
    base, final_ratio = train["lr"], s["cosine_final_ratio"]
    if epoch < s["cosine_epochs"]:
        return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * epoch / s["cosine_epochs"])))
    lr = base * (final_ratio if s["cosine_epochs"] else 1.0)
    return lr * s["gamma"] ** sum(epoch >= m for m in s["milestones"])


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


class WithExtras(nn.Module):
    """A model and the extra modules trained beside it (KD adapters) as one module, so that the optimizer
    and DDP see every trained parameter; its forward is the model's."""

    def __init__(self, model, extras=None):
        super().__init__()
        self.model = model
        self.extras = extras

    def forward(self, *inputs):
        return self.model(*inputs)


def distribute(module, world, device):
    """``module`` under DistributedDataParallel when there are several processes (gradients are averaged)."""
    if world.size == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


# ----------------------------------------------------------------------------- epochs
def epoch_loader(dataset, cfg, seed, stream, world=SINGLE):
    """This process's DataLoader for one epoch, its order and augmentation fixed by (seed, stream, rank)."""
    seed_everything(stream_seed(seed, stream, world.rank))  # augmentation and noise in the main process
    batch = cfg["batch_size"] // world.size  # the global batch, split evenly (checked with params.yaml)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True,
                                                  seed=stream_seed(seed, stream))
    generator = torch.Generator().manual_seed(stream_seed(seed, stream, world.rank))  # worker seeds
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, generator=generator,
                                       num_workers=cfg["num_workers"], drop_last=len(sampler) > batch)


def train_one_epoch(module, loader, optimizer, loss_fn, device, world=SINGLE, after_backward=None, max_steps=None,
                    desc="train"):
    """One pass (or ``max_steps`` batches) over ``loader``'s (inputs, extra inputs, target) batches.

    ``loss_fn(logits, target, extra_inputs)`` gives the loss; ``after_backward(module)`` may edit gradients
    before the step (pruning's L1 term, QAT's BN freeze). Returns loss, top-1, images and seconds, summed
    over all processes."""
    module.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, steps, start = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, mininterval=1.0, disable=None if world.is_main else True)
    for inputs, extra, target in bar:
        if max_steps is not None and steps >= max_steps:
            break
        # uint8 pixels from the loader (a quarter of float32 through its workers' shared memory and to the
        # device), converted there
        inputs = [x.to(device, non_blocking=True).float() for x in inputs]
        target = target.to(device, non_blocking=True)
        logits = module(*inputs)
        loss = loss_fn(logits, target, [x.to(device, non_blocking=True).float() for x in extra])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(module)
        optimizer.step()
        # summed on the device: no host synchronisation per step
        loss_sum += loss.detach() * len(target)
        correct += (logits.detach().argmax(1) == target).sum()
        seen += len(target)
        steps += 1
        if steps % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = all_reduce_sum(world, [loss_sum.item(), correct.item(), seen], device)
    return {"train_loss": loss_sum / seen, "train_top1": correct / seen, "images": int(seen), "steps": steps,
            "seconds": seconds}


@torch.no_grad()
def evaluate(model, test_set, num_classes, device, world=SINGLE, batch_size=256):
    """Top-1, mean cross-entropy and per-class top-1 over a packed test split (input_pipeline.TestSet);
    under DDP each process evaluates its own contiguous share and the counts are summed."""
    model.eval()
    labels = test_set.labels
    start, stop = len(labels) * world.rank // world.size, len(labels) * (world.rank + 1) // world.size
    loss_sum, correct_per_class = 0.0, torch.zeros(num_classes, dtype=torch.float64)
    for inputs, target in test_set.batches(batch_size, start, stop):
        logits = model(*(x.to(device) for x in inputs)).cpu()
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct_per_class += torch.bincount(target[logits.argmax(1) == target], minlength=num_classes).double()
    totals = all_reduce_sum(world, [loss_sum, *correct_per_class.tolist()], device)
    loss_sum, correct_per_class = totals[0], totals[1:]
    count = torch.bincount(labels, minlength=num_classes).tolist()
    return {"top1": sum(correct_per_class) / len(labels), "loss": loss_sum / len(labels),
            "per_class_top1": [c / n if n else None for c, n in zip(correct_per_class, count)]}


# ----------------------------------------------------------------------------- files
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


def load_latest_checkpoint(ckpt_dir, run_key, device="cpu"):
    """The newest complete checkpoint of this exact configuration, or None."""
    for path in reversed(checkpoint_paths(ckpt_dir)):
        sidecar = path.with_suffix(".pt.sha256")
        if not sidecar.exists():
            continue  # interrupted while writing: not a checkpoint
        if sha256_file(path) != sidecar.read_text().strip():
            raise UserError(f"{path}: checkpoint checksum mismatch (corrupt); delete it to restart training "
                            "from the previous checkpoint")
        try:
            state = torch.load(path, map_location=device, weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
            raise UserError(f"{path}: cannot read checkpoint ({type(err).__name__}); delete it") from None
        if state.get("run_key") != run_key:
            print(f"note: {path} belongs to another configuration; starting from scratch")
            return None
        return state
    return None


def load_frozen(path, role):
    """A trained model from its model.pt, frozen in eval mode (a teacher), and its checkpoint dict."""
    model, ckpt = load_checkpoint(path, role)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ckpt


def write_history(path, history):
    """history.csv, the per-epoch curves (DVC plots)."""
    write_text(path, "epoch,lr,train_loss,train_top1,test_loss,test_top1\n" + "".join(
        f"{h['epoch']},{h['lr']:.6g},{h['train_loss']:.6f},{h['train_top1']:.6f},{h['test_loss']:.6f},"
        f"{h['test_top1']:.6f}\n" for h in history))
