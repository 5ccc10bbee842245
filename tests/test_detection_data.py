"""Detection pack stage on real COCO128 files: split, COCO json, checksums and one-line errors for bad input."""
import json
import shutil

import pytest

from conftest import COCO128, assert_one_line_error, run_module, tiny_params, write_params

NAMES = [f"c{i}" for i in range(80)]


@pytest.fixture
def source(tmp_path):
    """12 real COCO128 images with their labels (one of them a background image) in a YOLO folder."""
    root = tmp_path / "src"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:12]
    assert any(p.stem == "000000000250" for p in sorted((COCO128 / "images" / "train2017").glob("*.jpg")))
    images[-1] = COCO128 / "images" / "train2017" / "000000000250.jpg"  # has no label file upstream
    for image in images:
        shutil.copy(image, root / "images" / "train")
        label = COCO128 / "labels" / "train2017" / f"{image.stem}.txt"
        if label.exists():
            shutil.copy(label, root / "labels" / "train")
    return root


def det_params(tmp_path, source, **data):
    params = tiny_params()
    params["detection"]["data"].update({"path": str(source), "download": "", "train_dir": "images/train", "val_dir": "",
                                        "val_fraction": 0.25, "calib_subset": 4, "names": NAMES, "classes": [], **data})
    return write_params(tmp_path / "params.yaml", params)


def pack(tmp_path, params, out="packed"):
    return run_module("detection.pack", "--params", params, "--out", tmp_path / out)


def test_pack_split_coco_json_and_determinism(tmp_path, source):
    params = det_params(tmp_path, source)
    assert pack(tmp_path, params, "a").returncode == 0
    assert pack(tmp_path, params, "b").returncode == 0
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {k: v["sha256"] for k, v in a["splits"].items()} == {k: v["sha256"] for k, v in b["splits"].items()}
    assert (a["splits"]["train"]["images"], a["splits"]["val"]["images"], a["splits"]["calib"]["images"]) == (9, 3, 4)
    train = {f["image"] for f in a["splits"]["train"]["files"]}
    assert not train & {f["image"] for f in a["splits"]["val"]["files"]}
    assert {f["image"] for f in a["splits"]["calib"]["files"]} <= train
    # the COCO json has every val box, in pixels
    coco = json.loads((tmp_path / "a" / "val_coco.json").read_text())
    assert len(coco["images"]) == 3 and len(coco["categories"]) == 80
    assert len(coco["annotations"]) == a["splits"]["val"]["boxes"]
    first = coco["images"][0]
    label = (tmp_path / "a" / "labels" / "val" / first["file_name"].split("/")[-1]).with_suffix(".txt")
    rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
    anns = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    cls, xc, yc, w, h = rows[0]
    x, y, bw, bh = anns[0]["bbox"]
    assert anns[0]["category_id"] == int(cls)
    assert x == pytest.approx((xc - w / 2) * first["width"], abs=0.01)
    assert bh == pytest.approx(h * first["height"], abs=0.01)
    data_yaml = (tmp_path / "a" / "data.yaml").read_text()
    assert "images/train" in data_yaml and "images/val" in data_yaml


def test_classes_keep_only_the_named_classes_renumbered(tmp_path, source):
    assert pack(tmp_path, det_params(tmp_path, source), "all").returncode == 0
    assert pack(tmp_path, det_params(tmp_path, source, classes=["c45", "c0"]), "kept").returncode == 0
    every = json.loads((tmp_path / "all" / "manifest.json").read_text())
    kept = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert kept["nc"] == 2 and kept["names"] == ["c45", "c0"] and kept["source"]["classes"] == ["c45", "c0"]
    assert [f["image"] for f in kept["splits"]["val"]["files"]] == [f["image"] for f in every["splits"]["val"]["files"]]
    for split in ("train", "val"):
        for entry in every["splits"][split]["files"]:
            name = entry["image"].rsplit(".", 1)[0] + ".txt"
            source_rows = (tmp_path / "all" / "labels" / split / name).read_text().splitlines()
            kept_rows = (tmp_path / "kept" / "labels" / split / name).read_text().splitlines()
            expected = [{"45": "0", "0": "1"}[r.split(" ", 1)[0]] + " " + r.split(" ", 1)[1]
                        for r in source_rows if r.split(" ", 1)[0] in ("45", "0")]
            assert kept_rows == expected
    coco = json.loads((tmp_path / "kept" / "val_coco.json").read_text())
    assert coco["categories"] == [{"id": 0, "name": "c45"}, {"id": 1, "name": "c0"}]
    assert {a["category_id"] for a in coco["annotations"]} <= {0, 1}


def test_unknown_class_is_one_line_naming_the_key(tmp_path, source):
    result = pack(tmp_path, det_params(tmp_path, source, classes=["c0", "unicorn"]))
    assert_one_line_error(result, "detection.data.classes", "'unicorn'")


@pytest.mark.parametrize("line, expected", [
    ("80 0.5 0.5 0.2 0.2", "class id 80 outside 0..79"),
    ("3 0.5 1.4 0.2 0.2", "coordinates outside 0..1"),
    ("3 0.95 0.5 0.2 0.2", "extends outside the image"),
    ("3 0.5 0.5 0.2", "expected 5 numbers"),
])
def test_bad_label_file_is_one_line_naming_it(tmp_path, source, line, expected):
    label = sorted((source / "labels" / "train").glob("*.txt"))[2]
    label.write_text(label.read_text() + line + "\n")
    result = pack(tmp_path, det_params(tmp_path, source))
    assert_one_line_error(result, str(label), expected)


