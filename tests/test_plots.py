"""Plot helpers and figures on small hand-made inputs (test fixtures); the figures of a real run are
checked in tests/test_report_dvc.py."""
import json
import struct

import pandas as pd
import pytest

from conftest import REPO
from workflow.papers import PAPERS_DIR
from workflow.plots import (make_plots, pareto_front, plot_files, plot_yuv_gain, point_styles, published_yuv_gain,
                            reproduced_yuv_gain, run_series)


def test_pareto_front_keeps_points_nothing_beats():
    points = {"a": (1.0, 40.0), "b": (2.0, 45.0), "c": (2.5, 44.0), "d": (3.0, 50.0), "e": (1.0, 30.0)}
    assert pareto_front(points) == ["a", "b", "d"]


def test_published_fig20_is_read_from_the_reference():
    points = published_yuv_gain(REPO / PAPERS_DIR)
    assert len(points) == 8
    assert points[0] == pytest.approx((640 * 360 / 1e6, 100 * (2.75 - 2.37) / 2.75))


def test_reproduced_gain_from_the_pipeline_tables():
    table = pd.DataFrame([{"device": "local", "width": 640, "height": 360, "status": "ok", "gain_latency_pct": 25.0},
                          {"device": "local", "width": 1280, "height": 720, "status": "ok", "gain_latency_pct": 10.0},
                          {"device": "local", "width": 3840, "height": 2160, "status": "failed",
                           "gain_latency_pct": None}])
    imgsz, points, _ = reproduced_yuv_gain(table)["local"]
    assert imgsz is None and points == [pytest.approx((0.2304, 25.0)), pytest.approx((0.9216, 10.0))]


def test_one_png_and_one_svg_per_figure():
    params = {"benchmark": {"devices": ["local", "rpi4"]}}
    files = plot_files(params)
    assert "results/plots/pareto-rpi4.svg" in files and "results/plots/bubble.png" in files
    assert len(files) == 2 * 6


def summary_rows():
    base = {"device": "local", "status": "ok", "threads": 1, "size_bytes": 2.8e6}
    return pd.DataFrame([
        {**base, "model": "mobilenetv2-rgb", "artifact": "tflite-fp32", "delegate": "xnnpack", "top1": 0.42,
         "top1_ci_low": 0.39, "top1_ci_high": 0.45, "latency_p50_ms": 0.53},
        {**base, "model": "mobilenetv2-rgb", "artifact": "tflite-fp32", "delegate": "none", "top1": 0.42,
         "top1_ci_low": 0.39, "top1_ci_high": 0.45, "latency_p50_ms": 2.6},
        {**base, "model": "mobilenetv2-rgb", "artifact": "onnx-fp32", "delegate": "CPUExecutionProvider",
         "top1": 0.42, "top1_ci_low": 0.39, "top1_ci_high": 0.45, "latency_p50_ms": 0.55},
        {**base, "model": "mobilenetv2-yuv420", "artifact": "tflite-fp32", "delegate": "xnnpack", "top1": 0.41,
         "top1_ci_low": 0.38, "top1_ci_high": 0.44, "latency_p50_ms": 0.54},
    ])


def test_every_point_has_its_own_style_and_a_label_with_the_delegate():
    rows = summary_rows()
    styles = point_styles(rows)
    labels = [s[3] for s in styles.values()]
    assert labels[:3] == ["mobilenetv2-rgb · tflite-fp32 · XNNPACK",
                          "mobilenetv2-rgb · tflite-fp32 · builtin kernels", "mobilenetv2-rgb · onnx-fp32 · ORT CPU"]
    assert len({s[:3] for s in styles.values()}) == len(rows)  # colour, marker, fill tell every point apart


def png_size(path):
    header = path.read_bytes()[:24]
    return struct.unpack(">II", header[16:24])


def test_figures_at_a_readable_size_with_legends_not_labels(tmp_path):
    params = {"benchmark": {"devices": ["local"]}}
    rows = summary_rows()
    rows.to_csv(tmp_path / "summary.csv", index=False)
    bench = []
    for model in ("mobilenetv2-rgb", "mobilenetv2-yuv420"):
        run = {"settings": {"threads": [1]}, "threads": {"1": {"latencies_ms": [0.5, 0.6, 0.55, 2.0]}},
               "first_run_ms": 3.0}
        path = tmp_path / "bench" / "local" / model / "tflite-fp32.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"status": "ok", "runs": [{**run, "delegate": d} for d in ("xnnpack", "none")]}))
        bench.append(path)
    onnx = tmp_path / "bench" / "local" / "mobilenetv2-rgb" / "onnx-fp32.json"
    onnx.write_text(json.dumps({"status": "ok", "settings": {"threads": [1]}, "first_run_ms": 2.0,
                                "threads": {"1": {"latencies_ms": [0.5, 0.6]}},
                                "runtime": {"providers_active": ["CPUExecutionProvider"]}}))
    series = run_series([*bench, onnx])
    assert [s["delegate"] for s in series][-1] == "CPUExecutionProvider"
    make_plots(params, tmp_path / "summary.csv", [*bench, onnx], tmp_path / "plots", papers_dir=REPO / PAPERS_DIR)
    for name in ("pareto-local", "bubble", "latency_distribution", "first_run_ratio"):
        width, height = png_size(tmp_path / "plots" / f"{name}.png")
        assert 600 <= width <= 2000 and 250 <= height <= 2000, (name, width, height)
    pareto = (tmp_path / "plots" / "pareto-local.svg").read_text()
    assert "mobilenetv2-rgb · tflite-fp32 · builtin kernels" in pareto and "Pareto front" in pareto
    distribution = (tmp_path / "plots" / "latency_distribution.svg").read_text()
    assert "mobilenetv2-rgb on local, 1 thread(s)" in distribution and "tflite-fp32 · XNNPACK" in distribution


@pytest.mark.parametrize("imgsz, untestable", [("32x32", True), ("224x224", False)])
def test_yuv_gain_figure_states_the_input_size_and_when_it_cannot_test_the_claim(tmp_path, imgsz, untestable):
    table = pd.DataFrame([{"device": "local", "width": 640, "height": 360, "imgsz": imgsz, "status": "ok",
                           "gain_latency_pct": 1.0, "rgb_latency_ms": 0.6, "rgb_color_conversion_ms": 0.006}])
    plot_yuv_gain(table, tmp_path, REPO / PAPERS_DIR)
    svg = (tmp_path / "yuv_gain_vs_area.svg").read_text()
    assert f"reproduced on local, {imgsz} models" in svg and "224x224 models (seed 000 Fig. 20)" in svg
    assert ("cannot test" in svg) == untestable
    if untestable:
        assert "1.0 %" in svg  # the colour conversion's share of the RGB pipeline's time (wrapped text)
