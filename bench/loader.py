"""Training-loader throughput at 224 px: the packed JPEG shards vs torchvision ImageFolder vs WebDataset
vs LitData over the same JPEG files; and the 32 px raw layout vs the same images as JPEG shards.

    .venv/bin/python bench/loader.py [--images 2048] [--epochs 2] [--folder DIR ...]

Every loader does what training needs at 224 px: decode, random-resized crop to 224x224 (scale
0.08-1, ratio 3/4-4/3), horizontal flip, and hands out batches of 64 through a torch DataLoader
with 2 worker processes (1 thread each), shuffled:

* ``imagefolder``: torchvision ImageFolder over the JPEG files, torchvision's reference
  transforms on the PIL image (v2.RandomResizedCrop, RandomHorizontalFlip, PILToTensor);
* ``webdataset``: the same JPEGs in tar shards (webdataset's ShardWriter), decoded by PIL,
  the same transforms (webdataset's usual pipeline), shuffle buffer 1000;
* ``litdata``: the same JPEGs written by litdata.optimize (its JPEG serializer keeps the file's
  bytes and decodes with torchvision), the same transforms on the tensor;
* ``packed``: this project's pack stage (data.image_size 224: training JPEGs with the short side
  at most 256, a JPEG already within it kept byte for byte) read by workflow.input_pipeline's
  TrainSet (torchvision's JPEG decoder, RandomResizedCrop sampling, OpenCV resize), float32 out;
* ``packed_full_res``: the same with data.train_short_side 0 (every JPEG kept as it is): the
  format and reader alone, without the pack-time resize.

The image sets: each ``--folder`` (an ImageFolder ``train/`` tree of JPEGs; default: the in-repo
real images, COCO128's 640x480-class photographs and the 227x227 ILSVRC-2012 fixture), each
repeated to ``--images`` files so that every loader reads as many distinct files. images/s is
the median over ``--epochs`` timed epochs after a warm-up epoch (page cache warm for all); the
loaders take turns, one epoch each per round, so that other load on the machine hits them alike.
Also: bytes on disk of each format against the source JPEGs, and the 32 px CIFAR case (the raw
``images.npy`` layout vs the same images as packed JPEG shards), which decides whether the
small-image path keeps its raw layout. Writes bench/results/loader.json.
"""
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.config import validate  # noqa: E402
from workflow.input_pipeline import PackedData  # noqa: E402
from workflow.io import write_json  # noqa: E402
from workflow.pack import pack_eval, pack_train  # noqa: E402

BATCH, WORKERS, SIZE = 64, 2, 224
CROP = {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}
MACHINE_NOTE = ("2-core machine shared with other jobs while this ran (figures are noisy; rerun on an idle "
                "machine for the record)")


def reference_transform():
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(SIZE, scale=tuple(CROP["scale"]), ratio=tuple(CROP["ratio"]),
                                            antialias=True), v2.RandomHorizontalFlip()])


def pil_transform():
    from torchvision.transforms import v2

    return v2.Compose([reference_transform(), v2.PILToTensor()])


def worker_init(_):
    torch.set_num_threads(1)


def loader(dataset, **kwargs):
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, worker_init_fn=worker_init,
                                       multiprocessing_context="fork", **kwargs)


def identity(x):
    return x


