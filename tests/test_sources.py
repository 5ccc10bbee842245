"""Dataset sources and the pack stage on real images: ImageFolder / ImageNet / CIFAR-100 sources, label
validation, hidden and bad files, the ImageNet pack-time policy and the JPEG-shard training split."""
import io
import json
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import (CIFAR_NPZ, IMAGENET, REPO, assert_one_line_error, coco_class_folder, run_module, tiny_params,
                      write_params)
from workflow.config import validate
from workflow.datasets import JpegShards, load_packed, open_train_split
from workflow.errors import UserError
from workflow.input_pipeline import PackedData
from workflow.pack import pack_eval, pack_train


def pack(params, out, *args):
    """python -m workflow.pack as a user runs it (for its exit status and one-line errors)."""
    return run_module("pack", "--params", params, *args, "--out", out)


def folder_params(path, **data):
    values = {"source": "imagefolder", "path": str(path), "train_subset": 0, "test_subset": 0, "calib_subset": 4,
              "image_size": 224, "pack_workers": 1, **data}
    params = tiny_params(data=values)
    params["train"]["augment"]["random_resized_crop"] = {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}
    return validate(params)


def manifest_of(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    return coco_class_folder(tmp_path_factory.mktemp("coco") / "folder")


# ----------------------------------------------------------------------------- ImageNet policy on real photos
@pytest.fixture(scope="module")
def coco_packed(tmp_path_factory, coco_folder):
    root = tmp_path_factory.mktemp("coco-packed")
    params = folder_params(coco_folder, pack_workers=2, shard_size_mb=0.1)
    pack_train(params, root / "train")
    for fmt in ("rgb", "yuv420"):
        pack_eval(params, fmt, root / fmt)
    return root


def test_variable_size_photos_become_jpeg_shards(coco_packed, coco_folder):
    manifest = manifest_of(coco_packed / "train")
    assert manifest["layout"] == "jpeg" and manifest["classes"] == ["animal", "other", "person"]
    assert manifest["count"] == sum(1 for _ in (coco_folder / "train").rglob("*.jpg"))
    assert len(manifest["files"]) > 1  # 0.1 MB shards
    shards, labels = open_train_split(coco_packed / "train", manifest)
    for i in range(len(shards)):
        image = shards.image(i)  # numpy + PIL alone read it
        assert min(image.shape[:2]) == 256 and image.shape[2] == 3  # 640x480 photos: short side capped at 256
    assert np.bincount(labels).tolist() == manifest["class_counts"]
    assert manifest["kept_verbatim"] == 0 and manifest["bytes"] < manifest["source"]["bytes_read"]


def test_eval_images_are_torchvisions_reference_transform(coco_packed, coco_folder):
    from torchvision.transforms import v2

    reference = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.PILToTensor()])
    manifest = manifest_of(coco_packed / "rgb")
    images, labels = load_packed(coco_packed / "rgb" / "test.npy", manifest, "test")
    files = sorted((coco_folder / "val" / manifest["classes"][int(labels[0])]).iterdir())
    with Image.open(files[0]) as im:
        expected = reference(im.convert("RGB")).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(images[0], expected)
    assert manifest["eval_transform"]["resize_short_side"] == 256 and images.shape[1:] == (224, 224, 3)


def test_same_pack_whatever_the_number_of_workers(tmp_path, coco_packed, coco_folder):
    pack_train(folder_params(coco_folder, pack_workers=1, shard_size_mb=0.1), tmp_path / "train")
    ours, theirs = manifest_of(tmp_path / "train"), manifest_of(coco_packed / "train")
    assert ours["files"] == theirs["files"] and ours["index"] == theirs["index"]


def test_shard_checksum_mismatch_and_truncation_are_named(tmp_path, coco_packed):
    shutil.copytree(coco_packed, tmp_path / "p")
    shard = tmp_path / "p" / "train" / "shard-00001.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{shard}: checksum mismatch"):
        PackedData(tmp_path / "p", "rgb")
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(UserError, match=f"{shard}: {len(data) - 10} bytes, its manifest says {len(data)}"):
        PackedData(tmp_path / "p", "rgb")


# ----------------------------------------------------------------------------- ImageNet fixture and layout
def test_imagenet_fixture_jpegs_are_kept_byte_for_byte(tmp_path):
    manifest = pack_train(folder_params(IMAGENET), tmp_path / "train")
    assert manifest["kept_verbatim"] == manifest["count"] == 47  # 227x227 RGB JPEGs: within the 256 short side
    shards = JpegShards(tmp_path / "train", manifest)
    originals = sorted((IMAGENET / "train").rglob("*.JPEG"))
    assert {bytes(shards.read(i)) for i in range(len(shards))} == {p.read_bytes() for p in originals}


