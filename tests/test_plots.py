"""Plot helpers on small hand-made inputs (test fixtures); the figures of a real run are checked in
tests/test_report_dvc.py."""
import pandas as pd
import pytest

from conftest import REPO
from workflow.papers import PAPERS_DIR
from workflow.plots import pareto_front, plot_files, published_yuv_gain, reproduced_yuv_gain


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
    assert reproduced_yuv_gain(table)["local"] == [pytest.approx((0.2304, 25.0)), pytest.approx((0.9216, 10.0))]


def test_one_png_and_one_svg_per_figure():
    params = {"benchmark": {"devices": ["local", "rpi4"]}}
    files = plot_files(params)
    assert "results/plots/pareto-rpi4.svg" in files and "results/plots/bubble.png" in files
    assert len(files) == 2 * 6
