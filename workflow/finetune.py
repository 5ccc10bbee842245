"""One epoch of SGD on the packed training split: the loop shared by the prune and QAT stages.

Same data path as workflow.train (augmented RGB, converted to the model's input format, sensor
noise), and the same determinism: the epoch's shuffling and augmentation derive from
(seed, stream) alone, so a rerun gives identical weights.
"""
import torch
from torch import nn

from workflow.train import seed_everything


def sgd(model, lr, cfg):
    """SGD as in workflow.train: momentum, weight decay on weights only (not BN or biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg["weight_decay"]},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"])


def train_epoch(model, dataset, optimizer, cfg, seed, stream, device, after_backward=None, max_steps=None):
    """One pass (or ``max_steps`` batches) with cross-entropy; ``after_backward(model)`` may edit gradients."""
    seed_everything(seed * 1000 + stream)
    generator = torch.Generator().manual_seed(seed * 1000 + stream)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=True, generator=generator,
                                         num_workers=cfg["num_workers"],
                                         drop_last=len(dataset) > cfg["batch_size"])
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    model.train()
    loss_sum = correct = seen = 0
    for step, (inputs, _, target) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        inputs, target = [x.to(device).float() for x in inputs], target.to(device)  # uint8 from the loader
        logits = model(*inputs)
        loss = criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        loss_sum += loss.item() * len(target)
        correct += (logits.argmax(1) == target).sum().item()
        seen += len(target)
    return {"train_loss": loss_sum / seen, "train_top1": correct / seen}
