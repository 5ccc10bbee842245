"""Loader throughput: the packed .npy format vs torchvision ImageFolder over PNG files vs an in-memory tensor.

    .venv/bin/python bench/loader.py [--npz tests/data/cifar10/cifar10_subset.npz] [--epochs 3]

The same images (the training split of the array file; by default the repository's 1024 real
CIFAR-10 training images) are served three ways, each through a
torch DataLoader (batch 256, shuffled, no workers) yielding uint8 NCHW batches and labels:

* ``imagefolder``: torchvision ImageFolder over one PNG per image (decoded by PIL each epoch),
  what a lab gets from an exported image folder;
* ``packed``: the pack stage's memory-mapped structured .npy, reopened every epoch and read by
  batch (one fancy-indexed read of the batch's sorted indices);
* ``in_memory``: a contiguous uint8 NCHW tensor already in RAM (the upper bound).

Every loader hands out contiguous uint8 NCHW batches, so each pays for the same copy.

The first epoch of each is a warm-up (page cache, imports); images/s is the median over the
timed epochs. Writes bench/results/loader.json; targets: packed >= 10x ImageFolder and >= 0.8x
in-memory.
"""
import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.datasets import load_source, open_packed, write_packed  # noqa: E402
from workflow.io import write_json  # noqa: E402

BATCH = 256


class PackedBatches(torch.utils.data.Dataset):
    """Batched reads from the packed file: ``__getitems__`` gets all indices of a batch at once."""

    def __init__(self, path):
        self.array = open_packed(path)

    def __len__(self):
        return len(self.array)

    def __getitems__(self, indices):
        rows = self.array[np.sort(indices)]
        images = torch.from_numpy(rows["image"]).permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(rows["label"].astype(np.int64))


class TensorBatches(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.labels)

    def __getitems__(self, indices):
        index = torch.as_tensor(np.sort(indices))  # the same sorted read as the packed loader
        return self.images[index], self.labels[index]


def batched_loader(dataset, seed):
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, collate_fn=lambda batch: batch,
                                       generator=torch.Generator().manual_seed(seed))


def imagefolder_loader(root, seed):
    dataset = datasets.ImageFolder(root, transform=transforms.PILToTensor())
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def images_per_second(make_loader, epochs):
    rates = []
    for epoch in range(epochs + 1):
        loader = make_loader(epoch)
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += len(images)
        if epoch:  # epoch 0 warms the page cache and imports
            rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--npz", default=str(ROOT / "tests" / "data" / "cifar10" / "cifar10_subset.npz"),
                   help="an array file of the npz source (README: offline use and dataset sources)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (after one warm-up)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    args = p.parse_args()
    torch.set_num_threads(1)

    splits, classes, _ = load_source({"source": "npz", "path": args.npz})
    images, labels = splits["train"]
    with tempfile.TemporaryDirectory(prefix="loader-bench.") as tmp:
        tmp = Path(tmp)
        packed = tmp / "train.npy"
        write_packed(packed, images, labels)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = tmp / "png" / f"{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")
        rates = {
            "imagefolder": images_per_second(lambda s: imagefolder_loader(tmp / "png", s), args.epochs),
            "packed": images_per_second(lambda s: batched_loader(PackedBatches(packed), s), args.epochs),
            "in_memory": images_per_second(lambda s: batched_loader(TensorBatches(images, labels), s), args.epochs),
        }
    result = {
        "images": int(len(labels)), "image_shape": list(images.shape[1:]), "batch_size": BATCH,
        "timed_epochs": args.epochs, "images_per_s": rates,
        "packed_vs_imagefolder": rates["packed"] / rates["imagefolder"],
        "packed_vs_in_memory": rates["packed"] / rates["in_memory"],
        "targets": {"packed_vs_imagefolder": ">=10", "packed_vs_in_memory": ">=0.8"},
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor(),
    }
    result["meets_targets"] = result["packed_vs_imagefolder"] >= 10 and result["packed_vs_in_memory"] >= 0.8
    write_json(args.out, result)
    print(f"images/s: imagefolder {rates['imagefolder']:.0f}, packed {rates['packed']:.0f}, in-memory "
          f"{rates['in_memory']:.0f}; packed = {result['packed_vs_imagefolder']:.1f}x ImageFolder, "
          f"{result['packed_vs_in_memory']:.2f}x in-memory -> {args.out}")


if __name__ == "__main__":
    main()
