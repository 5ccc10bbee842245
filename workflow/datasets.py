"""Dataset sources, the packed on-disk format, and model input tensors.

Packed format: one ``.npy`` file per split and color format, holding a structured
array with fields ``image`` (uint8) and ``label`` (int16). It is memory-mapped with
plain numpy, needs no extra library on a board, and reads at memory speed once in
the page cache (bench/loader.py measures it against ImageFolder and in-memory
tensors). Image layouts: ``rgb`` is HWC; ``yuv420`` is one I420 buffer of H*W*3/2
bytes per image (Y plane, then U, then V).
"""
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from workflow.colorspace import split_i420
from workflow.errors import UserError

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_NAMES = {"rgb": ("image",), "yuv420": ("y", "uv")}


# ----------------------------------------------------------------------------- sources
def load_source(data):
    """Return {"train": (images HWC uint8, labels), "test": (...)}, class names and the source sha256."""
    kind, path = data["source"], Path(data["path"])
    if kind == "cifar10":
        return _load_cifar10_npz(path) if path.suffix == ".npz" else _load_cifar10(path, data["download"])
    if kind == "npz":
        return _load_npz(path)
    return _load_imagefolder(path)


def missing_source(data):
    """Why data.path names no source this machine has (or can download), else None."""
    path = Path(data["path"])
    if data["source"] == "npz" or path.suffix == ".npz":
        return None if path.is_file() else f"{path} is not a file (expected an .npz array file)"
    if data["source"] == "imagefolder":
        return None if path.is_dir() else f"{path} is not a folder (expected train/<class>/ and test/<class>/)"
    if not (data["download"] or (path / CIFAR10_ARCHIVE).is_file() or (path / "cifar-10-batches-py").is_dir()):
        return f"{path} holds no {CIFAR10_ARCHIVE} and data.download is false (or give an .npz of CIFAR-10 images)"
    return None


def _load_cifar10(root, download):
    import torchvision

    archive = root / CIFAR10_ARCHIVE
    if not download and not archive.exists() and not (root / "cifar-10-batches-py").is_dir():
        raise UserError(f"{archive}: CIFAR-10 archive not found; place {CIFAR10_ARCHIVE} there, set "
                        "data.download: true, or point data.path at an .npz of CIFAR-10 images")
    splits = {}
    try:
        for split, train in (("train", True), ("test", False)):
            ds = torchvision.datasets.CIFAR10(root=str(root), train=train, download=download)
            splits[split] = (np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int16))
    except (OSError, RuntimeError) as err:  # offline downloads end here too (URLError is an OSError)
        raise UserError(f"{archive}: CIFAR-10 is missing or corrupt ({str(err).splitlines()[0]}); place the "
                        f"official {CIFAR10_ARCHIVE} (md5 c58f30108f718f92721af3b95e74349a) there, or point "
                        "data.path at an .npz of CIFAR-10 images (offline: -S data.path=<file.npz>)") from None
    source_file = archive if archive.exists() else None
    digest = _sha256_file(source_file) if source_file else _sha256_tree(root / "cifar-10-batches-py")
    return splits, list(ds.classes), digest


def _load_cifar10_npz(path):
    """CIFAR-10 images in an array file (offline, e.g. the repository's tests/data subset): 32x32 RGB, 10 classes."""
    splits, classes, digest = _load_npz(path)
    labels = np.concatenate([splits["train"][1], splits["test"][1]])
    if splits["train"][0].shape[1:] != (32, 32, 3) or labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
        shape = "x".join(map(str, splits["train"][0].shape[1:]))
        raise UserError(f"{path}: not CIFAR-10 images (expected 32x32 RGB with labels 0..9, got {shape} with labels "
                        f"{labels.min()}..{labels.max()}); use data.source: npz for other arrays")
    return splits, list(CIFAR10_CLASSES), digest


NPZ_KEYS = (("train_data", "train_labels", "test_data", "test_labels"),
            ("x_train", "y_train", "x_test", "y_test"))


def _to_hwc(images, path, key):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"{path}: array '{key}' has dtype {images.dtype}, expected uint8 images")
    if images.ndim == 2:  # CIFAR rows: 1024 R, 1024 G, 1024 B values per image
        side = int(round((images.shape[1] / 3) ** 0.5))
        if 3 * side * side != images.shape[1]:
            raise UserError(f"{path}: array '{key}' has rows of {images.shape[1]} values, expected 3*H*W "
                            "(CIFAR row layout) for square images")
        return images.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] == 3:
        return images
    raise UserError(f"{path}: array '{key}' has shape {images.shape}, expected (N, 3*H*W) CIFAR rows "
                    "or (N, H, W, 3) HWC")