def images_per_second(loaders, epochs):
    """{name: median images/s} of loader factories (epoch -> batches), measured in turns, one epoch each per
    round, so that a busy machine slows them alike. Round 0 warms the page cache and the imports."""
    rates = {name: [] for name in loaders}
    for epoch in range(epochs + 1):
        for name, make_loader in loaders.items():
            batches = make_loader(epoch)
            start, seen = time.perf_counter(), 0
            for batch in batches:
                seen += len(batch[-1])
            if epoch:
                rates[name].append(seen / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


# ----------------------------------------------------------------------------- the image sets
def jpegs(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def repeated_folder(source, dest, count):
    """``count`` JPEG files (links) cycling through the source folder's train/<class>/ images."""
    files = jpegs(Path(source) / "train")
    for i in range(count):
        image = files[i % len(files)]
        target = dest / "train" / image.parent.name / f"{i:06d}{image.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(image.resolve())
    for image in {f.parent.name: f for f in files}.values():  # one evaluation image per class
        (dest / "val" / image.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / "val" / image.parent.name / image.name).symlink_to(image.resolve())
    return dest


def coco_folder(dest):
    """COCO128's in-repo photographs (variable sizes, about 640x480) as a one-class folder."""
    for image in sorted((ROOT / "tests/data/coco128/images/train2017").glob("*.jpg")):
        (dest / "train" / "photo").mkdir(parents=True, exist_ok=True)
        (dest / "train" / "photo" / image.name).symlink_to(image)
    return dest


def bench_params(folder, **data):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="imagefolder", path=str(folder), train_subset=0, test_subset=0, calib_subset=1,
                          image_size=SIZE, pack_workers=2, **data)
    aug = params["train"]["augment"]
    aug.update(random_crop_padding=0, rotation_degrees=0, color_jitter=[0, 0, 0, 0], gaussian_noise_std=0.0,
               horizontal_flip=True, random_resized_crop=CROP)
    return validate(params)


def pack(folder, out, **data):
    params = bench_params(folder, **data)
    manifest = pack_train(params, out / "train")
    pack_eval(params, "rgb", out / "rgb")
    return params, manifest


# ----------------------------------------------------------------------------- loaders
def imagefolder_loader(folder, seed):
    from torchvision import datasets

    dataset = datasets.ImageFolder(str(folder / "train"), transform=pil_transform())
    return loader(dataset, shuffle=True, generator=torch.Generator().manual_seed(seed))


def packed_loader(out, params, seed):
    dataset = PackedData(out, "rgb").train_set(params["train"]["augment"])
    return loader(dataset, shuffle=True, generator=torch.Generator().manual_seed(seed))


def write_webdataset(folder, out):
    import webdataset as wds

    out.mkdir(parents=True)
    files = jpegs(folder / "train")
    classes = sorted({f.parent.name for f in files})
    with wds.ShardWriter(str(out / "shard-%05d.tar"), maxsize=256 << 20, verbose=0) as sink:
        for i, file in enumerate(files):
            sink.write({"__key__": f"{i:08d}", "jpg": file.read_bytes(), "cls": classes.index(file.parent.name)})
    return sorted(str(p) for p in out.glob("*.tar"))


def webdataset_loader(urls, seed):
    import webdataset as wds

    transform = pil_transform()
    dataset = (wds.WebDataset(urls, shardshuffle=False, seed=seed, empty_check=False,
                              workersplitter=wds.split_by_worker)
               .shuffle(1000).decode("pil").to_tuple("jpg", "cls").map_tuple(transform, identity)
               .batched(BATCH))
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=WORKERS, worker_init_fn=worker_init,
                                       multiprocessing_context="fork")


class LitDataItems:
    """(PIL JPEG opened from its file, label): what litdata.optimize serialises as the file's bytes."""

    def __init__(self, files, classes):
        self.files, self.classes = files, classes

    def __call__(self, i):
        return {"image": Image.open(self.files[i]), "label": self.classes.index(self.files[i].parent.name)}


def write_litdata(folder, out):
    import litdata

    files = jpegs(folder / "train")
    classes = sorted({f.parent.name for f in files})
    litdata.optimize(fn=LitDataItems(files, classes), inputs=list(range(len(files))), output_dir=str(out),
                     chunk_bytes="64MB", num_workers=2, mode="overwrite", verbose=False)
    return out


def litdata_loader(out, seed):
    import litdata

    dataset = litdata.StreamingDataset(str(out), shuffle=True, seed=seed, transform=LitDataTransform())
    return litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, worker_init_fn=worker_init,
                                       multiprocessing_context="fork")


class LitDataTransform:
    """torchvision's RandomResizedCrop + flip on litdata's decoded uint8 tensor."""

    def __init__(self):
        self.transform = reference_transform()

    def __call__(self, item):
        return self.transform(item["image"]), item["label"]


def folder_bytes(folder, pattern="*"):
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


def source_bytes(folder):
    return sum(p.resolve().stat().st_size for p in (Path(folder) / "train").rglob("*") if p.is_symlink() or p.is_file())


