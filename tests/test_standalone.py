"""The repository stands alone: nothing points outside it, no test skips for lack of data, and
`./run.sh --paper <id>` starts from the downloads of each paper's small configuration; offline, the
documented `-S data.path=...` points it at the repository's own images."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import CIFAR_NPZ, COCO128, REPO, copy_project, sh
from workflow.layout import PAPERS

# README "Offline use": the repository's 1024/256 CIFAR-10 images and 32 COCO128 images
OFFLINE = {"data.path": CIFAR_NPZ.relative_to(REPO), "data.train_subset": 0, "data.test_subset": 0}
OFFLINE_DETECTION = {"detection.data.path": COCO128.relative_to(REPO), "detection.data.calib_subset": 8}


def test_nothing_points_outside_the_repository():
    found = subprocess.run(["git", "grep", "--untracked", "-n", r"\.\./shared"], cwd=REPO, capture_output=True,
                           text=True).stdout
    assert found == ""


def test_a_skip_for_lack_of_data_fails(tmp_path):
    """The check in conftest.py: a test that skips because data is missing fails; other skips stay skips."""
    (tmp_path / "test_skips.py").write_text(textwrap.dedent("""
        import pytest

        def test_needs_missing_data():
            pytest.skip("CIFAR-10 data not found beside the repository")

        @pytest.mark.skipif(True, reason="openssh-server not installed (scripts/ci-deps.sh)")
        def test_needs_sshd():
            pass
    """))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-rA", "-p", "no:cacheprovider",
                             str(tmp_path / "test_skips.py")], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{REPO}"})
    assert "FAILED test_skips.py::test_needs_missing_data" in result.stdout, result.stdout[-2000:]
    assert "SKIPPED" in result.stdout and "1 failed, 1 skipped" in result.stdout


def clone(tmp_path):
    """A fresh project with nothing beside it, in git (DVC records into it), set up (.venv as ./run.sh made it)."""
    project = copy_project(tmp_path)
    (project / ".venv").symlink_to(Path(sys.prefix))
    sh(project, "git", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return project


def run_paper(project, paper, *snakemake_args):
    small = yaml.safe_load((REPO / f"config/papers/{paper}/small.yaml").read_text())
    offline = {**OFFLINE, **(OFFLINE_DETECTION if small.get("detection.enabled") else {})}
    sets = [x for key, value in offline.items() for x in ("-S", f"{key}={value}")]
    return sh(project, "bash", "run.sh", "--paper", paper, *sets, *snakemake_args, timeout=900)


def jobs_of(output):
    return {line.split()[0]: int(line.split()[1]) for line in output.split("Job stats:")[1].splitlines()[3:]
            if len(line.split()) == 2 and line.split()[1].isdigit()}


@pytest.mark.slow
@pytest.mark.parametrize("paper", PAPERS)
def test_paper_run_starts_offline_from_the_repository_data(paper, tmp_path):
    """The dry run plans the paper's whole DAG; two papers (CIFAR-10 both formats; CIFAR-10 and COCO128)
    really run its first stages from the in-repo data, and DVC records them."""
    project = clone(tmp_path)
    small = yaml.safe_load((REPO / f"config/papers/{paper}/small.yaml").read_text())
    assert small["data.source"] == "cifar10" and small["data.path"] == "data/raw" and small["data.download"]
    if paper not in ("yuv420_mobilenetv2", "od_quant_kd_imx8"):
        result = run_paper(project, paper, "-n")
        jobs = jobs_of(result.stdout)
        assert jobs["pack"] >= 1 and jobs["train"] >= 1 and jobs["paper_table"] == 1, jobs
        return
    detection = paper == "od_quant_kd_imx8"
    result = run_paper(project, paper, "--until", "pack_train", "pack", *(["det_pack"] if detection else []))
    output = result.stdout + result.stderr
    packs = ["pack-train", "pack-rgb"] + (["det-pack"] if detection else ["pack-yuv420"])
    assert f"DVC recorded {len(packs)} completed stage(s)" in output
    train = json.loads((project / "data/packed/train/manifest.json").read_text())
    assert train["count"] == 1024 and train["source"]["kind"] == "cifar10"
    assert json.loads((project / "data/packed/rgb/manifest.json").read_text())["splits"]["test"]["count"] == 256
    if detection:
        assert json.loads((project / "data/detection/manifest.json").read_text())["splits"]["calib"]["images"] == 8
    assert not set(yaml.safe_load(sh(project, "dvc", "status", "--json", *packs).stdout))  # recorded: current