def test_torchvision_imagenet_layout(tmp_path):
    """data.source imagenet: torchvision's ImageNet root (meta.bin + the train/ and val/ it extracts)."""
    import torch

    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        shutil.copytree(IMAGENET / split, root / split)
    rows = [line.split("\t") for line in (IMAGENET / "classes.tsv").read_text().splitlines()[1:]]
    torch.save(({wnid: tuple(names.split(", ")) for wnid, _, names in rows}, []), root / "meta.bin")
    (root / "train" / rows[0][0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    manifest = pack_eval(folder_params(root, source="imagenet"), "rgb", tmp_path / "rgb")
    assert manifest["classes"] == [r[0] for r in rows] and manifest["class_names"][0] == "tusker"
    assert manifest["splits"]["test"]["count"] == 28 and manifest["source"]["kind"] == "imagenet"


def test_imagenet_without_archives_says_what_is_missing(tmp_path):
    (tmp_path / "imagenet").mkdir()
    params = write_params(tmp_path / "params.yaml", folder_params(tmp_path / "imagenet", source="imagenet"))
    assert_one_line_error(pack(params, tmp_path / "o", "--split", "train"), "imagenet",
                          "ILSVRC2012_devkit_t12.tar.gz")


# ----------------------------------------------------------------------------- CIFAR-100
def write_cifar100_archive(root):
    """cifar-100-python.tar.gz in the official layout (train/test/meta pickles, fine labels), built from the
    in-repo CIFAR-10 images (no CIFAR-100 exists here: this tests the layout, not the data); md5 per member."""
    import hashlib

    source = np.load(CIFAR_NPZ)
    members = {
        "train": {"data": source["train_data"][:300], "fine_labels": (np.arange(300) % 100).tolist(),
                  "coarse_labels": [0] * 300},
        "test": {"data": source["test_data"][:100], "fine_labels": list(range(100)), "coarse_labels": [0] * 100},
        "meta": {"fine_label_names": [f"class{i:02d}" for i in range(100)], "coarse_label_names": ["all"]},
    }
    md5 = {}
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, content in members.items():
            data = pickle.dumps(content)
            md5[name] = hashlib.md5(data).hexdigest()
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md5["archive"] = hashlib.md5((root / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    return md5


def test_cifar100_source_offline_from_its_archive(tmp_path, monkeypatch):
    import torchvision

    from workflow.sources import load_source

    md5 = write_cifar100_archive(tmp_path)
    # torchvision's md5 table names the official files; the rest is the real code path (verify, extract, read)
    cifar100 = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cifar100, "tgz_md5", md5["archive"])
    monkeypatch.setattr(cifar100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(cifar100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(cifar100, "meta", {**cifar100.meta, "md5": md5["meta"]})
    source = load_source({"source": "cifar100", "path": str(tmp_path), "download": False})
    assert len(source.classes) == 100 and source.classes[99] == "class99"
    assert source.splits["train"].images.shape == (300, 32, 32, 3) and source.splits["test"].labels[99] == 99
    assert source.sha256 == __import__("hashlib").sha256((tmp_path / "cifar-100-python.tar.gz").read_bytes()).hexdigest()


def test_missing_cifar100_archive_says_where_to_put_it(tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "cifar100", "path": str(tmp_path / "raw"), "download": False}))
    assert_one_line_error(pack(params, tmp_path / "out", "--split", "train"),
                          str(tmp_path / "raw" / "cifar-100-python.tar.gz"), "place")


# ----------------------------------------------------------------------------- labels (issue 13, case 3)
def npz_with(tmp_path, train_labels, **extra):
    source = np.load(CIFAR_NPZ)
    path = tmp_path / "labels.npz"
    np.savez(path, train_data=source["train_data"][:40], train_labels=train_labels,
             test_data=source["test_data"][:20], test_labels=source["test_labels"][:20], **extra)
    return path


LABELS = np.load(CIFAR_NPZ)["train_labels"][:40].astype(np.int64)
NAMES = np.load(CIFAR_NPZ)["label_names"]


@pytest.mark.parametrize("labels, extra, fragments", [
    (np.where(np.arange(40) == 7, 12, LABELS), {"label_names": NAMES},
     ["train label at index 7 is 12", "expected 0..9 (10 classes)"]),
    (np.where(np.arange(40) == 3, -1, LABELS), {}, ["train label at index 3 is -1"]),
    (np.where(np.arange(40) == 5, 70000, LABELS), {"label_names": NAMES}, ["train label at index 5 is 70000"]),
    (LABELS.astype(np.float32), {}, ["train labels have dtype float32, expected integers"]),
    (LABELS, {"label_names": np.array(["cat", "cat"] + [f"c{i}" for i in range(8)])}, ["'cat' twice"]),
    (LABELS[:39], {}, ["40 images but 'train_labels' has 39 labels"]),
])
def test_bad_labels_are_one_line_and_leave_no_file(tmp_path, labels, extra, fragments):
    path = npz_with(tmp_path, labels, **extra)
    params = tiny_params(data={"path": str(path), "train_subset": 0, "test_subset": 0, "calib_subset": 4})
    assert_one_line_error(pack(write_params(tmp_path / "params.yaml", params), tmp_path / "train", "--split", "train"),
                          str(path), *fragments)
    with pytest.raises(UserError, match=fragments[0]):
        pack_eval(params, "rgb", tmp_path / "rgb")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("train", "rgb")]


def test_labels_beyond_int16_do_not_wrap(tmp_path):
    labels = np.where(np.arange(40) == 5, 70000, LABELS)
    manifest = pack_train(tiny_params(data={"path": str(npz_with(tmp_path, labels)), "train_subset": 0,
                                            "test_subset": 0, "calib_subset": 4}), tmp_path / "train")
    _, packed = open_train_split(tmp_path / "train", manifest)
    assert len(manifest["classes"]) == 70001 and packed[5] == 70000


# ----------------------------------------------------------------------------- folders: hidden, empty, bad files
def small_folder(root, n=3):
    """A 2-class folder of real CIFAR images (PNG), 32x32."""
    source = np.load(CIFAR_NPZ)
    images = source["train_data"][:4 * n].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for i, image in enumerate(images):
        folder = root / ("train" if i < 2 * n else "val") / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    root = small_folder(tmp_path / "f")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    (root / "train" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "b" / ".thumbs").mkdir()
    (root / "train" / "b" / ".thumbs" / "x.png").write_bytes(b"not an image")
    (root / "val" / "a" / "notes.txt").write_text("not an image")
    params = folder_params(root, image_size=0)
    manifest = pack_train(params, tmp_path / "train")
    assert manifest["classes"] == ["a", "b"] and manifest["count"] == 6
    assert pack_eval(params, "rgb", tmp_path / "rgb")["source"]["ignored_files"] == 1


def test_empty_class_folder_is_named(tmp_path):
    root = small_folder(tmp_path / "f")
    (root / "val" / "b").rename(root / "val" / ".b")
    (root / "val" / "b").mkdir()
    params = write_params(tmp_path / "params.yaml", folder_params(root, image_size=0))
    assert_one_line_error(pack(params, tmp_path / "o", "--split", "train"), str(root / "val" / "b"),
                          "empty class folder")


@pytest.mark.parametrize("bad", ["truncated", "not-an-image", "broken-link"])
def test_bad_image_is_named_or_skipped_and_counted(tmp_path, bad):
    root = small_folder(tmp_path / "f")
    target = root / "train" / "a" / "9.jpg"
    if bad == "truncated":
        target.write_bytes((IMAGENET / "train" / "n01871265").glob("*.JPEG").__next__().read_bytes()[:3000])
    elif bad == "not-an-image":
        target.write_bytes(b"<html>404 not found</html>")
    else:
        target.symlink_to(tmp_path / "gone.jpg")
    params = write_params(tmp_path / "params.yaml", folder_params(root))
    assert_one_line_error(pack(params, tmp_path / "o", "--split", "train"), str(target), "cannot read image",
                          "data.on_bad: skip")
    assert not (tmp_path / "o" / "manifest.json").exists() and not list((tmp_path / "o").glob("*.bin"))
    manifest = pack_train(folder_params(root, on_bad="skip"), tmp_path / "o")
    assert manifest["count"] == 6 and manifest["skipped"] == 1
    assert manifest["skipped_files"][0]["file"] == "train/a/9.jpg"


def test_failed_repack_leaves_no_old_manifest_beside_new_files(tmp_path):
    root = small_folder(tmp_path / "f")
    params = folder_params(root, shard_size_mb=0.001)
    pack_train(params, tmp_path / "o")
    assert len(list((tmp_path / "o").glob("shard-*.bin"))) == 6
    (root / "train" / "b" / "zz.png").write_bytes(b"broken")
    with pytest.raises(UserError, match="zz.png: cannot read image"):
        pack_train(params, tmp_path / "o")
    assert not (tmp_path / "o" / "manifest.json").exists()
    assert not list((tmp_path / "o").glob("*.npy")) and not list((tmp_path / "o").glob(".*.tmp"))


def test_cifar100_overlay_applies(tmp_path):
    """Seed 002's E3 (ai85nascifarnet on CIFAR-100): the overlay leaves params.yaml valid."""
    from workflow.config import load_schema

    archs = load_schema()["properties"]["models"]["additionalProperties"]["properties"]["arch"]["enum"]
    if "ai85nascifarnet" not in archs:
        pytest.skip("arch ai85nascifarnet comes with the training-side work of issue 12 (item 5)")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run_module("set_params", "--params", tmp_path / "params.yaml", "--file",
               REPO / "config/papers/cifar_max78000/full-cifar100.yaml", check=True)