def _load_npz(path):
    if not path.is_file():
        raise UserError(f"{path}: array file not found; set data.path to an .npz with "
                        "train_data/train_labels/test_data/test_labels (or x_train/y_train/x_test/y_test)")
    try:
        archive = np.load(path, allow_pickle=False)
        names = set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz array file ({err})") from None
    keys = next((k for k in NPZ_KEYS if set(k) <= names), None)
    if keys is None:
        raise UserError(f"{path}: expected arrays {', '.join(NPZ_KEYS[0])} (or {', '.join(NPZ_KEYS[1])}), "
                        f"found {', '.join(sorted(names))}")
    try:
        splits = {}
        for split, (xk, yk) in (("train", keys[:2]), ("test", keys[2:])):
            images, labels = _to_hwc(archive[xk], path, xk), np.asarray(archive[yk]).reshape(-1)
            if len(images) != len(labels):
                raise UserError(f"{path}: '{xk}' has {len(images)} images but '{yk}' has {len(labels)} labels")
            splits[split] = (images, labels.astype(np.int16))
        num_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
        classes = ([str(c) for c in archive["label_names"]] if "label_names" in names
                   else [str(i) for i in range(num_classes)])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # zip member truncated or corrupt
        raise UserError(f"{path}: corrupt array file ({err})") from None
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise UserError(f"{path}: train and test images differ in size")
    return splits, classes, _sha256_file(path)


def _load_imagefolder(root):
    from PIL import Image

    splits, classes = {}, None
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise UserError(f"{folder}: folder not found; data.source imagefolder expects "
                            f"{root}/train/<class>/*.png and {root}/test/<class>/*.png")
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if classes is None:
            classes = names
        elif names != classes:
            raise UserError(f"{folder}: class folders differ from those in {root / 'train'}")
        images, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((folder / name).iterdir()):
                try:
                    with Image.open(file) as im:
                        images.append(np.asarray(im.convert("RGB")))
                except OSError:
                    raise UserError(f"{file}: cannot decode image") from None
                if images[-1].shape != images[0].shape:
                    raise UserError(f"{file}: image size {images[-1].shape[:2]} differs from "
                                    f"{images[0].shape[:2]} (resize the folder first)")
                labels.append(label)
        if not images:
            raise UserError(f"{folder}: no images found")
        splits[split] = (np.stack(images), np.asarray(labels, dtype=np.int16))
    return splits, classes, _sha256_tree(root)


def _sha256_file(path):
    from workflow.io import sha256_file

    return sha256_file(path)


def _sha256_tree(root):
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(_sha256_file(file).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- packed files
def packed_dtype(image_shape):
    return np.dtype([("image", np.uint8, tuple(image_shape)), ("label", np.int16)])


def write_packed(path, images, labels):
    """Write a packed split atomically (temporary file, fsync, rename)."""
    from workflow.io import atomic_path

    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=packed_dtype(images.shape[1:]),
                                        shape=(len(images),))
        arr["image"] = images
        arr["label"] = labels
        arr.flush()
        del arr


def open_packed(path):
    """Memory-map a packed split; a missing or corrupt file is a UserError naming it."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: packed dataset not found (run the pack stage)") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: corrupt packed dataset ({err}); delete it and rerun the pack stage") from None
    if arr.dtype.names != ("image", "label") or arr.ndim != 1:
        raise UserError(f"{path}: not a packed dataset (expected a 1-D array with fields image, label)")
    return arr


def load_packed(path, manifest=None, split=None):
    """Read a packed split into memory as (images, labels); verify its sha256 against the manifest."""
    if manifest is not None:
        from workflow.io import sha256_file

        expected = manifest["splits"][split]["sha256"]
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise UserError(f"{path}: packed dataset not found (run the pack stage)") from None
        if actual != expected:
            raise UserError(f"{path}: checksum mismatch with its manifest (corrupt or modified); "
                            "delete it and rerun the pack stage")
    arr = open_packed(path)
    return np.ascontiguousarray(arr["image"]), np.asarray(arr["label"], dtype=np.int64)


# ----------------------------------------------------------------------------- model inputs
def to_model_inputs(images, input_format, height, width):
    """Packed uint8 images -> the model's float32 inputs (pixel values 0..255, NCHW planes).

    Normalisation happens inside the model, so a board feeds raw pixels (and an
    integer model can take uint8 directly).
    """
    if input_format == "rgb":
        return {"image": np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)}
    y, uv = split_i420(images, height, width)
    return {"y": np.ascontiguousarray(y, dtype=np.float32), "uv": np.ascontiguousarray(uv, dtype=np.float32)}
