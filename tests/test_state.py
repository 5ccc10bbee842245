"""One state, no silent staleness: a failed Snakemake run leaves DVC with exactly the stages it completed;
after a hand edit of params.yaml (or config/papers) that adds, removes or renames a model, artifact,
device or paper, `dvc repro` and `dvc exp run -S` stop at once with one line naming the fix."""
import re
import shutil
import sys

import pytest
import yaml

from conftest import CIFAR_NPZ, cifar_project, sh
from workflow.dag import CHECK_STAGE

pytestmark = pytest.mark.slow

BASELINES = ("models={mobilenetv2-rgb: {arch: mobilenetv2, width_mult: 0.5, input_format: rgb}, "
             "mobilenetv2-yuv420: {arch: mobilenetv2, width_mult: 0.5, input_format: yuv420}}")
TINY = ["targets=[onnx]", "data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=256", "data.test_subset=128",
        "data.calib_subset=16", BASELINES,
        "artifacts={onnx-fp32: {}, onnx-int8-dynamic: {quantize: {method: dynamic}}}",
        "train.epochs=1", "train.num_threads=1", "train.schedule.cosine_epochs=1", "train.schedule.milestones=[]",
        "export.parity_samples=16", "benchmark.pipeline.resolutions=[[640, 360]]",
        "benchmark.pipeline.min_frames=5", "benchmark.pipeline.min_duration_s=0"]
BOARD = {"host": "192.168.1.50", "user": "pi", "key_file": "~/.ssh/id_ed25519", "known_hosts": "config/known_hosts",
         "workdir": "/home/pi/edge-bench"}


def commit(project, message):
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def new_project(tmp_path_factory, name, *assignments):
    project = cifar_project(tmp_path_factory, name, TINY + list(assignments))
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, "git", "init", "-q")
    commit(project, "tiny")
    return project


def recorded(project):
    return set(yaml.safe_load((project / "dvc.lock").read_text())["stages"])