def bench_224(name, source, tmp, images, epochs):
    folder = repeated_folder(source, tmp / f"{name}-folder", images)
    params, manifest = pack(folder, tmp / f"{name}-packed")
    params_full, manifest_full = pack(folder, tmp / f"{name}-packed-full", train_short_side=0)
    urls = write_webdataset(folder, tmp / f"{name}-wds")
    lit = write_litdata(folder, tmp / f"{name}-litdata")
    rates = images_per_second({
        "imagefolder": lambda s: imagefolder_loader(folder, s),
        "webdataset": lambda s: webdataset_loader(urls, s),
        "litdata": lambda s: litdata_loader(lit, s),
        "packed": lambda s: packed_loader(tmp / f"{name}-packed", params, s),
        "packed_full_res": lambda s: packed_loader(tmp / f"{name}-packed-full", params_full, s),
    }, epochs)
    source_size = source_bytes(folder)
    sizes = {"source_jpegs": source_size, "packed": manifest["bytes"], "packed_full_res": manifest_full["bytes"],
             "webdataset": folder_bytes(tmp / f"{name}-wds", "*.tar"), "litdata": folder_bytes(lit)}
    best_other = max(rates["webdataset"], rates["litdata"])
    return {
        "images": images, "distinct_source_images": len({p.resolve() for p in jpegs(folder / "train")}),
        "images_per_s": rates, "bytes": sizes,
        "bytes_vs_source": {k: v / source_size for k, v in sizes.items()},
        "packed_vs_imagefolder": rates["packed"] / rates["imagefolder"],
        "packed_vs_best_packed_loader": rates["packed"] / best_other,
        "packed_full_res_vs_imagefolder": rates["packed_full_res"] / rates["imagefolder"],
        "packed_kept_verbatim": manifest["kept_verbatim"],
    }


def bench_32(tmp, epochs):
    """CIFAR at 32 px: the raw layout (images.npy) vs the same images packed as JPEG shards."""
    from workflow.sources import load_source

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="npz", path=str(ROOT / "tests/data/cifar10/cifar10_subset.npz"), train_subset=0,
                          test_subset=0, calib_subset=1)
    aug = params["train"]["augment"]
    aug.update(rotation_degrees=0, color_jitter=[0, 0, 0, 0], gaussian_noise_std=0.0)
    raw_manifest = pack_train(validate(params), tmp / "cifar-raw" / "train")
    pack_eval(params, "rgb", tmp / "cifar-raw" / "rgb")
    jpeg = dict(params, data={**params["data"], "image_size": 32})
    jpeg["train"] = {**params["train"], "augment": {**aug, "random_resized_crop": {"scale": [1.0, 1.0],
                                                                                   "ratio": [1.0, 1.0]}}}
    jpeg_manifest = pack_train(validate(jpeg), tmp / "cifar-jpeg" / "train")
    pack_eval(jpeg, "rgb", tmp / "cifar-jpeg" / "rgb")
    source = load_source(params["data"])
    rates = images_per_second({"raw": lambda s: packed_loader(tmp / "cifar-raw", params, s),
                               "jpeg": lambda s: packed_loader(tmp / "cifar-jpeg", jpeg, s)}, epochs)
    return {"images": raw_manifest["count"], "augment": "pad-4 random crop + flip (as the default params)",
            "images_per_s": rates, "raw_vs_jpeg": rates["raw"] / rates["jpeg"],
            "bytes": {"raw": raw_manifest["files"][0]["bytes"], "jpeg": jpeg_manifest["bytes"],
                      "pixels": int(source.splits["train"].images.nbytes)}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048, help="files per image set (the sources repeated)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (after one warm-up)")
    p.add_argument("--folder", action="append", default=[], help="an ImageFolder root (train/<class>/*.jpg)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    p.add_argument("--machine-note", default=MACHINE_NOTE,
                    help="how busy the machine was (recorded as machine_note)")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="loader-bench.") as tmp:
        tmp = Path(tmp)
        sources = {Path(f).name: Path(f) for f in args.folder} or {
            "coco128_photos": coco_folder(tmp / "coco"), "imagenet_fixture_227px": ROOT / "tests/data/imagenet"}
        for name, folder in sources.items():
            results[name] = bench_224(name, folder, tmp, args.images, args.epochs)
            print(name, {k: round(v) for k, v in results[name]["images_per_s"].items()}, flush=True)
        results["cifar_32px"] = bench_32(tmp, args.epochs)
        print("cifar_32px", {k: round(v) for k, v in results["cifar_32px"]["images_per_s"].items()}, flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results.update({
        "settings": {"batch_size": BATCH, "workers": WORKERS, "size": SIZE, "random_resized_crop": CROP,
                     "flip": True, "timed_epochs": args.epochs},
        "targets": {"packed_vs_imagefolder": ">=2", "packed_vs_best_packed_loader": ">=1",
                    "packed_bytes_vs_source": "<=1.5"},
        "machine_note": args.machine_note, "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "python": platform.python_version(),
    })
    write_json(args.out, results)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
