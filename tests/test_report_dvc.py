"""End to end on real CIFAR-10 images: paper tables, plots and the Snakemake report from a real
run; the DVC round trip through the default remote; `dvc exp run -S` with metrics and plots diffs."""
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import CIFAR_NPZ, cifar_project, sh
from workflow.papers import DIFFERS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN, PAPERS, VERDICTS

pytestmark = pytest.mark.slow

PTQ = "artifacts: [onnx-fp32, onnx-int8-dynamic, onnx-int8-static]"  # QAT and TFLite have tests of their own
MODELS = (f"models={{mobilenetv2-rgb: {{arch: mobilenetv2, width_mult: 0.5, input_format: rgb, {PTQ}}}, "
          f"mobilenetv2-yuv420: {{arch: mobilenetv2, width_mult: 0.5, input_format: yuv420, {PTQ}}}, "
          "mobilenetv2-rgb-pruned: {arch: mobilenetv2, width_mult: 0.5, input_format: rgb, artifacts: [onnx-fp32], "
          "prune: {from: mobilenetv2-rgb, ratio: 0.15, iterations: 2, sparsity_lambda: 1.0e-4, sparse_epochs: 1, "
          "finetune_epochs: 1, lr: 0.0045}}}")
TINY = ["data.source=npz", f"data.path={CIFAR_NPZ}", "data.train_subset=1024", "data.test_subset=256",
        "data.calib_subset=256", MODELS, "train.epochs=1", "train.num_threads=1", "train.schedule.cosine_epochs=1",
        "train.schedule.milestones=[]", "export.parity_samples=16", "benchmark.warmup_runs=2",
        "benchmark.min_runs=20", "benchmark.min_duration_s=0", "benchmark.threads=[1]", "benchmark.samples=4",
        "benchmark.pipeline.resolutions=[[640, 360]]", "benchmark.pipeline.min_duration_s=0"]
# Every DVC-tracked file: datasets, checkpoints, artifacts, metrics, tables and plots.
TRACKED = ["data/packed", "results/models", "results/artifacts", "results/eval", "results/bench",
           "results/summary.csv", "results/summary.md", "results/papers", "results/plots"]


def snapshot(project):
    files = {}
    for item in TRACKED:
        path = project / item
        for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            files[str(f.relative_to(project))] = f.read_bytes()
    return files


def snakemake_jobs(project, *targets):
    out = sh(project, sys.executable, "-m", "snakemake", "-n", "--cores", "2", *targets).stdout
    return re.findall(r"^(?:local)?rule (\w+):", out, re.M)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = cifar_project(tmp_path_factory, "report-project", TINY)
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, "git", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2")  # the default target: summary, papers, plots
    return project


def test_paper_tables_from_the_real_run(project):
    results = pd.read_csv(project / "results/summary.csv")
    base = results[results["model"].isin(["mobilenetv2-rgb", "mobilenetv2-yuv420"])]  # not the pruned variant
    summary = base[base["artifact"] == "onnx-fp32"].set_index("input_format")
    static = base[base["artifact"] == "onnx-int8-static"].set_index("input_format")
    for paper in PAPERS:
        table = pd.read_csv(project / f"results/papers/{paper}/table.csv")
        assert set(table["verdict"]) <= set(VERDICTS)
        assert table.loc[table["verdict"] == NOT_RUN, "reproduced"].isna().all()
        assert (table.loc[table["verdict"] == NOT_RUN, "note"].str.len() > 0).all()
        assert "Verdicts:" in (project / f"results/papers/{paper}/table.md").read_text()
    yuv = pd.read_csv(project / "results/papers/yuv420_mobilenetv2/table.csv").set_index("metric")
    for fmt, label in (("rgb", "RGB 4:4:4"), ("yuv420", "YUV 4:2:0")):
        row = yuv.loc[f"top-1 {label} fp32"]
        assert row["reproduced"] == pytest.approx(100 * summary.loc[fmt, "top1"], abs=1e-4)
        assert row["verdict"] == NOT_COMPARABLE  # a tiny run, not the paper's ImageNet scale
    gap = yuv.loc["top-1 gap YUV - RGB, fp32"]
    expected = 100 * (summary.loc["yuv420", "top1"] - summary.loc["rgb", "top1"])
    assert gap["reproduced"] == pytest.approx(expected, abs=1e-3)
    # 256 test images: the paired interval of the gap is several points wide, wider than the ±1 pp band,
    # so it can only lie across the band (inconclusive) or wholly outside it (differs)
    outside = gap["ci_high"] < -0.39 - 1.0 or gap["ci_low"] > -0.39 + 1.0
    assert gap["ci_low"] < expected < gap["ci_high"] and gap["verdict"] == (DIFFERS if outside else INCONCLUSIVE)
    assert "not narrower than the published effect" in gap["flag"]
    params = yuv.loc["parameters, YUV 4:2:0"]
    assert params["reproduced"] == pytest.approx(summary.loc["yuv420", "params"] / 1e6, rel=1e-4)
    int8 = yuv.loc["top-1 RGB 4:4:4 int8"]  # ORT static PTQ (issue 3) stands in for Hailo's int8
    assert int8["reproduced"] == pytest.approx(100 * static.loc["rgb", "top1"], abs=1e-4)
    assert int8["verdict"] == NOT_COMPARABLE
    drop = yuv.loc["top-1 change int8 - fp32, RGB 4:4:4"]
    expected = 100 * (static.loc["rgb", "top1"] - summary.loc["rgb", "top1"])
    assert drop["reproduced"] == pytest.approx(expected, abs=1e-3) and drop["ci_low"] <= expected <= drop["ci_high"]
    outside = drop["ci_high"] < -1.07 - 0.5 or drop["ci_low"] > -1.07 + 0.5
    assert drop["verdict"] == (DIFFERS if outside else INCONCLUSIVE)  # never "within": the interval is too wide
    pipeline = pd.read_csv(project / "results/pipeline/local/table.csv").iloc[0]
    gain = yuv.loc["latency gain YUV vs RGB 640x360"]  # the pipeline benchmark, on this machine
    assert gain["reproduced"] == pytest.approx(pipeline["gain_latency_pct"], abs=1e-3)
    assert gain["verdict"] == NOT_COMPARABLE and "hardware: measured on local" in gain["note"]
    assert "input size: 32x32, the paper's is 224x224" in gain["note"]
    assert yuv.loc["latency RGB 1280x720", "verdict"] == NOT_RUN  # a resolution not in the params
    pruning = pd.read_csv(project / "results/papers/yolov4tiny_pruning/table.csv").set_index("metric")
    report = json.loads((project / "results/models/mobilenetv2-rgb-pruned/prune_report.json").read_text())
    channels = [sum(layer["channels"][i] for layer in report["channels"]) for i in range(3)]
    row = pruning.loc["channels kept by iteration 1, % of unpruned, MobileNetV2 RGB"]
    assert row["reproduced"] == pytest.approx(100 * channels[1] / channels[0]) and row["verdict"] == NOT_COMPARABLE
    assert pruning.loc["parameters after pruning, 416x416x3, Table 2 row 1", "verdict"] == NOT_RUN  # no YOLOv4-tiny
    # one parameter count per model in every file
    pruned = results[results["model"] == "mobilenetv2-rgb-pruned"]
    assert (pruned["params"] == report["iterations"][-1]["params"]).all()
    rgb = base[base["model"] == "mobilenetv2-rgb"]
    assert rgb["params"].nunique() == 1 and set(rgb["precision"]) <= {"fp32", "int8"}
    # each paper's target: already up to date
    assert snakemake_jobs(project, *(f"results/papers/{paper}/table.md" for paper in PAPERS)) == []


