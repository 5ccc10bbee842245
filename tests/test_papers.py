"""Paper tables: the mapping logic on a synthesized results table (a test fixture, not shipped),
and every shipped mapping against the published references."""
import io
import json

import pandas as pd
import pytest
import yaml

from conftest import REPO, assert_one_line_error, base_params, run_module, write_params
from workflow.errors import UserError
from workflow.papers import (NOT_COMPARABLE, NOT_RUN, PAPERS, PAPERS_DIR, SOURCES, WITHIN, DIFFERS, build_table,
                             detect_scale, expand_rows, load_paper, published_value, read_sources, to_number,
                             write_paper)

YUV = "yuv420_mobilenetv2"


def summary_fixture(**overrides):
    """A summary.csv as the aggregate stage writes it, with the columns issue 3 adds (test data only)."""
    base = {"arch": "mobilenetv2", "format": "onnx", "precision": "fp32", "device": "local", "status": "ok",
            "params": 2_236_682, "macs": 96_000_000, "size_bytes": 9_000_000, "latency_p50_ms": 2.0}
    rows = [  # a pruned variant first: the mappings select the paper's models by name
        {**base, "model": "mobilenetv2-rgb-pruned", "input_format": "rgb", "prune_ratio": 0.15, "top1": 0.3000},
        {**base, "model": "mobilenetv2-rgb", "input_format": "rgb", "top1": 0.4210},
        {**base, "model": "mobilenetv2-yuv420", "input_format": "yuv420", "top1": 0.4150},
        {**base, "model": "mobilenetv2-rgb", "input_format": "rgb", "precision": "int8", "quant_method": "static",
         "top1": 0.4100},
        {**base, "model": "mobilenetv2-yuv420", "input_format": "yuv420", "precision": "int8",
         "quant_method": "static", "status": "failed", "reason": "calibration diverged", "top1": None},
    ]
    table = pd.DataFrame(rows)
    for column, value in overrides.items():
        table[column] = value
    return table


def sources(summary=None, pipeline=None):
    return {"summary": summary, "pipeline": pipeline, "pruning": None, "detection": None}


def rows_by_metric(frame):
    return {r.metric: r for r in frame.itertuples()}


@pytest.fixture
def small_params():
    params = base_params()
    _, _, overlays = load_paper(YUV, REPO / PAPERS_DIR)
    for key, value in overlays["small"].items():
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params


def test_published_cells_parse_as_printed():
    assert to_number("90.03%") == 90.03 and to_number("99.1 ms") == 99.1 and to_number("302.60 kB") == 302.6
    assert to_number(67.63) == 67.63 and to_number("-") is None and to_number("310K – 460K") is None
    assert to_number(None) is None and to_number(True) is None


@pytest.mark.parametrize("paper", PAPERS)
def test_every_mapping_resolves_and_nothing_runs_without_results(paper):
    mapping, scale, frame = build_table(paper, base_params(), sources(), REPO / PAPERS_DIR)
    assert len(frame) >= 4 and set(frame["table"]) == {t["id"] for t in mapping["tables"]}
    assert (frame["verdict"] == NOT_RUN).all()
    assert frame["reproduced"].isna().all() and frame["published"].notna().all()
    for note in frame["note"]:
        assert "absent" in note, note  # says which result table is missing
    # params.yaml's data and baselines are seed 000's small configuration (plus more models)
    assert scale == ("small" if paper == "yuv420_mobilenetv2" else "custom")


