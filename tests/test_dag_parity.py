"""Snakemake and DVC run the same DAG: same commands, same outputs, DVC's deps among Snakemake's inputs."""
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, tiny_params, write_params
from workflow.config import load_params
from workflow.dag import dvc_yaml, stages

WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "profiles", "config")


def snakemake_jobs(workdir, target="all"):
    """Every job of a forced dry run: {frozenset(outputs): (rule, inputs, shell command)}."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "1", target],
                            cwd=workdir, capture_output=True, text=True, check=True)
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", result.stdout):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule or rule.group(1) == "all":  # the default target has no outputs
            continue
        field = lambda name: [f.strip() for f in re.search(rf"^    {name}: (.*)$", block, re.M).group(1).split(",")]
        command = re.search(r"^Shell command: (.*)$", block, re.M).group(1).strip()
        command = re.sub(r" > logs/\S+\.log 2>&1$", "", command)  # Snakemake keeps a log per job; DVC does not
        jobs[frozenset(field("output"))] = (rule.group(1), set(field("input")), command)
    return jobs


def workdir_with(tmp_path, params):
    for item in WORKFLOW_FILES:
        target = tmp_path / item
        if target.is_dir():  # the test's own folder (e.g. config/devices.yaml): link what it lacks
            for child in (REPO / item).iterdir():
                if not (target / child.name).exists():
                    (target / child.name).symlink_to(child)
            continue
        target.symlink_to(REPO / item)
    write_params(tmp_path / "params.yaml", params)
    return tmp_path


def check_parity(workdir, params):
    jobs = snakemake_jobs(workdir)
    dvc_stages = stages(params)
    assert len(jobs) == len(dvc_stages)
    for stage in dvc_stages:
        outputs = frozenset(stage.outs + stage.metrics + stage.plots)
        assert outputs in jobs, f"{stage.name}: no Snakemake job with outputs {sorted(outputs)}"
        rule, inputs, command = jobs[outputs]
        assert command == stage.cmd, (stage.name, rule)
        assert set(stage.deps) <= inputs, (stage.name, set(stage.deps) - inputs)


def test_default_params_dag_agrees():
    params = load_params(REPO / "params.yaml")
    workdir = REPO
    check_parity(workdir, params)


def test_changed_matrix_still_agrees(tmp_path):
    params = tiny_params()
    params["models"]["mnv2-wide-yuv"] = {"arch": "mobilenetv2", "width_mult": 1.0, "input_format": "yuv420"}
    # a ResNet-18 teacher, a YUV student distilled from it starting from a trained model, a pruned
    # distilled student, and a QAT artifact with other settings
    params["models"]["resnet-teacher"] = {"arch": "resnet18", "width_mult": 1.0, "input_format": "rgb",
                                          "artifacts": ["onnx-fp32"]}
    params["models"]["kd-yuv"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                  "distill": {"teacher": "resnet-teacher", "type": "feature", "init":
                                              "mobilenetv2-yuv420", "layers": [{"student": "features.6",
                                                                                "teacher": "layer2"}]}}
    params["models"]["kd-yuv-pruned"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                         "prune": {"from": "kd-yuv", "ratio": 0.3},
                                         "artifacts": ["onnx-fp32", "onnx-int8-qat"]}
    params["artifacts"]["onnx-int8-qat"] = {"qat": {"epochs": 2, "lr": 0.01, "per_channel": False}}
    params["benchmark"]["threads"] = [1, 2, 4]
    check_parity(workdir_with(tmp_path, params), params)


def test_committed_dvc_yaml_is_generated_from_params():
    expected = dvc_yaml(load_params(REPO / "params.yaml"))
    assert (REPO / "dvc.yaml").read_text() == expected, "run: python -m workflow.dag"


@pytest.mark.skipif(shutil.which("dvc") is None and not (REPO / ".venv/bin/dvc").exists(), reason="dvc missing")
def test_dvc_parses_the_generated_file():
    dvc = shutil.which("dvc") or str(REPO / ".venv/bin/dvc")
    result = subprocess.run([dvc, "dag", "--md"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for stage in stages(load_params(REPO / "params.yaml")):
        assert stage.name in result.stdout
