"""Detection pack stage: validate a YOLO-format dataset and write a deterministic train/val/calib split.

    python -m workflow.detection.pack --params params.yaml --out data/detection

Source (params.yaml `detection.data`): a folder ``path`` with ``images/<dir>/*`` and the
matching ``labels/<dir>/*.txt`` (one ``class x_center y_center width height`` line per box,
normalised to 0..1), the layout of COCO128 and of ultralytics' COCO 2017, or a .zip of such a
folder; a missing ``path`` is downloaded when ``download`` names an ultralytics dataset yaml
(workflow/detection/source.py). With ``val_dir``
empty, ``train_dir`` is split by ``val_fraction`` under ``seed``; otherwise the two folders
are the splits. The calibration split (for static quantization) is drawn from train.
With ``classes`` (names from ``names``) only those classes' boxes are kept, renumbered 0..k-1
in the listed order; images left without boxes stay as background images.

Every image is decoded and every label line checked. An undecodable image, a label line that
is not five numbers, a class id outside 0..nc-1, a coordinate outside 0..1 or a box of zero
size is an error naming the file and line (``on_bad: error``), or, with ``on_bad: skip``, the
image is left out and counted in the manifest under ``skipped``. Images without a label file
are background images (kept, counted); label files without an image are counted and ignored.

Outputs under --out: images/<split>/ and labels/<split>/ (hard links when possible, else
copies), data.yaml and calib.yaml for ultralytics, val_coco.json (the val labels as COCO
json for pycocotools; category_id = YOLO class id, bbox in pixels) and manifest.json
(written last) with counts, class names and the sha256 of every file and of each split.
"""
import argparse
import hashlib
import math
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from workflow import layout
from workflow.config import load_params, params_hash
from workflow.detection.source import dataset_folder
from workflow.errors import UserError, cli
from workflow.io import sha256_file, write_json, write_text
from workflow.provenance import provenance

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "calib")


def class_names(spec):
    """`detection.data.names`: a list, or "coco" for the 80 COCO names ultralytics ships."""
    if isinstance(spec, list):
        return [str(n) for n in spec]
    import workflow.detection.ultra  # noqa: F401
    from ultralytics.utils import ROOT

    names = yaml.safe_load((ROOT / "cfg" / "datasets" / "coco.yaml").read_text())["names"]
    return [names[i] for i in range(len(names))]


def read_labels(path, nc):
    """Boxes of one label file as float32 [n, 5] (class, xc, yc, w, h); raises ValueError with the reason."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {lineno}"
        if len(fields) != 5:
            raise ValueError(f"{where}: expected 5 numbers (class x_center y_center width height), "
                             f"got {len(fields)} fields")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise ValueError(f"{where}: not numbers: {line.strip()[:60]!r}") from None
        cls, box = values[0], values[1:]
        if not cls.is_integer() or not 0 <= cls < nc:
            raise ValueError(f"{where}: class id {fields[0]} outside 0..{nc - 1}")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in box):
            raise ValueError(f"{where}: box {' '.join(fields[1:])} has coordinates outside 0..1")
        xc, yc, w, h = box
        if w <= 0 or h <= 0 or xc - w / 2 < -1e-6 or xc + w / 2 > 1 + 1e-6 or yc - h / 2 < -1e-6 \
                or yc + h / 2 > 1 + 1e-6:
            raise ValueError(f"{where}: box {' '.join(fields[1:])} is empty or extends outside the image")
        rows.append(values)
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def image_size(path):
    """(width, height) after EXIF orientation, decoding the whole image; ValueError when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode the image ({str(err).splitlines()[0][:80]})") from None


def label_path(image, root):
    """images/<dir>/a/b.jpg -> labels/<dir>/a/b.txt (the YOLO convention)."""
    rel = image.relative_to(root / "images")
    return root / "labels" / rel.with_suffix(".txt")


def class_map(names, keep):
    """{source class id: packed class id} for `detection.data.classes`; None keeps every class."""
    if not keep:
        return None
    unknown = [c for c in keep if c not in names]
    if unknown:
        raise UserError(f"params.yaml: key 'detection.data.classes': {', '.join(map(repr, unknown))} "
                        f"not among the class names of detection.data.names")
    return {names.index(c): i for i, c in enumerate(keep)}


