import json
import pickle

import numpy as np
import pytest

from conftest import TEST_DATA, assert_one_line_error, pack_all, run_module, tiny_params, write_params
from workflow.colorspace import rgb_to_i420
from workflow.datasets import load_packed, open_packed, open_train_split
from workflow.errors import UserError
from workflow.io import sha256_file


def pack(params, out, *args):
    return run_module("pack", "--params", params, *args, "--out", out)


def test_packed_splits_and_manifest(packed_dir, cifar_npz):
    manifest = json.loads((packed_dir / "rgb" / "manifest.json").read_text())
    assert manifest["classes"][:3] == ["airplane", "automobile", "bird"]
    assert manifest["source"]["sha256"] == sha256_file(cifar_npz) and manifest["eval_transform"] is None
    counts = {s: manifest["splits"][s]["count"] for s in ("test", "calib")}
    assert counts == {"test": 256, "calib": 32}
    for split, info in manifest["splits"].items():
        path = packed_dir / "rgb" / info["file"]
        assert sha256_file(path) == info["sha256"]
        images, labels = load_packed(path, manifest, split)
        assert images.shape == (info["count"], 32, 32, 3) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == info["class_counts"]
    train = json.loads((packed_dir / "train" / "manifest.json").read_text())
    assert (train["layout"], train["count"], train["classes"]) == ("raw", 512, manifest["classes"])
    images, labels = open_train_split(packed_dir / "train", train)
    assert images.shape == (512, 32, 32, 3) and np.bincount(labels, minlength=10).tolist() == train["class_counts"]


def test_calibration_images_come_from_the_training_subset(packed_dir):
    train, _ = open_train_split(packed_dir / "train", json.loads((packed_dir / "train" / "manifest.json").read_text()))
    calib = open_packed(packed_dir / "rgb" / "calib.npy")["image"]
    flat = np.asarray(train).reshape(len(train), -1)
    for image in calib[:4]:
        assert (flat == np.asarray(image).reshape(-1)).all(axis=1).any()


def test_yuv_split_holds_the_same_images_as_rgb(packed_dir):
    rgb = open_packed(packed_dir / "rgb" / "test.npy")
    yuv = open_packed(packed_dir / "yuv420" / "test.npy")
    assert yuv["image"].shape == (256, 32 * 32 * 3 // 2)
    np.testing.assert_array_equal(rgb["label"], yuv["label"])
    np.testing.assert_array_equal(rgb_to_i420(np.asarray(rgb["image"][:8])), yuv["image"][:8])


def test_subsets_are_real_cifar_images(packed_dir, cifar_npz):
    source = np.load(cifar_npz)
    test = source["test_data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    packed = open_packed(packed_dir / "rgb" / "test.npy")
    first = np.asarray(packed["image"][0])
    matches = np.flatnonzero((test == first).all(axis=(1, 2, 3)))
    assert len(matches) >= 1 and source["test_labels"][matches[0]] == packed["label"][0]


def test_pack_is_deterministic(tmp_path, cifar_npz, packed_dir):
    params = write_params(tmp_path / "params.yaml", tiny_params(data={"pack_workers": 1}))
    pack_all(params, tmp_path)
    for split in ("test", "calib"):
        assert sha256_file(tmp_path / "yuv420" / f"{split}.npy") == sha256_file(packed_dir / "yuv420" / f"{split}.npy")
    assert sha256_file(tmp_path / "train" / "images.npy") == sha256_file(packed_dir / "train" / "images.npy")


def test_hwc_npz_and_keras_keys(tmp_path, cifar_npz):
    source = np.load(cifar_npz)
    hwc = lambda rows: rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.savez(tmp_path / "hwc.npz", x_train=hwc(source["train_data"][:100]), y_train=source["train_labels"][:100],
             x_test=hwc(source["test_data"][:40]), y_test=source["test_labels"][:40])
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "path": str(tmp_path / "hwc.npz"), "train_subset": 0, "test_subset": 0, "calib_subset": 10}))
    run_module("pack", "--params", params, "--split", "train", "--out", tmp_path / "out", check=True)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["count"] == 100 and manifest["classes"] == [str(i) for i in range(10)]


def test_imagefolder_source(tmp_path, cifar_npz):
    from PIL import Image

    source = np.load(cifar_npz)
    names = source["label_names"]
    for split, key in (("train", "train"), ("val", "test")):
        images = source[f"{key}_data"][:30].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for i, (image, label) in enumerate(zip(images, source[f"{key}_labels"][:30])):
            folder = tmp_path / "folder" / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "imagefolder", "path": str(tmp_path / "folder"), "train_subset": 0, "test_subset": 0,
        "calib_subset": 8}))
    pack_all(params, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "yuv420" / "manifest.json").read_text())
    assert manifest["splits"]["test"]["count"] == 30 and manifest["layout"] == "I420"
    train = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    assert (train["layout"], train["count"], train["height"]) == ("raw", 30, 32)  # PNGs kept as pixels


