"""The packed on-disk format, readable with numpy (+ any JPEG decoder for the training shards).

Evaluation splits (``test.npy``, ``calib.npy`` of each color format) are one ``.npy`` file each:
a structured array with fields ``image`` (uint8, the model's input size) and ``label``
(int32), memory-mapped by plain numpy, so a board reads it with numpy alone. Layouts:
``rgb`` is HWC; ``yuv420`` is one I420 buffer of H*W*3/2 bytes (Y, then U, then V).

The training split (``data/packed/train/``, RGB, shared by every input format) has one of
two layouts, named in its manifest:

* ``raw``: ``images.npy``, the structured array above (fixed-size sources such as CIFAR kept
  at their own size: reading is a memory copy, bench/loader.py);
* ``jpeg``: encoded images of any size in ``shard-NNNNN.bin`` files (JPEG files back to back)
  and ``index.npy``, a structured array of (shard, offset, size, label, height, width) per
  image: random access for parallel loaders, one sha256 per shard in the manifest.
"""
import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from workflow.colorspace import split_i420
from workflow.errors import UserError

INPUT_NAMES = {"rgb": ("image",), "yuv420": ("y", "uv")}
LABEL_DTYPE = np.dtype("<i4")
INDEX_DTYPE = np.dtype([("shard", "<u4"), ("offset", "<u8"), ("size", "<u4"), ("label", "<i4"),
                        ("height", "<u2"), ("width", "<u2")])
RAW_TRAIN_FILE, INDEX_FILE, MANIFEST = "images.npy", "index.npy", "manifest.json"


def shard_name(number):
    return f"shard-{number:05d}.bin"


# ----------------------------------------------------------------------------- raw splits (.npy)
def packed_dtype(image_shape):
    return np.dtype([("image", np.uint8, tuple(image_shape)), ("label", LABEL_DTYPE)])


def _atomic_rename(tmp, path):
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _temporary(path):
    return path.with_name(f".{path.name}.tmp")


class PackedWriter:
    """Streams rows into a packed ``.npy`` (or an index) of at most ``capacity`` rows; ``close()``
    shortens it to the rows written (images skipped as bad) and renames it into place.

    Each append maps the file only for its own rows: the pages written leave this process (they
    stay in the page cache), so its memory does not grow with the split (bench/pack_memory.py)."""

    def __init__(self, path, capacity, dtype):
        self.path, self.dtype, self.count, self.capacity = Path(path), np.dtype(dtype), 0, capacity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temporary(self.path)
        # writes the header and sizes the file (sparse); the map is dropped at once
        np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype, shape=(capacity,))

    def append(self, rows):
        array = np.load(self.tmp, mmap_mode="r+")
        array[self.count:self.count + len(rows)] = rows
        array.flush()
        del array
        self.count += len(rows)

    def close(self):
        if self.count < self.capacity:  # a file of the final length: the new header, then the rows' bytes
            short = _temporary(self.path.with_name("short-" + self.path.name))
            np.lib.format.open_memmap(short, mode="w+", dtype=self.dtype, shape=(self.count,))
            with open(self.tmp, "rb") as src, open(short, "r+b") as dst:
                src.seek(np.load(self.tmp, mmap_mode="r").offset)
                dst.seek(np.load(short, mmap_mode="r").offset)
                remaining = self.count * self.dtype.itemsize
                while remaining:
                    block = src.read(min(remaining, 1 << 24))
                    dst.write(block)
                    remaining -= len(block)
            os.replace(short, self.tmp)
        _atomic_rename(self.tmp, self.path)
        return self.path

    def abort(self):
        Path(self.tmp).unlink(missing_ok=True)


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