def keep_boxes(boxes, id_map):
    """The boxes of the kept classes, with their packed class ids."""
    if id_map is None:
        return boxes
    kept = boxes[np.isin(boxes[:, 0].astype(int), list(id_map))]
    kept[:, 0] = [id_map[int(c)] for c in kept[:, 0]]
    return kept


def scan(root, subdir, nc, on_bad, skipped, id_map=None):
    """Valid samples of one source folder: [{image, label, width, height, boxes}], sorted by path."""
    folder = root / subdir
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found (detection.data.path / train_dir / val_dir)")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    samples = []
    for image in images:
        label = label_path(image, root)
        bad = image
        try:
            width, height = image_size(image)
            bad = label
            boxes = read_labels(label, nc) if label.exists() else np.zeros((0, 5), np.float32)
            boxes = keep_boxes(boxes, id_map)  # after validation: ids are checked against the source's nc
        except ValueError as err:
            if on_bad == "error":
                raise UserError(f"{bad}: {err} (fix the file, or set detection.data.on_bad: skip)") from None
            skipped.append({"file": str(bad), "reason": str(err)})
            continue
        samples.append({"image": image, "label": label if label.exists() else None,
                        "width": width, "height": height, "boxes": boxes})
    return samples


def orphan_labels(root, subdir):
    """Label files of a source folder that have no image."""
    labels = root / "labels" / Path(subdir).relative_to("images")
    if not labels.is_dir():
        return 0
    images = {p.relative_to(root / subdir).with_suffix("") for p in (root / subdir).rglob("*")
              if p.suffix.lower() in IMAGE_SUFFIXES}
    return sum(1 for p in labels.rglob("*.txt") if p.relative_to(labels).with_suffix("") not in images)


def select(data, root, seed, nc, skipped, id_map=None):
    """{split: samples} of the dataset folder ``root``: deterministic under seed; calib drawn from train."""
    rng = np.random.default_rng(seed)
    train = scan(root, data["train_dir"], nc, data["on_bad"], skipped, id_map)
    if data["val_dir"]:
        val = scan(root, data["val_dir"], nc, data["on_bad"], skipped, id_map)
    else:
        order = rng.permutation(len(train))
        n_val = int(round(data["val_fraction"] * len(train)))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    splits = {}
    for split, samples, size in (("train", train, data["train_subset"]), ("val", val, data["val_subset"])):
        if size > len(samples):
            raise UserError(f"params.yaml: key 'detection.data.{split}_subset': got {size}, but the {split} split "
                            f"has only {len(samples)} valid images")
        if size:
            samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:size])]
        if not samples:
            source = data["val_dir"] or f"{data['train_dir']} (val_fraction {data['val_fraction']})"
            raise UserError(f"{root / (data['train_dir'] if split == 'train' else source)}: the {split} split "
                            f"is empty (no valid images)")
        splits[split] = samples
    n_calib = data["calib_subset"]
    if n_calib > len(splits["train"]):
        raise UserError(f"params.yaml: key 'detection.data.calib_subset': got {n_calib}, but the train split has "
                        f"only {len(splits['train'])} images")
    splits["calib"] = [splits["train"][i] for i in sorted(rng.permutation(len(splits["train"]))[:n_calib])]
    return splits


