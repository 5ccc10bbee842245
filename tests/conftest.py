import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `import workflow` from any working directory
# Real data shipped with the repository (each folder has its SOURCE.md): tests never read outside it.
TEST_DATA = REPO / "tests" / "data"
CIFAR_NPZ = TEST_DATA / "cifar10" / "cifar10_subset.npz"  # 1024 train / 256 test CIFAR-10 images
COCO128 = TEST_DATA / "coco128"  # 32 COCO128 images with YOLO labels

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# A test never skips for lack of data: what it reads ships in tests/data (a clone has everything).
# Such a skip fails instead (tests/test_standalone.py checks this check).
DATA_SKIP = re.compile(r"\b(data|datasets?|cifar-?10|coco(128)?|imagenet|npz|\.\./shared)\b", re.I)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if report.skipped and DATA_SKIP.search(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped for lack of data ({reason}): a test's data belongs in tests/data"


def base_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**sections):
    """params.yaml for the in-repo real CIFAR-10 images, small enough for a test."""
    params = base_params()
    params["data"].update(source="npz", path=str(CIFAR_NPZ), train_subset=512, test_subset=256, calib_subset=32)
    params["train"].update(epochs=1, batch_size=64, num_threads=1)
    params["train"]["schedule"].update(cosine_epochs=1, milestones=[])
    params["export"].update(parity_samples=16)
    params["benchmark"].update(warmup_runs=2, min_runs=5, min_duration_s=0.0, threads=[1], samples=4)
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(name), dict):
            params[name].update(values)
        else:
            params[name] = values
    return params


def write_params(path, params):
    path = Path(path)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


DELETE = object()  # apply_mutation: remove the key instead of setting it


def apply_mutation(params, path, value):
    """A copy of ``params`` with the key at ``path`` (a tuple of keys) set to ``value``, or removed."""
    params = copy.deepcopy(params)
    node = params
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return params


def copy_project(dest):
    """A fresh project at ``dest``: the repository's tracked and untracked-not-ignored files, as a clone has."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def sh(project, *cmd, check=True, timeout=1200):
    """Run a command in a project copy with this interpreter's tools (snakemake, dvc) first on PATH."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(list(cmd), cwd=project, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def cifar_project(tmp_path_factory, name, assignments):
    """A fresh project copy whose params.yaml has ``assignments`` (key=value, as ./run.sh -S) applied."""
    project = copy_project(tmp_path_factory.mktemp(name))
    sh(project, sys.executable, "-m", "workflow.set_params", *assignments)
    return project


def run_module(module, *args, cwd=REPO, check=False, timeout=600):
    """Run ``python -m workflow.<module>`` as a user would; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, "-m", f"workflow.{module}", *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if check and result.returncode != 0:
        raise AssertionError(f"workflow.{module} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="session")
def cifar_npz():
    return CIFAR_NPZ


@pytest.fixture(scope="session")
def packed_dir(tmp_path_factory, cifar_npz):
    """The training split and both color formats' eval splits, packed from the real CIFAR-10 images (small subsets)."""
    root = tmp_path_factory.mktemp("packed")
    params = write_params(root / "params.yaml", tiny_params())
    pack_all(params, root)
    return root


def pack_all(params, root):
    """python -m workflow.pack for the training split and both color formats into root/{train,rgb,yuv420}."""
    run_module("pack", "--params", params, "--split", "train", "--out", root / "train", check=True)
    for fmt in ("rgb", "yuv420"):
        run_module("pack", "--params", params, "--split", "eval", "--format", fmt, "--out", root / fmt, check=True)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, packed_dir):
    """One epoch of each input format on the tiny packed set: {fmt: model dir}."""
    root = tmp_path_factory.mktemp("trained")
    params = write_params(root / "params.yaml", tiny_params())
    out = {}
    for model in ("mobilenetv2-rgb", "mobilenetv2-yuv420"):
        run_module("train", "--params", params, "--model", model, "--data", packed_dir, "--out", root / model,
                   "--checkpoints", root / "ckpt" / model, check=True)
        out[model] = root / model
    return out


def deep_copy(obj):
    return copy.deepcopy(obj)


IMAGENET = TEST_DATA / "imagenet"  # 47 train / 28 val real ILSVRC-2012 images, 14 classes (ImageFolder layout)
COCO_ANIMALS = range(14, 24)  # COCO class ids bird .. giraffe


def coco_class_folder(dest):
    """COCO128's in-repo photographs (variable sizes) as a 3-class ImageFolder: person (any person box),
    animal (else any animal box), other; every third image of a class goes to val/. Links, not copies."""
    dest = Path(dest)
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))
    by_class = {}
    for image in images:
        label = COCO128 / "labels" / "train2017" / f"{image.stem}.txt"
        ids = {int(line.split()[0]) for line in label.read_text().splitlines() if line.strip()} if label.exists() else set()
        name = "person" if 0 in ids else "animal" if ids & set(COCO_ANIMALS) else "other"
        by_class.setdefault(name, []).append(image)
    for name, files in by_class.items():
        for i, image in enumerate(files):
            target = dest / ("val" if i % 3 == 2 else "train") / name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image)
    return dest