def test_plots_png_and_svg_with_units(project):
    plots = project / "results/plots"
    for name in ("pareto-local", "bubble", "yuv_gain_vs_area", "latency_distribution", "first_run_ratio"):
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (plots / f"{name}.svg").read_text()
        assert "<svg" in svg
    assert "latency p50 (ms, log scale)" in (plots / "pareto-local.svg").read_text()
    assert "mobilenetv2-rgb · onnx-fp32 · ORT CPU" in (plots / "pareto-local.svg").read_text()
    assert "image area (megapixels)" in (plots / "yuv_gain_vs_area.svg").read_text()
    assert "reproduced on local, 32x32 models" in (plots / "yuv_gain_vs_area.svg").read_text()


def test_snakemake_report(project):
    sh(project, sys.executable, "-m", "snakemake", "--report", "report.html", timeout=600)
    html = (project / "report.html").read_text()
    for text in ("Paper tables", "Plots", "Summary", "yuv420_mobilenetv2", "Pareto front"):
        assert text in html, text


def test_dvc_round_trip_restores_everything_without_rerunning(project):
    sh(project, "dvc", "commit", "-f", "-q")
    sh(project, "git", "add", "dvc.lock")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")
    before = snapshot(project)
    assert len(before) > 30 and any(k.endswith("model.pt") for k in before)
    assert Path(sh(project, "dvc", "remote", "default").stdout.strip()) and "local" in \
        sh(project, "dvc", "remote", "list").stdout
    sh(project, "dvc", "push", "-q")
    for item in ("data", "results", ".dvc/cache"):
        shutil.rmtree(project / item)
    sh(project, "dvc", "pull", "-q")
    assert snapshot(project) == before  # byte-identical
    assert json.loads(sh(project, "dvc", "status", "--json").stdout or "{}") == {}  # DVC: nothing to rerun
    sh(project, sys.executable, "-m", "workflow.sync")
    assert snakemake_jobs(project) == []  # Snakemake: nothing to rerun
    assert snapshot(project) == before


def test_dvc_exp_run_set_param_and_diffs(project):
    out = sh(project, "dvc", "exp", "run", "-S", "benchmark.min_runs=25", "-n", "more-runs").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"benchmark-local-mobilenetv2-rgb-onnx-fp32", "aggregate", "plots"} <= ran
    assert not any(s.startswith(("pack-", "train-", "export-", "evaluate-")) for s in ran), ran
    exps = sh(project, "dvc", "exp", "show", "--json").stdout
    assert "more-runs" in exps and re.search(r'"min_runs":\s*25', exps)
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "HEAD", "more-runs", "--json").stdout)
    bench = "results/bench/local/mobilenetv2-rgb/onnx-fp32.json"
    assert bench in diff and any("latency" in key for key in diff[bench]), list(diff)
    plots = sh(project, "dvc", "plots", "diff", "HEAD", "more-runs", "-o", "plots-diff", "--json")
    assert "results/summary.csv" in plots.stdout
    assert (project / "plots-diff").exists() or json.loads(plots.stdout)
