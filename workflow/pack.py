"""Pack stage: read the configured dataset source and write packed train/test/calib splits.

    python -m workflow.pack --params params.yaml --format rgb --out data/packed/rgb

The same source images give both color formats: ``rgb`` (HWC) and ``yuv420``
(I420, conversion matrix ``data.yuv_matrix``). Subsets are drawn with ``seed``.
"""
import argparse
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.colorspace import rgb_to_i420
from workflow.config import load_params, params_hash
from workflow.datasets import load_source, write_packed
from workflow.errors import UserError, cli
from workflow.io import sha256_file, write_json
from workflow.provenance import provenance

SPLITS = ("train", "test", "calib")


def select_subsets(splits, data, seed):
    """Deterministic subsets: train/test draws, and a calibration set from the train pool."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, size in (("train", data["train_subset"]), ("test", data["test_subset"])):
        images, labels = splits[split]
        if size > len(images):
            raise UserError(f"params.yaml: key 'data.{split}_subset': got {size}, but the {split} split has "
                            f"only {len(images)} images")
        idx = np.sort(rng.permutation(len(images))[:size]) if size else np.arange(len(images))
        out[split] = (images[idx], labels[idx])
    train_images, train_labels = out["train"]
    if data["calib_subset"] > len(train_images):
        raise UserError(f"params.yaml: key 'data.calib_subset': got {data['calib_subset']}, but the train "
                        f"split has only {len(train_images)} images")
    idx = np.sort(rng.permutation(len(train_images))[:data["calib_subset"]])
    out["calib"] = (train_images[idx], train_labels[idx])
    return out


def pack(params, color_format, out_dir):
    data = params["data"]
    splits, classes, source_sha = load_source(data)
    subsets = select_subsets(splits, data, params["seed"])
    height, width = subsets["train"][0].shape[1:3]
    if color_format == "yuv420" and (height % 2 or width % 2):
        raise UserError(f"{data['path']}: yuv420 needs even image sizes, got {height}x{width}")
    out_dir = Path(out_dir)
    manifest = {
        "color_format": color_format,
        "layout": "HWC" if color_format == "rgb" else "I420",
        "yuv_matrix": data["yuv_matrix"] if color_format == "yuv420" else None,
        "height": int(height), "width": int(width),
        "classes": classes,
        "source": {"kind": data["source"], "path": data["path"], "sha256": source_sha},
        "splits": {},
    }
    for split in SPLITS:
        images, labels = subsets[split]
        if color_format == "yuv420":
            images = rgb_to_i420(images, data["yuv_matrix"])
        path = Path(layout.split_file(out_dir, split))
        write_packed(path, images, labels)
        manifest["splits"][split] = {
            "file": path.name, "count": int(len(labels)), "sha256": sha256_file(path),
            "class_counts": np.bincount(labels, minlength=len(classes)).tolist(),
        }
    manifest["provenance"] = provenance(params_hash({"seed": params["seed"], "data": data}))
    # Written last: a manifest present means every split beside it is complete.
    write_json(layout.manifest_file(out_dir), manifest)
    return manifest


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--format", required=True, choices=["rgb", "yuv420"])
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    manifest = pack(params, args.format, args.out)
    counts = ", ".join(f"{s} {manifest['splits'][s]['count']}" for s in SPLITS)
    print(f"packed {args.format} {manifest['height']}x{manifest['width']} into {args.out}: {counts}")


if __name__ == "__main__":
    main()
