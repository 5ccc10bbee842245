"""Dataset sources (params.yaml ``data.source``): the train and evaluation images and their labels.

| source        | ``data.path``                                   | images                          |
|---------------|-------------------------------------------------|---------------------------------|
| ``cifar10``   | folder for torchvision's CIFAR10 (download)     | in memory, 32x32                |
| ``cifar100``  | folder for torchvision's CIFAR100 (download)    | in memory, 32x32, fine labels   |
| ``npz``       | an array file                                   | in memory, any fixed size       |
| ``imagefolder`` | ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``) | files, any size, decoded on demand |
| ``imagenet``  | torchvision ``ImageNet`` root (the ILSVRC-2012 archives, or what torchvision extracted from them) | files |

Folder sources follow torchvision's ``ImageFolder``: classes are the sorted sub-folders of
``train/``, files with one of its image extensions (``IMG_EXTENSIONS``) are images, files
in nested folders count for their class; hidden files and folders (a leading dot, such as
``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``) are ignored, and other files are counted
as ``ignored_files``. Every source's labels are validated: integers, ``0 <= label <
classes``, ``label_names`` one unique non-empty name per class.
"""
import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow.errors import UserError

CIFAR = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}  # data.source -> torchvision dataset class
EVAL_FOLDERS = ("val", "test")  # the evaluation split of a folder source: val/ (torchvision) or test/
NPZ_KEYS = (("train_data", "train_labels", "test_data", "test_labels"),
            ("x_train", "y_train", "x_test", "y_test"))


@dataclass
class Split:
    """One split of a source: labels, and either decoded images (array sources) or image files."""

    labels: np.ndarray            # int64, validated
    images: np.ndarray = None     # (N, H, W, 3) uint8, array sources
    files: list = None            # paths, folder sources
    where: str = ""               # the file or folder the split comes from (for messages)

    def __len__(self):
        return len(self.labels)


@dataclass
class Source:
    kind: str
    path: str
    classes: list
    splits: dict                  # "train", "test" -> Split
    sha256: str = None            # array sources: the archive's; folder sources: None (the pack stage digests what it reads)
    ignored_files: int = 0        # non-image files in the folders
    root: Path = None             # folder sources: file names in manifests are relative to it
    class_names: list = None      # imagenet: a readable name per class (the classes are WordNet ids)

    @property
    def in_memory(self):
        return self.splits["train"].images is not None


def load_source(data):
    """The configured source, labels validated; folder sources are listed, not decoded."""
    kind, path = data["source"], Path(data["path"])
    if kind in CIFAR:
        if path.suffix == ".npz":  # offline: the dataset's images in an array file
            return _load_cifar_npz(kind, path)
        return _load_cifar(kind, path, data["download"])
    if kind == "npz":
        return _load_npz(path)
    if kind == "imagenet":
        return _load_imagenet(path)
    return _load_imagefolder(path)


def missing_source(data):
    """Why data.path names no source this machine has (or can download), else None."""
    path, kind = Path(data["path"]), data["source"]
    if kind == "npz" or path.suffix == ".npz":
        return None if path.is_file() else f"{path} is not a file (expected an .npz array file)"
    if kind in ("imagefolder", "imagenet"):
        return None if path.is_dir() else f"{path} is not a folder (expected train/<class>/ and val/<class>/)"
    if data["download"]:
        return None
    import torchvision

    dataset = getattr(torchvision.datasets, CIFAR[kind])
    if not ((path / dataset.filename).is_file() or (path / dataset.base_folder).is_dir()):
        return (f"{path} holds no {dataset.filename} and data.download is false "
                f"(or give an .npz of {CIFAR[kind]} images)")
    return None