@pytest.mark.parametrize("scale", ["small", "full"])
@pytest.mark.parametrize("paper", PAPERS)
def test_every_overlay_applies_to_params_yaml(paper, scale, tmp_path):
    """./run.sh --paper <id> [--full] starts from params.yaml: the overlay must leave it valid."""
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    for folder in ("data/imagenet", "data/coco"):  # where the full configurations expect their datasets
        (tmp_path / folder).mkdir(parents=True)
    result = run_module("set_params", "--params", params, "--file", REPO / PAPERS_DIR / paper / f"{scale}.yaml",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, _, overlays = load_paper(paper, REPO / PAPERS_DIR)
    assert detect_scale(yaml.safe_load(params.read_text()), overlays) == scale


def test_published_values_and_derived_figures():
    reference, mapping, _ = load_paper(YUV, REPO / PAPERS_DIR)
    rows = {r["metric"]: r for t in mapping["tables"] for r in expand_rows(t["rows"])}
    value = lambda metric: published_value(reference, rows[metric]["published"])
    assert value("top-1 RGB 4:4:4 fp32") == 67.63 and value("top-1 YUV 4:2:0 int8") == 66.6
    assert value("top-1 gap YUV - RGB, fp32") == pytest.approx(67.24 - 67.63)
    assert value("latency gain YUV vs RGB 640x360") == pytest.approx(100 * (2.75 - 2.37) / 2.75)
    assert value("parameters, YUV 4:2:0") == 3.49
    assert len([m for m in rows if m.startswith("latency RGB ")]) == 8


def test_verdicts_by_comparability_and_tolerance(small_params):
    _, scale, frame = build_table(YUV, small_params, sources(summary_fixture()), REPO / PAPERS_DIR)
    assert scale == "small"
    rows = rows_by_metric(frame)
    fp32 = rows["top-1 RGB 4:4:4 fp32"]
    assert fp32.reproduced == pytest.approx(42.10) and fp32.delta_abs == pytest.approx(42.10 - 67.63)
    assert fp32.verdict == NOT_COMPARABLE and "scale" in fp32.note
    gap = rows["top-1 gap YUV - RGB, fp32"]  # -0.60 reproduced vs -0.39 published, tolerance 2 pp
    assert gap.reproduced == pytest.approx(-0.60) and gap.verdict == WITHIN
    drop_rgb = rows["top-1 change int8 - fp32, RGB 4:4:4"]  # -1.10 vs -1.07, tolerance 1.5 pp
    assert drop_rgb.reproduced == pytest.approx(-1.10) and drop_rgb.verdict == WITHIN
    drop_yuv = rows["top-1 change int8 - fp32, YUV 4:2:0"]
    assert drop_yuv.verdict == NOT_RUN and "calibration diverged" in drop_yuv.note
    assert rows["top-1 YUV 4:2:0 int8"].verdict == NOT_RUN
    latency = rows["latency RGB 640x360"]
    assert latency.verdict == NOT_RUN and "pipeline benchmark" in latency.note and SOURCES["pipeline"] in latency.note


def test_out_of_tolerance_differs_and_missing_column_is_not_run(small_params):
    summary = summary_fixture()
    summary.loc[summary["input_format"] == "yuv420", "top1"] = 0.30  # gap -12 pp
    summary = summary.drop(columns="quant_method")
    _, _, frame = build_table(YUV, small_params, sources(summary), REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert rows["top-1 gap YUV - RGB, fp32"].verdict == DIFFERS
    int8 = rows["top-1 RGB 4:4:4 int8"]
    assert int8.verdict == NOT_RUN and "no column quant_method" in int8.note and "issue 3" in int8.note


def test_hardware_rows_compare_only_on_the_papers_device(small_params, tmp_path):
    # results/pipeline/<device>/table.csv as the pipeline benchmark writes it (one resolution here)
    pipeline = pd.DataFrame([{"device": "local", "width": 640, "height": 360, "status": "ok", "rgb_latency_ms": 3.2,
                              "yuv_latency_ms": 2.7, "gain_latency_pct": 100 * (1 - 2.7 / 3.2)}])
    _, _, overlays = load_paper(YUV, REPO / PAPERS_DIR)
    _, _, frame = build_table(YUV, small_params, sources(summary_fixture(), pipeline), REPO / PAPERS_DIR)
    gain = rows_by_metric(frame)["latency gain YUV vs RGB 640x360"]
    assert gain.reproduced == pytest.approx(100 * 0.5 / 3.2) and gain.verdict == NOT_COMPARABLE
    assert rows_by_metric(frame)["latency RGB 1280x720"].verdict == NOT_RUN

    # the paper's hardware, listed in a copy of the mapping, at the full scale: now compared
    root = tmp_path / "papers"
    root.mkdir()
    (root / f"{YUV}.yaml").write_text((REPO / PAPERS_DIR / f"{YUV}.yaml").read_text())
    (root / YUV).mkdir()
    for name in ("small", "full"):
        (root / YUV / f"{name}.yaml").write_text((REPO / PAPERS_DIR / YUV / f"{name}.yaml").read_text())
    mapping = yaml.safe_load((REPO / PAPERS_DIR / YUV / "mapping.yaml").read_text())
    mapping["same_hardware_devices"] = ["local"]
    (root / YUV / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    full = base_params()
    for key, value in overlays["full"].items():
        node = full
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    assert detect_scale(full, overlays) == "full"
    _, _, frame = build_table(YUV, full, sources(summary_fixture(), pipeline), root)
    gain = rows_by_metric(frame)["latency gain YUV vs RGB 640x360"]
    assert gain.verdict == WITHIN  # 15.6 % vs 13.8 %, tolerance 5 pp
    assert rows_by_metric(frame)["latency RGB 640x360"].verdict == DIFFERS  # 3.2 ms vs 2.75 ms: 16 % > 10 %


def test_never_comparable_rows_show_the_value_with_the_reason():
    _, _, frame = build_table("cifar_max78000", base_params(), sources(summary_fixture()), REPO / PAPERS_DIR)
    row = rows_by_metric(frame)["top-1 fp32 MobileNetV2 RGB"]
    assert row.reproduced == pytest.approx(42.10) and row.verdict == NOT_COMPARABLE
    assert "different network" in row.note
    assert rows_by_metric(frame)["parameters"].verdict == NOT_RUN
    assert "ai85nascifarnet" in rows_by_metric(frame)["parameters"].note


def detection_fixture():
    """results/detection/summary.csv as workflow.detection.aggregate writes it (test data only)."""
    from workflow.detection.aggregate import COLUMNS

    def row(model, artifact, **fields):
        return {**dict.fromkeys(COLUMNS, None), "task": "detection", "model": model, "base_yaml": "yolov5n.yaml",
                "imgsz": "320x320", "artifact": artifact, "status": "ok", "map50_95": 0.1, "map50": 0.2,
                "size_bytes": 10_000_000, "infer_ms": 40.0, "params": 2_600_000, **fields}
    rows = [row("yolov5n", "pytorch"), row("yolov5n", "onnx-fp32"),
            row("yolov5n", "onnx-int8-dynamic", size_bytes=2_900_000, map50_95=0.09),
            row("yolov5n-kd-output", "pytorch", teacher="yolov5s", kd="output", kd_factor=1.0, map50_95=0.12),
            row("yolov4tiny-leaky0125", "pytorch", base_yaml="yolov4-tiny.yaml", leaky_slope=0.125, imgsz="224x320",
                map50=0.3),
            row("yolov4tiny-leaky0125-pruned", "pytorch", base_yaml="yolov4-tiny.yaml", leaky_slope=0.125,
                imgsz="224x320", prune_ratio=0.15, prune_iteration=2, params=1_800_000, map50=0.1)]
    # through a CSV file, as read_sources reads it: empty cells come back as NaN
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return pd.read_csv(io.StringIO(buffer.getvalue()))


def test_detection_rows_are_read_from_the_detection_summary():
    tables = {**sources(), "detection": detection_fixture()}
    _, _, frame = build_table("od_quant_kd_imx8", base_params(), tables, REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert rows["mAP50-95 ONNX uint8 320"].reproduced == pytest.approx(0.09)
    assert rows["file size ONNX uint8 320"].reproduced == pytest.approx(2.9)
    assert rows["size change, ONNX Runtime"].reproduced == pytest.approx(-71.0)
    assert rows["mAP50-95 baseline (no KD)"].reproduced == pytest.approx(0.1)  # empty kd cell matches ""
    assert rows["mAP50-95 OBKD teacher v5m, factor 1"].reproduced == pytest.approx(0.12)
    assert rows["mAP50-95 ONNX fp32 640"].verdict == NOT_RUN and "imgsz=640x640" in rows["mAP50-95 ONNX fp32 640"].note
    _, _, frame = build_table("yolov4tiny_pruning", base_params(), tables, REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert rows["mAP, slope 0.125, 320x224x3"].reproduced == pytest.approx(30.0)  # the unpruned model
    assert rows["parameters after pruning iteration 2, 416x416"].reproduced == 1_800_000


def test_written_tables(tmp_path, small_params):
    results = tmp_path / "results"
    results.mkdir()
    summary_fixture().to_csv(results / "summary.csv", index=False)
    scale, frame = write_paper(YUV, small_params, tmp_path / "out", results_root=tmp_path, root=REPO / PAPERS_DIR)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| top-1 gap YUV - RGB, fp32 | pp | -0.39 | -0.6 |" in md and "within tolerance" in md
    assert "`results/summary.csv` (present)" in md and "`results/pipeline/{device}/table.csv` (absent)" in md
    csv = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(csv.columns[:5]) == ["table", "metric", "unit", "published", "reproduced"] and len(csv) == len(frame)
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and r"\label{tab:yuv420_mobilenetv2:accuracy}" in tex
    verdicts = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    assert verdicts["scale"] == "small" and sum(verdicts["verdicts"].values()) == len(frame)


def test_pipeline_tables_and_prune_reports_are_read_per_folder(tmp_path):
    (tmp_path / "results/pipeline/rpi4").mkdir(parents=True)
    pd.DataFrame([{"width": 640, "height": 360, "status": "ok", "gain_latency_pct": 12.0}]).to_csv(
        tmp_path / "results/pipeline/rpi4/table.csv", index=False)
    (tmp_path / "results/models/mnv2-pruned").mkdir(parents=True)
    (tmp_path / "results/models/mnv2-pruned/prune_report.json").write_text(json.dumps(
        {"model": "mnv2-pruned", "from": "mnv2", "settings": {"ratio": 0.15},
         "iterations": [{"iteration": i, "params": p, "macs": 10 * p, "top1": 0.4} for i, p in enumerate((100, 80, 64))]}))
    tables = read_sources(tmp_path)
    assert tables["summary"] is None and tables["detection"] is None
    assert list(tables["pipeline"]["device"]) == ["rpi4"]
    pruning = tables["pruning"].set_index("prune_iteration")
    assert list(pruning["params"]) == [100, 80, 64] and (pruning["prune_ratio"] == 0.15).all()


def test_cli_errors_are_one_line(tmp_path):
    params = write_params(tmp_path / "params.yaml", base_params())
    result = run_module("papers", "--paper", "nosuchpaper", "--params", params, "--out", tmp_path / "o")
    assert_one_line_error(result, "nosuchpaper", "unknown paper")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.csv").write_bytes(b"\x00\xff\xfe garbage \x00")
    result = run_module("papers", "--paper", YUV, "--params", params, "--results-root", tmp_path,
                        "--out", tmp_path / "o")
    assert_one_line_error(result, "summary.csv")
    assert not (tmp_path / "o" / "table.md").exists()


def test_broken_mapping_names_the_key(tmp_path):
    root = tmp_path / "papers"
    (root / YUV).mkdir(parents=True)
    (root / f"{YUV}.yaml").write_text((REPO / PAPERS_DIR / f"{YUV}.yaml").read_text())
    for name in ("small", "full"):
        (root / YUV / f"{name}.yaml").write_text("{}\n")
    mapping = yaml.safe_load((REPO / PAPERS_DIR / YUV / "mapping.yaml").read_text())
    mapping["tables"][0]["rows"][0]["compare"] = "sometimes"
    (root / YUV / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    with pytest.raises(UserError, match=r"key 'tables.0.rows.0.compare': got 'sometimes'"):
        load_paper(YUV, root)