def test_undecodable_image_is_one_line_naming_it(tmp_path, source):
    image = sorted((source / "images" / "train").glob("*.jpg"))[1]
    image.write_bytes(image.read_bytes()[:200])  # a truncated JPEG
    assert_one_line_error(pack(tmp_path, det_params(tmp_path, source)), str(image), "cannot decode")


def test_skip_mode_leaves_bad_files_out_and_counts_them(tmp_path, source):
    image = sorted((source / "images" / "train").glob("*.jpg"))[1]
    image.write_bytes(b"not an image")
    label = sorted((source / "labels" / "train").glob("*.txt"))[4]
    label.write_text("99 0.5 0.5 0.1 0.1\n")
    assert pack(tmp_path, det_params(tmp_path, source, on_bad="skip")).returncode == 0
    manifest = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert sorted(s["file"] for s in manifest["skipped"]) == sorted([str(image), str(label)])
    assert manifest["splits"]["train"]["images"] + manifest["splits"]["val"]["images"] == 10


def test_empty_split_is_one_line(tmp_path, source):
    (source / "images" / "val").mkdir()
    result = pack(tmp_path, det_params(tmp_path, source, val_dir="images/val"))
    assert_one_line_error(result, str(source / "images" / "val"), "val split is empty")


def test_missing_dataset_folder_is_one_line(tmp_path):
    result = pack(tmp_path, det_params(tmp_path, tmp_path / "nowhere"))
    assert_one_line_error(result, "nowhere", "dataset not found", "detection.data.path")


def test_folder_without_images_and_labels_is_one_line(tmp_path):
    (tmp_path / "flat").mkdir()
    shutil.copy(next((COCO128 / "images" / "train2017").glob("*.jpg")), tmp_path / "flat")
    result = pack(tmp_path, det_params(tmp_path, tmp_path / "flat"))
    assert_one_line_error(result, str(tmp_path / "flat"), "not a YOLO-format dataset", "images/", "labels/")


def zipped(folder, zip_path):
    """The folder as ultralytics ships COCO128: one top-level folder inside the zip."""
    shutil.make_archive(str(zip_path.with_suffix("")), "zip", folder.parent, folder.name)
    return zip_path


def test_zip_source_packs_like_the_folder(tmp_path, source):
    assert pack(tmp_path, det_params(tmp_path, source), "from-folder").returncode == 0
    archive = zipped(source, tmp_path / "coco128.zip")
    assert pack(tmp_path, det_params(tmp_path, archive), "from-zip").returncode == 0
    from_folder, from_zip = ({k: v["sha256"] for k, v in json.loads((tmp_path / out / "manifest.json").read_text())
                              ["splits"].items()} for out in ("from-folder", "from-zip"))
    assert from_folder == from_zip
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".source.")]  # the unpacked copy is gone
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not a zip")
    assert_one_line_error(pack(tmp_path, det_params(tmp_path, tmp_path / "junk.zip")), "junk.zip",
                          "neither a folder nor a .zip")


def test_missing_folder_is_fetched_by_ultralytics_downloader(tmp_path, source, monkeypatch):
    """`download` names an ultralytics dataset yaml; its zip is fetched by ultralytics' safe_download (here
    a local zip: tests send no traffic outside the machine) and unpacked into detection.data.path."""
    from workflow.detection import source as det_source

    assert det_source.download_url("coco128.yaml").endswith("/coco128.zip")  # ultralytics' own COCO128 entry
    archive = zipped(source, tmp_path / "coco128.zip")
    monkeypatch.setattr(det_source, "download_url", lambda dataset: str(archive))
    target = tmp_path / "raw" / "coco128"
    with det_source.dataset_folder({"path": str(target), "download": "coco128.yaml"}, tmp_path / "work") as root:
        assert root == target and sorted(p.name for p in (root / "images" / "train").iterdir()) == sorted(
            p.name for p in (source / "images" / "train").iterdir())
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["coco128"]  # nothing half-unpacked beside it


def test_evaluate_refuses_a_changed_val_file(tmp_path, source):
    params = det_params(tmp_path, source)
    assert pack(tmp_path, params).returncode == 0
    label = next((tmp_path / "packed" / "labels" / "val").glob("*.txt"))
    label.write_text("0 0.5 0.5 0.1 0.1\n")
    result = run_module("detection.evaluate", "--params", params, "--model", "yolov5n", "--artifact",
                        tmp_path / "none.pt", "--data", tmp_path / "packed", "--out", tmp_path / "e.json")
    assert_one_line_error(result, str(label), "checksum mismatch")


def test_failed_conversion_is_a_failed_row_not_a_missing_one(tmp_path, source, monkeypatch):
    from workflow.config import load_params
    from workflow.detection import export as det_export
    from workflow.detection.evaluate import evaluate

    params_path = det_params(tmp_path, source)
    assert pack(tmp_path, params_path).returncode == 0
    params = load_params(params_path)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")

    def broken(*args):
        raise RuntimeError("converter exploded\ntraceback lines")

    monkeypatch.setitem(det_export.EXPORTERS, "tflite-int8", broken)
    out = tmp_path / "artifacts" / "tflite-int8.tflite"
    report = det_export.export(params, "yolov5n", "tflite-int8", checkpoint, tmp_path / "packed", out, None)
    assert report["status"] == "failed" and report["reason"] == "RuntimeError: converter exploded"
    assert out.stat().st_size == 0 and json.loads(out.with_suffix(".json").read_text())["status"] == "failed"
    row = evaluate(params, "yolov5n", str(out), tmp_path / "packed", tmp_path / "eval.json")
    assert row["status"] == "failed" and row["reason"] == report["reason"]
    assert json.loads((tmp_path / "eval.json").read_text())["status"] == "failed"
