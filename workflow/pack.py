"""Pack stage: the configured source (workflow/sources.py) -> packed splits (workflow/datasets.py).

    python -m workflow.pack --params params.yaml --split train --out data/packed/train
    python -m workflow.pack --params params.yaml --split eval --format yuv420 --out data/packed/yuv420

``--split train`` writes the training split once, in RGB, for every input format (the
loader converts after the crop). ``--split eval`` writes one color format's ``test`` and
``calib`` splits (calibration images are drawn from the training subset). Subsets are
drawn with ``seed``.

Pack-time policy (``data.image_size``):

* ``0``: every image keeps its size, which must be the same for all (CIFAR, npz): all
  splits raw uint8 pixels.
* ``> 0`` (the ImageNet protocol, torchvision's reference recipe): evaluation and
  calibration images are resized (short side ``image_size / eval_crop_fraction``,
  bilinear, antialiased) and center-cropped to ``image_size``, stored raw; training
  images are stored as JPEG with the short side at most ``train_short_side`` (a JPEG
  already within it is kept byte for byte, anything else re-encoded at
  ``train_jpeg_quality``), for the loader's random-resized crop.

The stage streams: images are read, transformed and written one by one (by
``data.pack_workers`` processes), so memory does not grow with the number of images.
A bad image (unreadable, truncated, not an image) stops it with one line naming the
file, or with ``data.on_bad: skip`` is left out and listed in the manifest. The old
manifest is removed before anything is written and the new one written last: a failed
pack never leaves a manifest that looks complete.
"""
import argparse
import hashlib
import io
import multiprocessing
from pathlib import Path

import numpy as np

from workflow.colorspace import rgb_to_i420
from workflow.config import load_params, params_hash
from workflow.datasets import (INDEX_FILE, MANIFEST, RAW_TRAIN_FILE, PackedWriter, ShardWriter, packed_dtype)
from workflow.errors import UserError, cli
from workflow.io import sha256_file, write_json
from workflow.provenance import provenance
from workflow.sources import load_source

EVAL_SPLITS = ("test", "calib")
CHUNK = 256  # images per write: bounds memory whatever the split size
MAX_LISTED_SKIPS = 1000
# the data params each split depends on (data.pack_workers changes nothing in the output)
TRAIN_KEYS = ("source", "path", "download", "train_subset", "image_size", "train_short_side", "train_jpeg_quality",
              "shard_size_mb", "on_bad")
EVAL_KEYS = ("source", "path", "download", "train_subset", "test_subset", "calib_subset", "yuv_matrix", "image_size",
             "eval_crop_fraction", "on_bad")


# ----------------------------------------------------------------------------- subsets
def select_indices(source, data, seed):
    """Deterministic subsets: indices of the train and test draws and of the calibration images (in train)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, size in (("train", data["train_subset"]), ("test", data["test_subset"])):
        count = len(source.splits[split])
        if size > count:
            raise UserError(f"params.yaml: key 'data.{split}_subset': got {size}, but the {split} split has "
                            f"only {count} images")
        out[split] = np.sort(rng.permutation(count)[:size]) if size else np.arange(count)
    if data["calib_subset"] > len(out["train"]):
        raise UserError(f"params.yaml: key 'data.calib_subset': got {data['calib_subset']}, but the train "
                        f"split has only {len(out['train'])} images")
    out["calib"] = out["train"][np.sort(rng.permutation(len(out["train"]))[:data["calib_subset"]])]
    return out


# ----------------------------------------------------------------------------- pack-time transforms
class BadImage(Exception):
    pass


def read_file(path):
    """(bytes, decoded PIL image in its own mode) of an image file; BadImage with the reason."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes every byte: a truncated file fails here
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, DecompressionBombError ...
        detail = str(err).splitlines()[0][:120] if str(err) else ""
        raise BadImage(f"cannot read image ({type(err).__name__}: {detail})") from None
    return data, image