def test_a_failed_run_records_only_the_stages_it_completed(tmp_path_factory):
    project = new_project(tmp_path_factory, "failed-run", "benchmark.pipeline.frame=no-such-photo.jpg")
    target = "results/pipeline/local/pipeline.json"  # both models' ONNX files, then the pipeline table
    result = sh(project, sys.executable, "-m", "snakemake", "--cores", "2", target, check=False)
    assert result.returncode != 0 and "no-such-photo.jpg" in (project / "logs/pipeline_bench/local.log").read_text()
    done = {CHECK_STAGE, "pack-train", "pack-rgb", "pack-yuv420", "train-mobilenetv2-rgb", "train-mobilenetv2-yuv420",
            "export-mobilenetv2-rgb", "export-mobilenetv2-yuv420"}
    assert recorded(project) == done
    changed = set(yaml.safe_load(sh(project, "dvc", "status", "--json").stdout))
    assert "pipeline-local" in changed and not changed & done

    # the mistake fixed, the rerun runs only the failed stage and DVC records it too
    sh(project, sys.executable, "-m", "workflow.set_params", "benchmark.pipeline.frame=null")
    result = sh(project, sys.executable, "-m", "snakemake", "--cores", "2", target)
    out = result.stdout + result.stderr
    assert re.findall(r"^(?:local)?rule (\w+):", out, re.M) == ["pipeline_bench"], out[-3000:]
    assert recorded(project) == done | {"pipeline-local"}
    assert not set(yaml.safe_load(sh(project, "dvc", "status", "--json").stdout)) & (done | {"pipeline-local"})

    # workflow.sync writes dvc.lock itself (faster): byte for byte what DVC's own commit writes
    lock = (project / "dvc.lock").read_text()
    sh(project, "dvc", "commit", "--force", "train-mobilenetv2-yuv420", "pipeline-local")
    assert (project / "dvc.lock").read_text() == lock


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A project with dvc.yaml written and committed (nothing run: DVC stops before any stage)."""
    project = new_project(tmp_path_factory, "planned", "benchmark.pipeline.enabled=false")
    (project / "config/devices.yaml").write_text(yaml.safe_dump({"devices": {"board-a": BOARD, "board-b": BOARD}}))
    sh(project, sys.executable, "-m", "workflow.set_params", "benchmark.devices=[local, board-a]")
    sh(project, sys.executable, "-m", "workflow.dag")
    commit(project, "two boards")
    return project


def edit_params(project, change):
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def paper_files(project, paper):
    return [project / "config/papers" / f"{paper}.yaml", project / "config/papers" / paper]


def move_paper(project, old, new, keep=False):
    for source, target in zip(paper_files(project, old), paper_files(project, new)):
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target) if keep else source.rename(target)


RGB = {"arch": "mobilenetv2", "width_mult": 0.35, "input_format": "rgb"}
HAND_EDITS = {
    "add a model": lambda p: edit_params(p, lambda d: d["models"].update({"mnv2-small": RGB})),
    "remove a model": lambda p: edit_params(p, lambda d: d["models"].pop("mobilenetv2-yuv420")),
    "rename a model": lambda p: edit_params(p, lambda d: d["models"].update(
        {"rgb": d["models"].pop("mobilenetv2-rgb")})),
    "add an artifact": lambda p: edit_params(p, lambda d: d["artifacts"].update(
        {"onnx-int8-static": {"quantize": {"method": "static"}}})),
    "remove an artifact": lambda p: edit_params(p, lambda d: d["artifacts"].pop("onnx-int8-dynamic")),
    "rename an artifact": lambda p: edit_params(p, lambda d: d["artifacts"].update(
        {"onnx-dynamic": d["artifacts"].pop("onnx-int8-dynamic")})),
    "add a device": lambda p: edit_params(p, lambda d: d["benchmark"]["devices"].append("board-b")),
    "remove a device": lambda p: edit_params(p, lambda d: d["benchmark"]["devices"].remove("board-a")),
    "rename a device": lambda p: edit_params(p, lambda d: d["benchmark"].update(devices=["local", "board-b"])),
    "add a paper": lambda p: move_paper(p, "cifar_max78000", "cifar_max78000_rerun", keep=True),
    "remove a paper": lambda p: [shutil.rmtree(f) if f.is_dir() else f.unlink()
                                 for f in paper_files(p, "rtbench_tflite")],
    "rename a paper": lambda p: move_paper(p, "rtbench_tflite", "rtbench"),
    "add a training seed": lambda p: edit_params(p, lambda d: d.update(seeds=[0, 1])),
}


def assert_stops_naming_the_fix(result):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    ours = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "dvc.yaml is out of date with params.yaml" in ours[0], output[-2000:]
    assert "run `python -m workflow.dag`" in ours[0] and "Traceback" not in output
    assert re.findall(r"Running stage '([^']+)'", output) == [CHECK_STAGE]  # stopped before any real stage


@pytest.mark.parametrize("edit", HAND_EDITS)
def test_dvc_repro_after_a_hand_edit_stops_at_once_naming_the_fix(planned, edit):
    before = set(yaml.safe_load((planned / "dvc.yaml").read_text())["stages"])
    try:
        HAND_EDITS[edit](planned)
        assert_stops_naming_the_fix(sh(planned, "dvc", "repro", check=False))
        sh(planned, sys.executable, "-m", "workflow.dag")  # the fix the line names: DVC now has the change
        after = set(yaml.safe_load((planned / "dvc.yaml").read_text())["stages"])
        assert after != before
        sh(planned, sys.executable, "-m", "workflow.dag", "--check")
    finally:
        sh(planned, "git", "checkout", "-q", "--", ".")
        sh(planned, "git", "clean", "-fdq", "config")


@pytest.mark.parametrize("assignment", ["+models.mnv2-small={arch: mobilenetv2, width_mult: 0.35, input_format: rgb}",
                                        "~artifacts.onnx-int8-dynamic", "benchmark.devices=[local,board-b]"])
def test_dvc_exp_run_set_of_a_structural_key_stops_at_once_naming_the_fix(planned, assignment):
    try:
        assert_stops_naming_the_fix(sh(planned, "dvc", "exp", "run", "-S", assignment, check=False))
    finally:
        sh(planned, "git", "checkout", "-q", "--", ".")