# ----------------------------------------------------------------------------- labels
def check_labels(labels, num_classes, where, split):
    """int64 labels, or one line naming the file, the split, the first bad index and its value."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:  # Keras-style (N, 1) column
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UserError(f"{where}: {split} labels have shape {labels.shape}, expected one label per image")
    if labels.dtype.kind not in "iu":
        raise UserError(f"{where}: {split} labels have dtype {labels.dtype}, expected integers")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{where}: {split} label at index {i} is {labels[i]}, expected 0..{num_classes - 1} "
                        f"({num_classes} classes)")
    return labels.astype(np.int64)


def check_label_names(names, where):
    names = np.asarray(names)
    if names.ndim != 1 or names.dtype.kind not in "US" or not len(names):
        raise UserError(f"{where}: label_names must be a non-empty 1-D array of strings, got "
                        f"dtype {names.dtype} shape {names.shape}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if any(not n.strip() for n in names):
        raise UserError(f"{where}: label_names has an empty name at index {[n.strip() for n in names].index('')}")
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise UserError(f"{where}: label_names has {duplicate!r} twice; every class needs its own name")
    return names


# ----------------------------------------------------------------------------- array sources
def _load_cifar(kind, root, download):
    import torchvision
    from torchvision.datasets.utils import check_integrity, extract_archive

    dataset = getattr(torchvision.datasets, CIFAR[kind])
    archive, md5 = root / dataset.filename, dataset.tgz_md5
    if not download and not archive.exists() and not (root / dataset.base_folder).is_dir():
        raise UserError(f"{archive}: {CIFAR[kind]} archive not found; place {dataset.filename} there "
                        "or set data.download: true")
    splits = {}
    try:
        if archive.exists() and not (root / dataset.base_folder).is_dir():  # offline: the official archive
            if not check_integrity(str(archive), md5):
                raise RuntimeError(f"md5 differs from the official {dataset.filename}'s")
            extract_archive(str(archive), str(root))
        for split, train in (("train", True), ("test", False)):
            ds = dataset(root=str(root), train=train, download=download)
            splits[split] = (np.asarray(ds.data, dtype=np.uint8), ds.targets)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, tarfile.TarError) as err:
        raise UserError(f"{archive}: {CIFAR[kind]} is missing or corrupt ({str(err).splitlines()[0]}); place the "
                        f"official {dataset.filename} (md5 {md5}) there, or use data.source: npz with a local "
                        "array file") from None
    classes = check_label_names(ds.classes, archive)
    digest = _sha256_file(archive) if archive.exists() else _sha256_tree(root / dataset.base_folder)
    return Source(kind, str(root), classes, {
        split: Split(check_labels(labels, len(classes), archive, split), images=images, where=str(archive))
        for split, (images, labels) in splits.items()}, sha256=digest)


CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


def _load_cifar_npz(kind, path):
    """CIFAR images in an array file (offline, e.g. the repository's tests/data subset): 32x32 RGB."""
    source = _load_npz(path)
    shape = source.splits["train"].images.shape[1:]
    if shape != (32, 32, 3) or len(source.classes) > CIFAR_CLASSES[kind]:
        raise UserError(f"{path}: not {kind.replace('cifar', 'CIFAR-')} images (expected 32x32 RGB with at most {CIFAR_CLASSES[kind]} "
                        f"classes, got {'x'.join(map(str, shape))} with {len(source.classes)}); use data.source: npz "
                        "for other arrays")
    source.kind = kind
    return source


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
        arrays = {}
        for split, (xk, yk) in (("train", keys[:2]), ("test", keys[2:])):
            images, labels = _to_hwc(archive[xk], path, xk), np.asarray(archive[yk])
            if len(images) != len(labels):
                raise UserError(f"{path}: '{xk}' has {len(images)} images but '{yk}' has {len(labels)} labels")
            arrays[split] = (images, labels)
        label_names = archive["label_names"] if "label_names" in names else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # zip member truncated or corrupt
        raise UserError(f"{path}: corrupt array file ({err})") from None
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise UserError(f"{path}: train and test images differ in size")
    if label_names is not None:
        classes = check_label_names(label_names, path)
    else:  # classes 0..max label, once every label is known to be a non-negative integer
        top = max(int(check_labels(y, np.iinfo(np.int64).max, path, s).max(initial=-1))
                  for s, (_, y) in arrays.items())
        classes = [str(i) for i in range(top + 1)]
    return Source("npz", str(path), classes, {
        split: Split(check_labels(labels, len(classes), path, split), images=images, where=str(path))
        for split, (images, labels) in arrays.items()}, sha256=_sha256_file(path))


# ----------------------------------------------------------------------------- folder sources
def hidden(relative):
    """A file or folder (path relative to the split folder) with a leading dot in any part."""
    return any(part.startswith(".") for part in Path(relative).parts)


def list_image_folder(folder, classes=None):
    """torchvision ImageFolder's listing of ``folder``, hidden files ignored: (files, labels, classes, ignored)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    if classes is None:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise UserError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
    ignored = 0

    def is_image(path):
        nonlocal ignored
        if hidden(os.path.relpath(path, folder)):
            return False
        if not path.lower().endswith(IMG_EXTENSIONS):
            ignored += 1
            return False
        return True

    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, is_valid_file=is_image,
                           allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    if (counts == 0).any():
        empty = folder / classes[int(np.flatnonzero(counts == 0)[0])]
        if not empty.is_dir():
            raise UserError(f"{empty}: class folder missing (every class of the training folder needs one)")
        raise UserError(f"{empty}: empty class folder (no files ending in {', '.join(IMG_EXTENSIONS)})")
    return [Path(p) for p, _ in samples], np.array([label for _, label in samples], dtype=np.int64), classes, ignored


def _eval_folder(root):
    found = [root / name for name in EVAL_FOLDERS if (root / name).is_dir()]
    if len(found) != 1:
        raise UserError(f"{root}: expected exactly one evaluation folder, val/ or test/, beside train/ "
                        f"(found {', '.join(p.name + '/' for p in found) or 'neither'})")
    return found[0]


def _load_imagefolder(root):
    if not (root / "train").is_dir():
        raise UserError(f"{root / 'train'}: folder not found; data.source imagefolder expects "
                        f"{root}/train/<class>/<images> and {root}/val/<class>/<images> (or test/)")
    return _folder_source("imagefolder", root, root / "train", _eval_folder(root))


def _load_imagenet(root):
    """torchvision's ImageNet layout: it extracts the ILSVRC-2012 archives into train/ and val/ on first use."""
    from torchvision.datasets.imagenet import (META_FILE, load_meta_file, parse_devkit_archive, parse_train_archive,
                                               parse_val_archive)
    from torchvision.datasets.utils import check_integrity

    if not root.is_dir():
        raise UserError(f"{root}: folder not found; data.source imagenet expects the ILSVRC-2012 archives "
                        "(ILSVRC2012_devkit_t12.tar.gz, ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar) there")
    try:  # what torchvision.datasets.ImageNet.parse_archives does, without listing the images a second time
        if not check_integrity(str(root / META_FILE)):
            parse_devkit_archive(str(root))
        for split, parse in (("train", parse_train_archive), ("val", parse_val_archive)):
            if not (root / split).is_dir():
                parse(str(root))
        wnid_to_names = load_meta_file(str(root))[0]
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        raise UserError(f"{root}: ImageNet archives missing or corrupt ({str(err).splitlines()[0]})") from None
    source = _folder_source("imagenet", root, root / "train", root / "val")
    source.class_names = [wnid_to_names.get(wnid, (wnid,))[0] for wnid in source.classes]
    return source


def _folder_source(kind, root, train_dir, eval_dir):
    train_files, train_labels, classes, ignored = list_image_folder(train_dir)
    eval_files, eval_labels, _, eval_ignored = list_image_folder(eval_dir, classes)
    extra_eval = sorted(e.name for e in os.scandir(eval_dir) if e.is_dir() and not e.name.startswith(".")
                        and e.name not in classes)
    if extra_eval:
        raise UserError(f"{eval_dir / extra_eval[0]}: class folder not in {train_dir} (the classes are the "
                        "training folder's)")
    splits = {"train": Split(check_labels(train_labels, len(classes), train_dir, "train"), files=train_files,
                             where=str(train_dir)),
              "test": Split(check_labels(eval_labels, len(classes), eval_dir, "test"), files=eval_files,
                            where=str(eval_dir))}
    return Source(kind, str(root), classes, splits, ignored_files=ignored + eval_ignored, root=Path(root))


# ----------------------------------------------------------------------------- checksums
def _sha256_file(path):
    from workflow.io import sha256_file

    return sha256_file(path)


def _sha256_tree(root):
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(_sha256_file(file).encode())
    return digest.hexdigest()