def eval_image(image, size, crop_fraction):
    """torchvision's ImageNet evaluation transform: resize the short side to size/crop_fraction, center-crop
    (size 0: the image as it is), as an HWC uint8 RGB array."""
    from torchvision.transforms.v2 import InterpolationMode, functional as F

    image = image.convert("RGB")
    if size:
        image = F.resize(image, int(size / crop_fraction), interpolation=InterpolationMode.BILINEAR, antialias=True)
        image = F.center_crop(image, size)
    return np.asarray(image)


def train_jpeg(data, image, short_side, quality):
    """(JPEG bytes, height, width, kept verbatim) of a training image under the short-side policy."""
    from torchvision.transforms.v2 import InterpolationMode, functional as F

    small_enough = not short_side or min(image.size) <= short_side
    if image.format == "JPEG" and image.mode == "RGB" and small_enough:
        return data, image.height, image.width, True
    image = image.convert("RGB")
    if not small_enough:
        image = F.resize(image, short_side, interpolation=InterpolationMode.BILINEAR, antialias=True)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue(), image.height, image.width, False


def eval_result(data, image, size, crop_fraction):
    return (eval_image(image, size, crop_fraction),)


def read_task(task):
    """One file for the pool: ("ok", *transform(bytes, image, *args), sha256, bytes) or ("bad", reason)."""
    transform, path, args = task
    try:
        data, image = read_file(path)
    except BadImage as bad:
        return "bad", str(bad)
    return ("ok", *transform(data, image, *args), hashlib.sha256(data).hexdigest(), len(data))


class Reader:
    """A source's images in a given order, decoded and transformed (by a pool of ``data.pack_workers``
    processes, in order), bad files named or skipped; what was read is digested for the manifest."""

    def __init__(self, source, data):
        self.source, self.data, self.pool = source, data, None
        self.skipped, self.digest, self.source_bytes = [], hashlib.sha256(), 0

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if self.pool is not None:
            self.pool.terminate() if kind else self.pool.close()
            self.pool.join()

    def map(self, function, tasks):
        if self.data["pack_workers"] <= 1:
            return map(function, tasks)
        if self.pool is None:
            self.pool = multiprocessing.get_context("fork").Pool(self.data["pack_workers"])
        return self.pool.imap(function, tasks, chunksize=4)

    def name(self, path):
        return str(Path(path).relative_to(self.source.root)) if self.source.root else str(path)

    def results(self, split, indices, transform, args):
        """(index, label, transform's result) per readable image, in order."""
        files = self.source.splits[split].files
        labels = self.source.splits[split].labels
        # CHUNK files at a time: the pool never runs further ahead of the writer than that
        results = (result for chunk in chunks(indices)
                   for result in self.map(read_task, [(transform, str(files[i]), args) for i in chunk]))
        for i, result in zip(indices, results):
            if result[0] == "bad":
                self.bad(files[i], result[1])
                continue
            self.digest.update(f"{self.name(files[i])}\0{result[-2]}\n".encode())
            self.source_bytes += result[-1]
            yield i, int(labels[i]), result[1:-2]

    def bad(self, path, reason):
        if self.data["on_bad"] == "error":
            raise UserError(f"{path}: {reason} (fix or remove the file, or set data.on_bad: skip)")
        self.skipped.append({"file": self.name(path), "reason": reason})
        print(f"skipped {path}: {reason}", flush=True)

    def source_entry(self):
        source = self.source
        entry = {"kind": source.kind, "path": source.path,
                 "sha256": source.sha256 or self.digest.hexdigest(), "ignored_files": source.ignored_files}
        if not source.in_memory:
            entry["bytes_read"] = self.source_bytes
        return entry

    def skip_entry(self):
        return {"skipped": len(self.skipped), "skipped_files": self.skipped[:MAX_LISTED_SKIPS]}


def chunks(indices):
    for start in range(0, len(indices), CHUNK):
        yield indices[start:start + CHUNK]