def write_cifar_batches(root, cifar_npz):
    """The official python layout, built from the real partial images (md5s differ from the archive's)."""
    source = np.load(cifar_npz)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        rows = slice((i - 1) * 40, i * 40)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": source["train_data"][rows], "labels": source["train_labels"][rows].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": source["test_data"][:50], "labels": source["test_labels"][:50].tolist()}, f)
    (folder / "batches.meta").write_bytes((TEST_DATA / "cifar10" / "batches.meta").read_bytes())


def test_torchvision_cifar10_source(tmp_path, cifar_npz, monkeypatch):
    import torchvision

    from workflow.sources import load_source

    write_cifar_batches(tmp_path, cifar_npz)
    # The rebuilt batches cannot match torchvision's md5 list; everything else is the real code path.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    source = load_source({"source": "cifar10", "path": str(tmp_path), "download": False})
    assert source.splits["train"].images.shape == (200, 32, 32, 3) and len(source.splits["test"]) == 50
    assert source.classes[0] == "airplane" and len(source.sha256) == 64


def test_missing_cifar_archive_says_where_to_put_it(tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "cifar10", "path": str(tmp_path / "raw"), "download": False}))
    result = pack(params, tmp_path / "out", "--split", "train")
    assert_one_line_error(result, str(tmp_path / "raw" / "cifar-10-python.tar.gz"), "place")


def test_corrupt_cifar_archive(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "cifar10", "path": str(raw), "download": False}))
    result = pack(params, tmp_path / "out", "--split", "train")
    assert_one_line_error(result, "cifar-10-python.tar.gz", "missing or corrupt")


@pytest.mark.parametrize("content, fragment", [
    (None, "array file not found"),
    (b"PK\x03\x04 truncated zip", "not a readable .npz"),
])
def test_bad_array_file(tmp_path, content, fragment):
    path = tmp_path / "data.npz"
    if content is not None:
        path.write_bytes(content)
    params = write_params(tmp_path / "params.yaml", tiny_params(data={"path": str(path)}))
    result = pack(params, tmp_path / "out", "--split", "train")
    assert_one_line_error(result, str(path), fragment)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
    params = write_params(tmp_path / "params.yaml", tiny_params(data={"path": str(tmp_path / "d.npz")}))
    assert_one_line_error(pack(params, tmp_path / "o", "--split", "eval", "--format", "rgb"),
                          "expected arrays train_data")


def test_subset_larger_than_split(tmp_path, cifar_npz):
    params = write_params(tmp_path / "params.yaml", tiny_params(data={"test_subset": 5000}))
    assert_one_line_error(pack(params, tmp_path / "o", "--split", "eval", "--format", "rgb"),
                          "'data.test_subset'", "only 256")


def test_corrupt_packed_file_is_named(tmp_path, packed_dir):
    manifest = json.loads((packed_dir / "rgb" / "manifest.json").read_text())
    bad = tmp_path / "test.npy"
    data = bytearray((packed_dir / "rgb" / "test.npy").read_bytes())
    data[-100:] = bytes(100)
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{bad}: checksum mismatch"):
        load_packed(bad, manifest, "test")
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match=f"{bad}: corrupt packed dataset"):
        open_packed(bad)


def test_a_verified_file_is_hashed_once_until_it_changes(tmp_path, packed_dir, monkeypatch):
    import shutil

    from workflow import io

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "packed" / "rgb"
    shutil.copytree(packed_dir / "rgb", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    hashed = []
    monkeypatch.setattr(io, "sha256_file", lambda path, real=io.sha256_file: hashed.append(path) or real(path))
    for _ in range(2):
        load_packed(folder / "test.npy", manifest, "test")
    assert len(hashed) == 1  # the second load found the stamp of the first
    assert len(list((tmp_path / "cache" / "edge-vision-repro" / "verified").iterdir())) == 1
    data = bytearray((folder / "test.npy").read_bytes())
    data[-100:] = bytes(100)  # same size, new content: the stamp no longer matches
    (folder / "test.npy").write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch"):
        load_packed(folder / "test.npy", manifest, "test")


def test_cifar10_source_reads_an_npz_of_its_images(tmp_path, cifar_npz):
    """Offline CIFAR-10 is one setting: data.path names an .npz of the images (the repository's subset)."""
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "cifar10", "path": str(cifar_npz), "download": False}))
    run_module("pack", "--params", params, "--split", "eval", "--format", "rgb", "--out", tmp_path / "out", check=True)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["classes"][:2] == ["airplane", "automobile"] and manifest["splits"]["test"]["count"] == 256
    np.savez(tmp_path / "gray.npz", train_data=np.zeros((4, 28, 28, 3), np.uint8), train_labels=np.zeros(4, np.int64),
             test_data=np.zeros((2, 28, 28, 3), np.uint8), test_labels=np.zeros(2, np.int64))
    params = write_params(tmp_path / "params.yaml", tiny_params(data={
        "source": "cifar10", "path": str(tmp_path / "gray.npz"), "train_subset": 0, "test_subset": 0,
        "calib_subset": 1}))
    assert_one_line_error(run_module("pack", "--params", params, "--split", "eval", "--format", "rgb", "--out", tmp_path / "o"),
                          "gray.npz", "not CIFAR-10 images", "data.source: npz")
