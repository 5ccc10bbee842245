"""Where the detection pack stage finds its YOLO-format dataset (params.yaml `detection.data`).

``path`` is a folder with ``images/<dir>/`` and ``labels/<dir>/`` (COCO128's layout), or a ``.zip``
of one (extracted for the pack stage and removed afterwards). When ``path`` does not exist and
``download`` names one of ultralytics' dataset yamls (``coco128.yaml``), the zip its ``download``
entry points to is fetched and unpacked into ``path`` by ultralytics' own downloader; offline, point
``path`` at a local folder or zip instead (``-S detection.data.path=...``).
"""
import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

import yaml

from workflow.errors import UserError

OFFLINE = "put the dataset there (a folder with images/ and labels/, or a .zip of one) or point " \
          "detection.data.path at one (-S detection.data.path=...)"


def download_url(dataset):
    """The zip URL of one of ultralytics' dataset yamls (cfg/datasets/<dataset>)."""
    import workflow.detection.ultra  # noqa: F401 - offline settings before ultralytics
    from ultralytics.utils import ROOT

    spec = ROOT / "cfg" / "datasets" / dataset
    if not spec.is_file():
        raise UserError(f"params.yaml: key 'detection.data.download': {dataset!r} is not one of ultralytics' "
                        f"dataset yamls (e.g. coco128.yaml); \"\" never downloads")
    url = yaml.safe_load(spec.read_text()).get("download")
    if not (isinstance(url, str) and url.startswith("http") and url.endswith(".zip")):
        raise UserError(f"params.yaml: key 'detection.data.download': {dataset} has no zip to download (its "
                        f"`download` is a script); download it with ultralytics yourself and set detection.data.path")
    return url


def download(dataset, path):
    """Fetch the dataset's zip with ultralytics and unpack it into ``path`` (complete or not at all)."""
    from ultralytics.utils.downloads import safe_download

    url = download_url(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        try:
            root = safe_download(url, dir=tmp, unzip=True, delete=True, retry=1)
        except (ConnectionError, OSError) as err:
            raise UserError(f"{path}: not found, and downloading {url} failed "
                            f"({str(err).strip().splitlines()[-1][:120].lstrip('❌ ')}); {OFFLINE}") from None
        os.replace(root, path)


def missing_source(data):
    """Why detection.data names no dataset this machine has or can download, else None."""
    if not Path(data["path"]).exists() and not data["download"]:
        return f"{data['path']} does not exist and detection.data.download is \"\" (nothing to download it from)"
    return None


def check_layout(root, source):
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise UserError(f"{source}: not a YOLO-format dataset (no images/ and labels/ folders"
                        f"{' in the archive' if root != source else ''}); key 'detection.data.path' needs a folder "
                        "with images/<dir>/ and labels/<dir>/, or a .zip of one")


@contextlib.contextmanager
def dataset_folder(data, work_dir):
    """The YOLO-format folder of ``data`` (detection.data); a zip is unpacked below ``work_dir`` meanwhile."""
    path = Path(data["path"])
    if not path.exists():
        if not data["download"]:
            raise UserError(f"{path}: dataset not found (key 'detection.data.path'); {OFFLINE}, or set "
                            "detection.data.download: coco128.yaml")
        download(data["download"], path)
    if path.is_dir():
        check_layout(path, path)
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: neither a folder nor a .zip archive (key 'detection.data.path')")
    import workflow.detection.ultra  # noqa: F401 - offline settings before ultralytics
    from ultralytics.utils.downloads import unzip_file

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".source.") as tmp:
        root = Path(unzip_file(path, path=tmp, progress=False))
        check_layout(root, path)
        yield root