def place(src, dst):
    """Hard link (no copy of a large dataset) or copy when links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def coco_json(samples, names, image_dir):
    """The val labels as a COCO detection json (pycocotools' ground truth)."""
    images, annotations = [], []
    for image_id, s in enumerate(samples, 1):
        w, h = s["width"], s["height"]
        images.append({"id": image_id, "file_name": f"{image_dir}/{s['name']}", "width": w, "height": h})
        for cls, xc, yc, bw, bh in s["boxes"].tolist():
            box = [(xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                "bbox": [round(v, 3) for v in box], "area": round(box[2] * box[3], 3),
                                "iscrowd": 0})
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    return {"info": {"description": "val split written by workflow.detection.pack"},
            "images": images, "annotations": annotations, "categories": categories}


def split_digest(files):
    digest = hashlib.sha256()
    for entry in files:
        digest.update(f"{entry['image']}:{entry['image_sha256']}:{entry['label_sha256']}\n".encode())
    return digest.hexdigest()


def pack(params, out_dir):
    data = params["detection"]["data"]
    source_names = class_names(data["names"])
    id_map = class_map(source_names, data.get("classes"))
    names = [source_names[i] for i in id_map] if id_map else source_names
    out = Path(out_dir)
    with dataset_folder(data, out.parent) as root:
        manifest = pack_folder(params, root, out, names, len(source_names), id_map)
    manifest["provenance"] = provenance(params_hash({"seed": params["seed"], "data": data}), ("pillow",))
    write_json(out / "manifest.json", manifest)
    return manifest


def pack_folder(params, root, out, names, source_nc, id_map):
    """Split the dataset folder ``root`` into ``out``; the manifest (without provenance) is returned, not written."""
    data = params["detection"]["data"]
    skipped = []
    splits = select(data, root, params["seed"], source_nc, skipped, id_map)
    if (out / "manifest.json").exists():
        (out / "manifest.json").unlink()  # an interrupted rerun must not look complete
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)
    nc = len(names)
    manifest = {"task": "detection", "nc": nc, "names": names,
                "source": {"path": data["path"], "train_dir": data["train_dir"], "val_dir": data["val_dir"],
                           "val_fraction": data["val_fraction"], "classes": names if id_map else "all",
                           "orphan_labels": orphan_labels(root, data["train_dir"])
                           + (orphan_labels(root, data["val_dir"]) if data["val_dir"] else 0)},
                "skipped": skipped, "splits": {}}
    for split, samples in splits.items():
        files = []
        for s in samples:
            # unique flat names: the source's relative path with "/" -> "__"
            s["name"] = "__".join(s["image"].relative_to(root / "images").parts)
            image_dst = out / "images" / split / s["name"]
            label_dst = (out / "labels" / split / s["name"]).with_suffix(".txt")
            place(s["image"], image_dst)
            lines = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in s["boxes"].tolist())
            label_dst.parent.mkdir(parents=True, exist_ok=True)
            label_dst.write_text(lines)  # plain write: manifest.json, written last, marks the set complete
            files.append({"image": s["name"], "image_sha256": sha256_file(image_dst),
                          "label_sha256": sha256_file(label_dst), "boxes": len(s["boxes"])})
        manifest["splits"][split] = {
            "images": len(files), "boxes": sum(f["boxes"] for f in files),
            "background_images": sum(1 for s in samples if s["label"] is None or not len(s["boxes"])),
            "sha256": split_digest(files), "files": files}
    base = {"path": str(out.resolve()), "names": dict(enumerate(names))}
    write_text(out / "data.yaml", yaml.safe_dump({**base, "train": "images/train", "val": "images/val"},
                                                 sort_keys=False))
    # calib.yaml: ultralytics' int8 exporter calibrates on the "val" entry; point it at the calib split
    write_text(out / "calib.yaml", yaml.safe_dump({**base, "train": "images/calib", "val": "images/calib"},
                                                  sort_keys=False))
    write_json(out / "val_coco.json", coco_json(splits["val"], names, "images/val"))
    manifest["val_coco_sha256"] = sha256_file(out / "val_coco.json")
    return manifest


def verify_split(data_dir, split):
    """The manifest of a packed detection set, after checking every file of ``split`` against it."""
    from workflow.io import read_json

    data_dir = Path(data_dir)
    manifest = read_json(data_dir / "manifest.json")
    for entry in manifest["splits"][split]["files"]:
        image = data_dir / "images" / split / entry["image"]
        label = (data_dir / "labels" / split / entry["image"]).with_suffix(".txt")
        for path, expected in ((image, entry["image_sha256"]), (label, entry["label_sha256"])):
            if not path.exists() or sha256_file(path) != expected:
                raise UserError(f"{path}: missing or changed since packing (checksum mismatch; rerun "
                                f"python -m workflow.detection.pack)")
    return manifest


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=layout.DET_DATA)
    args = parser.parse_args(argv)
    manifest = pack(load_params(args.params), args.out)
    counts = ", ".join(f"{k} {v['images']} images / {v['boxes']} boxes" for k, v in manifest["splits"].items())
    print(f"packed {counts}; skipped {len(manifest['skipped'])}; wrote {args.out}/manifest.json")


if __name__ == "__main__":
    main()
