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


def test_reproduced_gain_picks_up_pipeline_columns():
    table = pd.DataFrame([{"device": "local", "width": w, "height": h, "input_format": f, "latency_ms": ms}
                          for (w, h), (rgb, yuv) in {(640, 360): (2.0, 1.5), (1280, 720): (4.0, 3.6)}.items()
                          for f, ms in (("rgb", rgb), ("yuv420", yuv))])
    series = reproduced_yuv_gain(table)
    assert series["local"] == [pytest.approx((0.2304, 25.0)), pytest.approx((0.9216, 10.0))]
    assert reproduced_yuv_gain(table.drop(columns="latency_ms")) == {}


def test_one_png_and_one_svg_per_figure():
    params = {"benchmark": {"devices": ["local", "rpi4"]}}
    files = plot_files(params)
    assert "results/plots/pareto-rpi4.svg" in files and "results/plots/bubble.png" in files
    assert len(files) == 2 * 6