def eval_images(reader, split, indices):
    """(label, HWC uint8 image) of a split's indices, through the evaluation transform."""
    source, data = reader.source, reader.data
    size, fraction = data["image_size"], data["eval_crop_fraction"]
    if source.in_memory:
        images, labels = source.splits[split].images, source.splits[split].labels
        from PIL import Image

        for chunk in chunks(indices):
            for i, image in zip(chunk, images[chunk]):
                yield int(labels[i]), eval_image(Image.fromarray(image), size, fraction) if size else image
        return
    for _, label, (image,) in reader.results(split, indices, eval_result, (size, fraction)):
        yield label, image


# ----------------------------------------------------------------------------- stages
def clear_outputs(out_dir, patterns):
    """The old manifest first (nothing may describe what follows), then the files it described."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for pattern in (*patterns, ".*.tmp"):
        for path in out_dir.glob(pattern):
            path.unlink()


def base_manifest(source):
    manifest = {"classes": source.classes}
    if source.class_names:
        manifest["class_names"] = source.class_names
    return manifest


def write_raw_split(path, images, capacity, num_classes, convert=None):
    """Stream (label, HWC image) pairs into a packed .npy, CHUNK images at a time; all must share one size."""
    writer, shape, counts = None, None, np.zeros(num_classes, dtype=np.int64)

    def flush(batch, labels):
        nonlocal writer
        stored = convert(np.stack(batch)) if convert else np.stack(batch)
        if writer is None:
            writer = PackedWriter(path, capacity, packed_dtype(stored.shape[1:]))
        rows = np.empty(len(labels), dtype=writer.dtype)
        rows["image"], rows["label"] = stored, labels
        writer.append(rows)

    batch, labels = [], []
    try:
        for label, image in images:
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise UserError(f"{path.name}: image {counts.sum()} is {image.shape[1]}x{image.shape[0]}, the "
                                f"first was {shape[1]}x{shape[0]}; set data.image_size to resize variable-size images")
            batch.append(image)
            labels.append(label)
            counts[label] += 1
            if len(batch) == CHUNK:
                flush(batch, labels)
                batch, labels = [], []
        if batch:
            flush(batch, labels)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise UserError(f"{path.name}: no image could be read (every file was skipped)")
    writer.close()
    return shape, {"file": path.name, "count": int(counts.sum()), "sha256": sha256_file(path),
                   "class_counts": counts.tolist()}


def to_i420(matrix, where):
    def convert(rgb):
        if rgb.shape[1] % 2 or rgb.shape[2] % 2:
            raise UserError(f"{where}: yuv420 needs even image sizes, got {rgb.shape[1]}x{rgb.shape[2]} "
                            "(set data.image_size to an even size)")
        return rgb_to_i420(rgb, matrix)
    return convert


def pack_eval(params, color_format, out_dir):
    data, out_dir = params["data"], Path(out_dir)
    clear_outputs(out_dir, ("test.npy", "calib.npy", "train.npy"))  # train.npy: the layout before data/packed/train
    source = load_source(data)
    indices = select_indices(source, data, params["seed"])
    convert = to_i420(data["yuv_matrix"], source.path) if color_format == "yuv420" else None
    splits, shape = {}, None
    with Reader(source, data) as reader:
        for split in EVAL_SPLITS:
            origin = "train" if split == "calib" else split
            shape, splits[split] = write_raw_split(out_dir / f"{split}.npy", eval_images(reader, origin, indices[split]),
                                                   len(indices[split]), len(source.classes), convert)
    height, width = shape[:2]
    manifest = {
        "color_format": color_format,
        "layout": "HWC" if color_format == "rgb" else "I420",
        "yuv_matrix": data["yuv_matrix"] if color_format == "yuv420" else None,
        "height": int(height), "width": int(width),
        "eval_transform": ({"resize_short_side": int(data["image_size"] / data["eval_crop_fraction"]),
                            "center_crop": data["image_size"], "interpolation": "bilinear, antialiased"}
                           if data["image_size"] else None),
        **base_manifest(source),
        "source": reader.source_entry(),
        "splits": splits, **reader.skip_entry(),
        "provenance": provenance(params_hash({"seed": params["seed"], "data": {k: data[k] for k in EVAL_KEYS}})),
    }
    write_json(out_dir / MANIFEST, manifest)  # written last: a manifest present means its splits are complete
    return manifest


def pack_train(params, out_dir):
    data, out_dir = params["data"], Path(out_dir)
    clear_outputs(out_dir, (RAW_TRAIN_FILE, INDEX_FILE, "shard-*.bin"))
    source = load_source(data)
    indices = select_indices(source, data, params["seed"])["train"]
    manifest = {"split": "train", "color_format": "rgb", **base_manifest(source)}
    with Reader(source, data) as reader:
        if data["image_size"]:
            manifest.update(layout="jpeg", train_short_side=data["train_short_side"],
                            jpeg_quality=data["train_jpeg_quality"], **write_jpeg_split(reader, indices, out_dir))
        else:  # the images as they are: the evaluation transform at size 0
            shape, entry = write_raw_split(out_dir / RAW_TRAIN_FILE, eval_images(reader, "train", indices),
                                           len(indices), len(source.classes))
            entry = {**entry, "bytes": (out_dir / RAW_TRAIN_FILE).stat().st_size}
            manifest.update(layout="raw", height=int(shape[0]), width=int(shape[1]), count=entry.pop("count"),
                            class_counts=entry.pop("class_counts"), files=[entry])
    manifest.update(source=reader.source_entry(), **reader.skip_entry(),
                    provenance=provenance(params_hash({"seed": params["seed"],
                                                       "data": {k: data[k] for k in TRAIN_KEYS}})))
    write_json(out_dir / MANIFEST, manifest)  # written last
    return manifest


def write_jpeg_split(reader, indices, out_dir):
    source, data = reader.source, reader.data
    args = (data["train_short_side"], data["train_jpeg_quality"])
    writer = ShardWriter(out_dir, len(indices), int(data["shard_size_mb"] * 2 ** 20))
    counts, verbatim = np.zeros(len(source.classes), dtype=np.int64), 0
    try:
        if source.in_memory:
            from PIL import Image

            split = source.splits["train"]
            encoded = ((int(split.labels[i]), train_jpeg(None, Image.fromarray(split.images[i]), *args))
                       for i in indices)
        else:
            encoded = ((label, result) for _, label, result in reader.results("train", indices, train_jpeg, args))
        for label, (jpeg, height, width, kept) in encoded:
            writer.append(jpeg, label, height, width)
            counts[label] += 1
            verbatim += kept
        if not counts.sum():
            raise UserError(f"{source.splits['train'].where}: no image could be read (every file was skipped)")
        shards, index = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"count": int(counts.sum()), "class_counts": counts.tolist(), "files": shards, "index": index,
            "bytes": sum(s["bytes"] for s in shards), "kept_verbatim": int(verbatim)}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", required=True, choices=["train", "eval"],
                        help="train: the RGB training split; eval: one color format's test and calib splits")
    parser.add_argument("--format", choices=["rgb", "yuv420"], help="color format of the eval splits")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    if args.split == "eval" and args.format is None:
        parser.error("--split eval needs --format rgb or --format yuv420")
    params = load_params(args.params)
    if args.split == "train":
        m = pack_train(params, args.out)
        print(f"packed train ({m['layout']}) into {args.out}: {m['count']} images"
              + (f", {m['skipped']} skipped" if m["skipped"] else ""))
        return
    m = pack_eval(params, args.format, args.out)
    counts = ", ".join(f"{s} {m['splits'][s]['count']}" for s in EVAL_SPLITS)
    print(f"packed {args.format} {m['height']}x{m['width']} into {args.out}: {counts}"
          + (f", {m['skipped']} skipped" if m["skipped"] else ""))


if __name__ == "__main__":
    main()