def verified_cache():
    """Where verify_file keeps its stamps: $XDG_CACHE_HOME (default ~/.cache)/edge-vision-repro/verified."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-vision-repro" / "verified"


def verify_file(path, expected_sha256, size=None):
    """A packed file against its manifest entry: one line naming it when missing or changed.

    Hashing every shard at every training start costs minutes at ImageNet scale (and each DDP process would
    do it), so a file whose sha256 was verified once gets a stamp (its path, size, mtime and inode, as DVC's
    own state keeps them) in the user's cache (VERIFIED_CACHE); while those are unchanged the hash is not
    recomputed."""
    from workflow.io import sha256_file, write_text

    path = Path(path)
    try:
        stat = path.stat()
        if size is not None and stat.st_size != size:
            raise UserError(f"{path}: {stat.st_size} bytes, its manifest says {size} (truncated or modified); "
                            "delete it and rerun the pack stage")
        seen = f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}"
        stamp = verified_cache() / f"{expected_sha256}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
        if stamp.is_file() and stamp.read_text() == seen:
            return
        actual = sha256_file(path)
    except FileNotFoundError:
        raise UserError(f"{path}: packed dataset not found (run the pack stage)") from None
    if actual != expected_sha256:
        raise UserError(f"{path}: checksum mismatch with its manifest (corrupt or modified); "
                        "delete it and rerun the pack stage")
    with contextlib.suppress(OSError):  # without a writable cache, the file is verified every time instead
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_text(stamp, seen)


def load_packed(path, manifest=None, split=None):
    """A packed split as memory-mapped (images, labels int64); its sha256 verified against the manifest.

    Nothing is read into memory but the labels: slice ``images`` for what is needed."""
    if manifest is not None:
        verify_file(path, manifest["splits"][split]["sha256"])
    arr = open_packed(path)
    return arr["image"], np.asarray(arr["label"], dtype=np.int64)


# ----------------------------------------------------------------------------- the training split
class ShardWriter:
    """Appends encoded images to ``shard-NNNNN.bin`` files of about ``shard_bytes`` each and their
    (shard, offset, size, label, height, width) rows to ``index.npy``; sha256 computed on the way."""

    def __init__(self, folder, capacity, shard_bytes):
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.index = PackedWriter(self.folder / INDEX_FILE, capacity, INDEX_DTYPE)
        self.shards, self.file, self.digest, self.offset, self.images = [], None, None, 0, 0

    def append(self, data, label, height, width):
        if self.file is None or (self.offset and self.offset + len(data) > self.shard_bytes):
            self._close_shard()
            self.file = open(_temporary(self.folder / shard_name(len(self.shards))), "wb")
            self.digest, self.offset, self.images = hashlib.sha256(), 0, 0
            self.shards.append(None)
        self.file.write(data)
        self.digest.update(data)
        row = np.array([(len(self.shards) - 1, self.offset, len(data), label, height, width)], dtype=INDEX_DTYPE)
        self.index.append(row)
        self.offset += len(data)
        self.images += 1

    def _close_shard(self):
        if self.file is None:
            return
        self.file.close()
        path = self.folder / shard_name(len(self.shards) - 1)
        _atomic_rename(self.file.name, path)
        self.shards[-1] = {"file": path.name, "bytes": self.offset, "images": self.images,
                           "sha256": self.digest.hexdigest()}
        self.file = None

    def close(self):
        """The shards' and the index's manifest entries."""
        from workflow.io import sha256_file

        self._close_shard()
        index = self.index.close()
        return self.shards, {"file": index.name, "bytes": index.stat().st_size, "sha256": sha256_file(index)}

    def abort(self):
        if self.file is not None:
            self.file.close()
            Path(self.file.name).unlink(missing_ok=True)
        self.index.abort()


class JpegShards:
    """Random access to the encoded training images: ``read(i)`` gives image i's bytes (numpy + os only),
    ``image(i)`` decodes it with PIL. File handles are opened lazily, per process (loader workers)."""

    def __init__(self, folder, manifest):
        self.folder = Path(folder)
        self.paths = [self.folder / f["file"] for f in manifest["files"]]
        self.index = np.load(self.folder / manifest["index"]["file"], mmap_mode="r", allow_pickle=False)
        self.labels = np.asarray(self.index["label"], dtype=np.int64)
        self._fds, self._pid = {}, None

    def __len__(self):
        return len(self.index)

    def read(self, i):
        if self._pid != os.getpid():  # a forked loader worker opens its own descriptors
            self._fds, self._pid = {}, os.getpid()
        shard, offset, size = (int(self.index[i][k]) for k in ("shard", "offset", "size"))
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        buffer = bytearray(size)
        if os.preadv(fd, [buffer], offset) != size:
            raise UserError(f"{self.paths[shard]}: image {i} ends past the end of the shard (truncated); "
                            "rerun the pack stage")
        return buffer

    def image(self, i):
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.read(i))) as im:
            return np.asarray(im.convert("RGB"))

    def __getstate__(self):  # descriptors are per process
        return {**self.__dict__, "_fds": {}, "_pid": None}

    def __del__(self):
        if self._pid == os.getpid():
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)


def open_train_split(folder, manifest):
    """The training split, every file verified against the manifest: (images, labels), where images is
    the memory-mapped HWC array (layout raw) or a JpegShards (layout jpeg)."""
    folder = Path(folder)
    for entry in manifest["files"] + ([manifest["index"]] if manifest["layout"] == "jpeg" else []):
        verify_file(folder / entry["file"], entry["sha256"], entry["bytes"])
    if manifest["layout"] == "raw":
        arr = open_packed(folder / RAW_TRAIN_FILE)
        return arr["image"], np.asarray(arr["label"], dtype=np.int64)
    shards = JpegShards(folder, manifest)
    return shards, shards.labels


# ----------------------------------------------------------------------------- model inputs
def to_model_inputs(images, input_format, height, width):
    """Packed uint8 images -> the model's float32 inputs (pixel values 0..255, NCHW planes).

    Normalisation happens inside the model, so a board feeds raw pixels (and an
    integer model can take uint8 directly).
    """
    if input_format == "rgb":
        return {"image": np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)}
    y, uv = split_i420(np.asarray(images), height, width)
    return {"y": np.ascontiguousarray(y, dtype=np.float32), "uv": np.ascontiguousarray(uv, dtype=np.float32)}
