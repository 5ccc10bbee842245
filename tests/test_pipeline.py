"""End to end on real CIFAR-10 images: Snakemake runs the DAG, DVC records it (one state: dvc.lock, the DVC
cache), both agree on what is current after a params change, dvc repro, dvc checkout."""
import re
import sys

import pandas as pd
import pytest
import yaml

from conftest import CIFAR_NPZ, cifar_project, sh
from workflow.dag import CHECK_STAGE

pytestmark = pytest.mark.slow

TINY = ["targets=[onnx]", "data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=1024",
        "data.test_subset=256", "data.calib_subset=32", "train.epochs=2", "train.batch_size=32", "train.num_threads=1",
        "train.schedule.cosine_epochs=2",
        "train.schedule.milestones=[]", "export.parity_samples=16", "benchmark.warmup_runs=2",
        "benchmark.min_runs=10", "benchmark.min_duration_s=0", "benchmark.threads=[1, 2]", "benchmark.samples=4",
        "benchmark.stream_workers=[2]", "benchmark.pipeline.resolutions=[[640, 360], [1280, 720]]",
        "benchmark.pipeline.min_duration_s=0.1"]
PAPERS = ("yuv420_mobilenetv2", "cifar_max78000", "od_quant_kd_imx8", "yolov4tiny_pruning", "rtbench_tflite")
# the default target: the summary, every paper table and the plots (all read the summary); DVC first
# checks that dvc.yaml still matches params.yaml (it does: only a value changed)
RGB_BRANCH = {CHECK_STAGE, "train-mobilenetv2-rgb", "export-mobilenetv2-rgb", "pipeline-local", "aggregate",
              "plots"} | {
    f"paper-{paper}" for paper in PAPERS} | {
    f"{stage}-mobilenetv2-rgb-{artifact}" for artifact in ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static")
    for stage in ("evaluate", "benchmark-local")} | {
    f"quantize-mobilenetv2-rgb-{artifact}" for artifact in ("onnx-int8-dynamic", "onnx-int8-static")}


def snakemake_plan(project):
    out = sh(project, sys.executable, "-m", "snakemake", "-n", "--cores", "2").stdout
    return re.findall(r"^(?:local)?rule (\w+):", out, re.M), out


def keep_baseline_matrix(project):
    """The two baseline models and the ORT artifacts; tests/test_optimizations_pipeline.py runs the
    distilled and pruned models and QAT end to end."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["models"] = {m: params["models"][m] for m in ("mobilenetv2-rgb", "mobilenetv2-yuv420")}
    params["artifacts"] = {a: spec for a, spec in params["artifacts"].items() if "qat" not in spec}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = cifar_project(tmp_path_factory, "project", TINY)
    keep_baseline_matrix(project)
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, "git", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2")
    return project


def test_summary_rows_measured_from_onnx(project):
    table = pd.read_csv(project / "results" / "summary.csv")
    assert len(table) == 6 and sorted(set(table["model"])) == ["mobilenetv2-rgb", "mobilenetv2-yuv420"]
    assert set(table["artifact"]) == {"onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"}
    assert set(table["input_format"]) == {"rgb", "yuv420"}
    assert (table["runtime"] == "onnxruntime").all() and (table["device"] == "local").all()
    assert (table["status"] == "ok").all() and (table["test_images"] == 256).all()
    assert (table["top1"] > 0.15).all()  # 10 classes: chance is 0.10
    fp32 = table["precision"] == "fp32"
    assert ((table["top1"] - table["top1_pytorch"]).abs()[fp32] <= 2 / 256).all()
    assert ((table["top1"] - table["top1_pytorch"]).abs()[~fp32] <= 0.05).all()  # int8 stays close
    assert (table["latency_p50_ms"] > 0).all() and (table["throughput_fps"] > 0).all()
    assert (table["latency_p50_ms"] <= table["latency_p99_ms"]).all()
    assert (table["macs"] > 1e6).all() and (table["params"] > 1e5).all()
    assert table["git_commit"].str.len().min() >= 40
    assert "| mobilenetv2-yuv420 |" in (project / "results" / "summary.md").read_text()


def test_pipeline_table_in_the_summary(project):
    table = pd.read_csv(project / "results" / "pipeline" / "local" / "table.csv")
    assert table[["width", "height"]].values.tolist() == [[640, 360], [1280, 720]] and (table["status"] == "ok").all()
    assert "## Pre-processing pipeline" in (project / "results" / "summary.md").read_text()


def cached(project, md5):
    return (project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def test_snakemake_run_is_recorded_by_dvc(project):
    """One state: the Snakemake run left dvc.lock with every stage, every output in the DVC cache."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    outs = [out for stage in lock.values() for out in stage.get("outs", [])]
    assert len(outs) > 40 and all(cached(project, out["md5"]) for out in outs)
    assert sh(project, "dvc", "status", "--json").stdout.strip() == "{}"
    out = sh(project, "dvc", "repro").stdout  # right after the Snakemake run: nothing to rerun
    assert "Stage 'train-mobilenetv2-rgb' didn't change" in out and "Running stage" not in out


def test_noop_rerun(project):
    jobs, out = snakemake_plan(project)
    assert jobs == [] and "Nothing to be done" in out


def test_param_change_reruns_only_the_affected_branch(project):
    assert sh(project, "dvc", "status", "--json").stdout.strip() == "{}"
    sh(project, sys.executable, "-m", "workflow.set_params", "models.mobilenetv2-rgb.width_mult=0.35")
    jobs, _ = snakemake_plan(project)
    assert sorted(jobs) == sorted(["train", "export_onnx", "pipeline_bench", "aggregate", "plots", "all"]
                                  + ["paper_table"] * len(PAPERS) + ["quantize_onnx"] * 2
                                  + ["evaluate"] * 3 + ["benchmark"] * 3)

    out = sh(project, "dvc", "repro").stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == RGB_BRANCH
    assert "Stage 'pack-rgb' didn't change" in out and "Stage 'train-mobilenetv2-yuv420' didn't change" in out

    sh(project, sys.executable, "-m", "workflow.sync")
    jobs, _ = snakemake_plan(project)
    assert jobs == []


def test_dvc_checkout_then_sync_does_not_rerun(project):
    victims = ["data/packed/train/images.npy", "results/models/mobilenetv2-yuv420/model.pt",
               "results/artifacts/mobilenetv2-rgb/onnx-fp32.onnx", "results/summary.csv"]
    before = {v: (project / v).read_bytes() for v in victims}
    for v in victims:
        (project / v).unlink()
    sh(project, "dvc", "checkout", "-q")
    assert {v: (project / v).read_bytes() for v in victims} == before
    jobs, _ = snakemake_plan(project)
    assert jobs, "DVC restored files with new timestamps; Snakemake alone would rerun"
    sh(project, sys.executable, "-m", "workflow.sync")
    jobs, _ = snakemake_plan(project)
    assert jobs == []
    assert {v: (project / v).read_bytes() for v in victims} == before


def test_sync_refuses_when_dvc_is_stale(project):
    sh(project, sys.executable, "-m", "workflow.set_params", "evaluate.batch_size=128")
    result = sh(project, sys.executable, "-m", "workflow.sync", check=False)
    assert result.returncode == 2 and "run `dvc repro`" in result.stderr and "Traceback" not in result.stderr
