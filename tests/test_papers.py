"""Paper tables: the mapping logic on synthesized result tables (test fixtures, not shipped), and every
shipped mapping against the published references. One test per rule of issue 15: an ambiguous selection is
an error, a size-dependent figure of a small run is not comparable, an interval straddling the tolerance is
inconclusive, a tolerance wider than the published effect is flagged, several seeds give mean ± std."""
import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, assert_one_line_error, base_params, run_module, write_params
from workflow.accuracy import pack_classes, wilson_interval
from workflow.errors import UserError
from workflow.papers import (DIFFERS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN, PAPERS, PAPERS_DIR, WITHIN,
                             build_table, detect_scale, expand_rows, load_paper, published_value, read_sources,
                             to_number, write_paper)

YUV, RTBENCH = "yuv420_mobilenetv2", "rtbench_tflite"
N = 1000  # test images of the fixtures


def summary_fixture(**overrides):
    """A summary.csv as the aggregate stage writes it (test data only)."""
    base = {"arch": "mobilenetv2", "format": "onnx", "precision": "fp32", "device": "local", "status": "ok",
            "params": 691_218, "macs": 22_000_000, "size_bytes": 2_800_000, "latency_p50_ms": 2.0, "imgsz": "32x32",
            "test_images": N, "threads": 1, "delegate": "CPUExecutionProvider", "seed": 0}
    rows = [  # a pruned variant first: the mappings select the paper's models by name
        {**base, "model": "mobilenetv2-rgb-pruned", "artifact": "onnx-fp32", "input_format": "rgb", "top1": 0.3000},
        {**base, "model": "mobilenetv2-rgb", "artifact": "onnx-fp32", "input_format": "rgb", "top1": 0.4210},
        {**base, "model": "mobilenetv2-yuv420", "artifact": "onnx-fp32", "input_format": "yuv420", "top1": 0.4150},
        {**base, "model": "mobilenetv2-rgb", "artifact": "onnx-int8-static", "input_format": "rgb",
         "precision": "int8", "quant_method": "static", "top1": 0.4100},
        {**base, "model": "mobilenetv2-yuv420", "artifact": "onnx-int8-static", "input_format": "yuv420",
         "precision": "int8", "quant_method": "static", "status": "failed", "reason": "calibration diverged",
         "top1": None},
    ]
    table = pd.DataFrame(rows)
    for column, value in overrides.items():
        table[column] = value
    return table


def tflite_rows(params=691_218, fp32_top1=0.42, int8_top1=0.41):
    """TF Lite fp32 and full-integer rows with XNNPACK and builtin kernels, as summary.csv has them."""
    base = {"model": "mobilenetv2-rgb", "arch": "mobilenetv2", "input_format": "rgb", "format": "tflite",
            "device": "local", "status": "ok", "params": params, "imgsz": "32x32", "test_images": N, "threads": 1,
            "seed": 0}
    return pd.DataFrame([
        {**base, "artifact": "tflite-fp32", "precision": "fp32", "delegate": "xnnpack", "latency_p50_ms": 0.53,
         "size_bytes": 2_800_000, "top1": fp32_top1},
        {**base, "artifact": "tflite-fp32", "precision": "fp32", "delegate": "none", "latency_p50_ms": 2.60,
         "size_bytes": 2_800_000, "top1": fp32_top1},
        {**base, "artifact": "tflite-int8-full", "precision": "int8", "quant_method": "static", "delegate": "xnnpack",
         "latency_p50_ms": 0.29, "size_bytes": 980_000, "top1": int8_top1},
        {**base, "artifact": "tflite-int8-full", "precision": "int8", "quant_method": "static", "delegate": "none",
         "latency_p50_ms": 2.00, "size_bytes": 980_000, "top1": int8_top1},
    ])


def outcomes(correct, changed=0, start=None):
    """N per-image outcomes, the first ``correct`` right; ``changed`` of them (from ``start``) flipped to wrong."""
    out = np.arange(N) < correct
    start = correct - changed if start is None else start
    out[start:start + changed] = False
    return out


def per_image(correct):
    """An evaluation's per-image fields for these outcomes: every label 0, the prediction 0 when right."""
    correct = np.asarray(correct, dtype=bool)
    return {"labels": pack_classes(np.zeros(len(correct), int)), "predictions": pack_classes(~correct)}


def eval_table(entries):
    """results/eval/<model>/<artifact>.json as read_sources stacks them: {(model, artifact[, seed]): outcomes}."""
    rows = []
    for key, correct in entries.items():
        model, artifact, *seed = key
        rows.append({"model": model, "artifact": artifact, "status": "ok", "top1": float(correct.mean()),
                     "test_images": N, **per_image(correct),
                     **({"seed": seed[0]} if seed else {})})
    return pd.DataFrame(rows)


def sources(summary=None, pipeline=None, evaluations=None, detection=None):
    return {"summary": summary, "pipeline": pipeline, "pruning": None, "detection": detection, "eval": evaluations}


def rows_by_metric(frame):
    return {r.metric: r for r in frame.itertuples()}


def applied(overlay):
    params = base_params()
    for key, value in overlay.items():
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params


@pytest.fixture
def small_params():
    _, _, overlays = load_paper(YUV, REPO / PAPERS_DIR)
    return applied(overlays["small"])


def mapping_copy(tmp_path, paper, edit):
    """config/papers copied to tmp_path with ``edit(mapping)`` applied to the paper's mapping."""
    root = tmp_path / "papers"
    (root / paper).mkdir(parents=True)
    (root / f"{paper}.yaml").write_text((REPO / PAPERS_DIR / f"{paper}.yaml").read_text())
    for name in ("small", "full"):
        (root / paper / f"{name}.yaml").write_text((REPO / PAPERS_DIR / paper / f"{name}.yaml").read_text())
    mapping = yaml.safe_load((REPO / PAPERS_DIR / paper / "mapping.yaml").read_text())
    edit(mapping)
    (root / paper / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    return root


def row_of(mapping, metric_prefix):
    return next(r for t in mapping["tables"] for r in t["rows"] if r["metric"].startswith(metric_prefix))


# ----------------------------------------------------------------------------- the shipped mappings
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


@pytest.mark.parametrize("paper", ["rtbench_tflite", "od_quant_kd_imx8", "yolov4tiny_pruning"])
def test_timing_papers_state_delegate_threads_and_input_size(paper):
    _, mapping, _ = load_paper(paper, REPO / PAPERS_DIR)
    assert {"delegate", "threads", "device"} <= set(mapping["paper_setting"])
    for table in mapping["tables"]:
        for row in expand_rows(table["rows"]):
            leaves = [row["reproduced"]] if "op" not in row["reproduced"] else [row["reproduced"]["a"],
                                                                              row["reproduced"]["b"]]
            setting = {**mapping["paper_setting"], **(table.get("paper_setting") or {})}
            sized = "imgsz" in setting or all("imgsz" in leaf.get("where", {}) for leaf in leaves)
            assert sized or "network" in row["depends_on"], row["metric"]
            for leaf in leaves:  # a timing from the summary names the delegate and the thread count it needs
                if leaf["source"] == "summary" and str(leaf["column"]).startswith("latency"):
                    assert {"delegate", "threads"} <= set(leaf["where"]), row["metric"]


def test_published_values_and_derived_figures():
    reference, mapping, _ = load_paper(YUV, REPO / PAPERS_DIR)
    rows = {r["metric"]: r for t in mapping["tables"] for r in expand_rows(t["rows"])}
    value = lambda metric: published_value(reference, rows[metric]["published"])  # noqa: E731
    assert value("top-1 RGB 4:4:4 fp32") == 67.63 and value("top-1 YUV 4:2:0 int8") == 66.6
    assert value("top-1 gap YUV - RGB, fp32") == pytest.approx(67.24 - 67.63)
    assert value("latency gain YUV vs RGB 640x360") == pytest.approx(100 * (2.75 - 2.37) / 2.75)
    assert value("parameters, YUV 4:2:0") == 3.49
    assert len([m for m in rows if m.startswith("latency RGB ")]) == 8
    # seed 003: Table 3's channel totals (2438 -> 2072 -> 1761) are the iterations, not Table 2's rows
    reference, mapping, _ = load_paper("yolov4tiny_pruning", REPO / PAPERS_DIR)
    rows = {r["metric"]: r for t in mapping["tables"] for r in expand_rows(t["rows"])}
    kept = published_value(reference, rows["channels kept by iteration 1, % of unpruned, MobileNetV2 RGB"]["published"])
    assert kept == pytest.approx(100 * 2072 / 2438)
    assert not any("83.5" in f"{published_value(reference, r['published']):.3g}" for r in rows.values())


# ----------------------------------------------------------------------------- rule 1: explicit selection
def test_timing_rows_take_the_papers_delegate(tmp_path):
    """Seed 004's Table 5.3 ran without XNNPACK: the ratio is the builtin kernels' (2.00 / 2.60), not XNNPACK's."""
    _, _, frame = build_table(RTBENCH, base_params(), sources(tflite_rows()), REPO / PAPERS_DIR)
    time = rows_by_metric(frame)["inference time, quantized / fp32"]
    assert time.reproduced == pytest.approx(100 * 2.00 / 2.60)
    xnnpack = rows_by_metric(frame)["inference time, XNNPACK / no XNNPACK"]
    assert xnnpack.reproduced == pytest.approx(100 * 0.53 / 2.60)


def test_ambiguous_selection_is_an_error_naming_the_row_and_candidates(tmp_path):
    def drop_delegate(mapping):
        row = row_of(mapping, "inference time, quantized")
        for side in ("a", "b"):
            del row["reproduced"][side]["where"]["delegate"]
    root = mapping_copy(tmp_path, RTBENCH, drop_delegate)
    with pytest.raises(UserError) as error:
        build_table(RTBENCH, base_params(), sources(tflite_rows()), root)
    message = str(error.value)
    assert "table quantized_vs_fp32, row 'inference time, quantized / fp32'" in message
    assert "delegate=xnnpack" in message and "delegate=none" in message and "aggregate" in message

    def aggregate_instead(mapping):
        drop_delegate(mapping)
        row = row_of(mapping, "inference time, quantized")
        for side in ("a", "b"):
            row["reproduced"][side]["aggregate"] = "min"
    root = mapping_copy(tmp_path / "stated", RTBENCH, aggregate_instead)
    _, _, frame = build_table(RTBENCH, base_params(), sources(tflite_rows()), root)
    assert rows_by_metric(frame)["inference time, quantized / fp32"].reproduced == pytest.approx(100 * 0.29 / 0.53)


def test_rows_repeating_one_measurement_are_not_ambiguous():
    """top-1 is measured once per artifact and repeated on each delegate's row: one value, no error."""
    _, _, frame = build_table(RTBENCH, base_params(), sources(tflite_rows()), REPO / PAPERS_DIR)
    assert rows_by_metric(frame)["top-1, quantized / fp32"].reproduced == pytest.approx(100 * 0.41 / 0.42)


# ----------------------------------------------------------------------------- rule 2: comparability per axis
def test_size_dependent_figure_of_a_small_network_is_not_comparable():
    _, _, frame = build_table(RTBENCH, base_params(), sources(tflite_rows()), REPO / PAPERS_DIR)
    size = rows_by_metric(frame)["size, quantized / fp32"]
    assert size.reproduced == pytest.approx(35.0) and size.verdict == NOT_COMPARABLE
    assert "model size: 691,218 parameters, the paper's model has 3,500,000" in size.note
    time = rows_by_metric(frame)["inference time, quantized / fp32"]
    assert time.verdict == NOT_COMPARABLE and "hardware: measured on local" in time.note
    assert "input size: 32x32, the paper's is 224x224" in time.note

    # a network of the paper's size: the size ratio is compared (35 % vs 25.71 %, tolerance 3 pp)
    _, _, frame = build_table(RTBENCH, base_params(), sources(tflite_rows(params=3_504_872)), REPO / PAPERS_DIR)
    assert rows_by_metric(frame)["size, quantized / fp32"].verdict == DIFFERS


def test_hardware_rows_compare_only_on_the_papers_device(tmp_path):
    """results/pipeline/<device>/table.csv as the pipeline benchmark writes it (one resolution here)."""
    def pipeline(imgsz, **extra):
        return pd.DataFrame([{"device": "rpi", "width": 640, "height": 360, "imgsz": imgsz, "status": "ok",
                              "rgb_latency_ms": 3.2, "yuv_latency_ms": 2.7,
                              "gain_latency_pct": 100 * (1 - 2.7 / 3.2), **extra}])
    _, _, frame = build_table(YUV, base_params(), sources(summary_fixture(), pipeline("32x32")), REPO / PAPERS_DIR)
    gain = rows_by_metric(frame)["latency gain YUV vs RGB 640x360"]
    assert gain.reproduced == pytest.approx(100 * 0.5 / 3.2) and gain.verdict == NOT_COMPARABLE
    assert "hardware: measured on rpi" in gain.note and "input size: 32x32" in gain.note
    assert rows_by_metric(frame)["latency RGB 1280x720"].verdict == NOT_RUN

    root = mapping_copy(tmp_path, YUV, lambda mapping: mapping.update(same_hardware_devices=["rpi"]))
    _, _, frame = build_table(YUV, base_params(), sources(summary_fixture(), pipeline("224x224")), root)
    rows = rows_by_metric(frame)
    assert rows["latency gain YUV vs RGB 640x360"].verdict == WITHIN  # 15.6 % vs 13.8 %, tolerance 5 pp
    assert rows["latency RGB 640x360"].verdict == DIFFERS  # 3.2 ms vs 2.75 ms: 16 % > 10 %
    # an emulated board never stands in for the paper's hardware, even when listed
    _, _, frame = build_table(YUV, base_params(), sources(summary_fixture(), pipeline("224x224",
                                                                                      device_kind="emulated")), root)
    gain = rows_by_metric(frame)["latency gain YUV vs RGB 640x360"]
    assert gain.verdict == NOT_COMPARABLE and "emulated" in gain.note


def test_method_on_another_network_shows_the_value_with_the_reason():
    _, _, frame = build_table("cifar_max78000", base_params(), sources(summary_fixture()), REPO / PAPERS_DIR)
    row = rows_by_metric(frame)["top-1 fp32 MobileNetV2 RGB"]
    assert row.reproduced == pytest.approx(42.10) and row.verdict == NOT_COMPARABLE
    assert row.note.startswith("network: different network")
    assert rows_by_metric(frame)["parameters"].verdict == NOT_RUN
    assert "ai85nascifarnet" in rows_by_metric(frame)["parameters"].note


# ----------------------------------------------------------------------------- rule 3: intervals and verdicts
def yuv_outcomes(int8_changed):
    """Per-image outcomes: RGB fp32 421 of 1000 right; RGB int8 the same but ``int8_changed`` images wrong."""
    return eval_table({("mobilenetv2-rgb", "onnx-fp32"): outcomes(421),
                       ("mobilenetv2-yuv420", "onnx-fp32"): outcomes(415),
                       ("mobilenetv2-rgb", "onnx-int8-static"): outcomes(421, changed=int8_changed)})


def test_every_accuracy_carries_its_wilson_interval(small_params):
    _, scale, frame = build_table(YUV, small_params, sources(summary_fixture()), REPO / PAPERS_DIR)
    assert scale == "small"
    fp32 = rows_by_metric(frame)["top-1 RGB 4:4:4 fp32"]
    low, high = wilson_interval(421, N)
    assert (fp32.ci_low, fp32.ci_high) == (pytest.approx(100 * low), pytest.approx(100 * high))
    assert fp32.verdict == NOT_COMPARABLE and fp32.note.startswith("scale: the small configuration ran")


def test_interval_straddling_the_tolerance_is_inconclusive(small_params):
    summary = summary_fixture()
    summary.loc[3, "top1"] = 0.410  # int8: 11 images fewer than fp32's 421
    _, _, frame = build_table(YUV, small_params, sources(summary, evaluations=yuv_outcomes(11)), REPO / PAPERS_DIR)
    drop = rows_by_metric(frame)["top-1 change int8 - fp32, RGB 4:4:4"]  # -1.1 pp vs -1.07 ± 0.5 pp
    assert drop.reproduced == pytest.approx(-1.1)
    low_ok, high_ok = -1.07 - 0.5, -1.07 + 0.5
    assert not (low_ok <= drop.ci_low and drop.ci_high <= high_ok)  # not all inside the band
    assert drop.ci_low <= high_ok and drop.ci_high >= low_ok  # not all outside it either
    assert drop.verdict == INCONCLUSIVE and "reaches across the tolerance band" in drop.note


def test_interval_outside_the_tolerance_differs_and_inside_is_within(small_params, tmp_path):
    summary = summary_fixture()
    summary.loc[3, "top1"] = 0.321  # int8 loses 100 images
    _, _, frame = build_table(YUV, small_params, sources(summary, evaluations=yuv_outcomes(100)), REPO / PAPERS_DIR)
    drop = rows_by_metric(frame)["top-1 change int8 - fp32, RGB 4:4:4"]
    assert drop.verdict == DIFFERS and drop.ci_high < -1.57

    root = mapping_copy(tmp_path, YUV, lambda m: row_of(m, "top-1 change int8").update(tolerance={"abs": 3.0}))
    summary.loc[3, "top1"] = 0.410
    _, _, frame = build_table(YUV, small_params, sources(summary, evaluations=yuv_outcomes(11)), root)
    drop = rows_by_metric(frame)["top-1 change int8 - fp32, RGB 4:4:4"]
    assert drop.verdict == WITHIN and -4.07 <= drop.ci_low and drop.ci_high <= 1.93


def test_accuracy_difference_without_per_image_outcomes_is_inconclusive(small_params):
    _, _, frame = build_table(YUV, small_params, sources(summary_fixture()), REPO / PAPERS_DIR)
    gap = rows_by_metric(frame)["top-1 gap YUV - RGB, fp32"]
    assert gap.reproduced == pytest.approx(-0.60) and pd.isna(gap.ci_low)
    assert gap.verdict == INCONCLUSIVE and "no interval" in gap.note
    drop_yuv = rows_by_metric(frame)["top-1 change int8 - fp32, YUV 4:2:0"]
    assert drop_yuv.verdict == NOT_RUN and "calibration diverged" in drop_yuv.note


def test_tolerance_wider_than_the_published_effect_is_flagged(small_params, tmp_path):
    _, _, frame = build_table(YUV, small_params, sources(), REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert "not narrower than the published effect (-0.39 pp" in rows["top-1 gap YUV - RGB, fp32"].flag
    assert not rows["top-1 change int8 - fp32, RGB 4:4:4"].flag  # ±0.5 pp < 1.07 pp
    assert not rows["top-1 RGB 4:4:4 fp32"].flag  # not an effect
    root = mapping_copy(tmp_path, YUV, lambda m: row_of(m, "top-1 change int8").update(tolerance={"abs": 1.5}))
    _, _, frame = build_table(YUV, small_params, sources(), root)
    assert rows_by_metric(frame)["top-1 change int8 - fp32, RGB 4:4:4"].flag  # the old ±1.5 pp passed no drop


# ----------------------------------------------------------------------------- several seeds
def test_several_seeds_give_mean_std_and_per_seed_values(small_params):
    summary = pd.concat([summary_fixture(seed=seed, top1=summary_fixture()["top1"] + shift)
                         for seed, shift in ((0, 0.0), (1, 0.004), (2, -0.004))], ignore_index=True)
    rgb = {0: 421, 1: 425, 2: 417}
    evaluations = eval_table({("mobilenetv2-rgb", artifact, seed): outcomes(rgb[seed], changed=changed)
                              for seed in rgb for artifact, changed in (("onnx-fp32", 0), ("onnx-int8-static", 11))})
    _, _, frame = build_table(YUV, small_params, sources(summary, evaluations=evaluations), REPO / PAPERS_DIR)
    fp32 = rows_by_metric(frame)["top-1 RGB 4:4:4 fp32"]
    assert fp32.reproduced == pytest.approx(42.1) and fp32.std == pytest.approx(0.4)
    assert fp32.per_seed == "0: 42.1; 1: 42.5; 2: 41.7"
    one_seed = 100 * np.subtract(*wilson_interval(421, N)[::-1]) / 2
    assert (fp32.ci_high - fp32.ci_low) / 2 > one_seed  # the seeds' spread widens the test-set interval
    drop = rows_by_metric(frame)["top-1 change int8 - fp32, RGB 4:4:4"]
    assert drop.reproduced == pytest.approx(-1.1) and drop.std == pytest.approx(0.0, abs=1e-9)
    assert drop.verdict == INCONCLUSIVE  # the mean's interval, not one seed's value, decides


# ----------------------------------------------------------------------------- other sources, output files
def detection_fixture():
    """results/detection/summary.csv as workflow.detection.aggregate writes it (test data only)."""
    from workflow.detection.aggregate import COLUMNS

    def row(model, artifact, **fields):
        return {**dict.fromkeys(COLUMNS, None), "task": "detection", "model": model, "base_yaml": "yolov5n.yaml",
                "imgsz": "320x320", "artifact": artifact, "status": "ok", "map50_95": 0.1, "map50": 0.2,
                "size_bytes": 10_000_000, "infer_ms": 40.0, "params": 2_649_200, **fields}
    rows = [row("yolov5n", "pytorch"), row("yolov5n", "onnx-fp32"),
            row("yolov5n", "onnx-int8-dynamic", size_bytes=2_900_000, map50_95=0.09),
            row("yolov5n-kd-output", "pytorch", teacher="yolov5s", kd="output", kd_factor=1.0, map50_95=0.12),
            row("yolov4tiny-leaky0125", "pytorch", base_yaml="yolov4-tiny.yaml", leaky_slope=0.125, imgsz="224x320",
                map50=0.3),
            row("yolov4tiny-leaky01", "pytorch", base_yaml="yolov4-tiny.yaml", leaky_slope=0.1, imgsz="224x320",
                map50=0.28),
            row("yolov4tiny-leaky0125-pruned", "pytorch", base_yaml="yolov4-tiny.yaml", leaky_slope=0.125,
                imgsz="224x320", prune_ratio=0.15, prune_iteration=2, params=1_800_000, map50=0.1)]
    buffer = io.StringIO()  # through a CSV file, as read_sources reads it: empty cells come back as NaN
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return pd.read_csv(io.StringIO(buffer.getvalue()))


def test_detection_rows_are_read_from_the_detection_summary():
    tables = sources(detection=detection_fixture())
    _, _, frame = build_table("od_quant_kd_imx8", base_params(), tables, REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert rows["mAP50-95 ONNX uint8 320"].reproduced == pytest.approx(0.09)
    size = rows["file size ONNX uint8 320"]
    assert size.reproduced == pytest.approx(2.9) and size.verdict == NOT_COMPARABLE  # ultralytics 8's YOLOv5n
    assert "2,649,200 parameters, the paper's model has 1,900,000" in size.note
    assert rows["mAP50-95 baseline (no KD)"].reproduced == pytest.approx(0.1)  # empty kd cell matches ""
    assert rows["mAP50-95 OBKD teacher v5m, factor 1"].reproduced == pytest.approx(0.12)
    assert rows["mAP50-95 ONNX fp32 640"].verdict == NOT_RUN and "imgsz=640x640" in rows["mAP50-95 ONNX fp32 640"].note
    _, _, frame = build_table("yolov4tiny_pruning", base_params(), tables, REPO / PAPERS_DIR)
    rows = rows_by_metric(frame)
    assert rows["mAP, slope 0.125, 320x224x3"].reproduced == pytest.approx(30.0)  # the unpruned model
    assert rows["mAP change, slope 0.125 - 0.1, 320x224x3"].reproduced == pytest.approx(2.0)
    assert pd.isna(rows["mAP change, slope 0.125 - 0.1, 320x224x3"].ci_low)  # mAP is not a proportion
    pruned = rows["parameters after pruning, 320x224x3, Table 2 row 0"]
    assert pruned.reproduced == 1_800_000 and pruned.verdict == NOT_COMPARABLE and "network" in pruned.note


def test_written_tables(tmp_path, small_params):
    results = tmp_path / "results"
    (results / "eval" / "mobilenetv2-rgb").mkdir(parents=True)
    summary_fixture().to_csv(results / "summary.csv", index=False)
    for artifact, correct in (("onnx-fp32", outcomes(421)), ("onnx-int8-static", outcomes(421, changed=11))):
        (results / "eval" / "mobilenetv2-rgb" / f"{artifact}.json").write_text(json.dumps(
            {"status": "ok", "top1": correct.mean(), "test_images": N, **per_image(correct),
             "confusion_matrix": [[1]]}))
    scale, frame = write_paper(YUV, small_params, tmp_path / "out", results_root=tmp_path, root=REPO / PAPERS_DIR)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| top-1 change int8 - fp32, RGB 4:4:4 | pp | -1.07 | -1.1 [" in md and INCONCLUSIVE in md
    assert "| top-1 RGB 4:4:4 fp32 | % | 67.63 | 42.1 [39.08, 45.18] |" in md
    assert "±1 pp ⚠" in md and "The paper ran: 224x224 input, 3.49 M parameters" in md
    assert "`results/summary.csv` (present)" in md and "`results/pipeline/{device}/table.csv` (absent)" in md
    csv = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(csv.columns[:7]) == ["table", "metric", "unit", "published", "reproduced", "ci_low", "ci_high"]
    assert len(csv) == len(frame)
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and r"\label{tab:yuv420_mobilenetv2:accuracy}" in tex
    verdicts = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    assert verdicts["scale"] == "small" and sum(verdicts["verdicts"].values()) == len(frame)
    gap = verdicts["rows"]["accuracy/top-1 gap YUV - RGB, fp32"]
    assert gap["tolerance_wider_than_effect"] and gap["ci_low"] is None


def test_pipeline_tables_prune_reports_and_evaluations_are_read_per_folder(tmp_path):
    (tmp_path / "results/pipeline/rpi4").mkdir(parents=True)
    pd.DataFrame([{"width": 640, "height": 360, "status": "ok", "gain_latency_pct": 12.0}]).to_csv(
        tmp_path / "results/pipeline/rpi4/table.csv", index=False)
    (tmp_path / "results/models/mnv2-pruned").mkdir(parents=True)
    (tmp_path / "results/models/mnv2-pruned/prune_report.json").write_text(json.dumps(
        {"model": "mnv2-pruned", "from": "mnv2", "settings": {"ratio": 0.15},
         "iterations": [{"iteration": i, "params": p, "macs": 10 * p, "top1": 0.4}
                        for i, p in enumerate((100, 80, 64))],
         "channels": [{"layer": "conv1", "channels": [16, 12, 10]}, {"layer": "conv2", "channels": [32, 28, 24]}]}))
    (tmp_path / "results/eval/mnv2").mkdir(parents=True)
    (tmp_path / "results/eval/mnv2/tflite-fp32.json").write_text(json.dumps(
        {"status": "ok", "top1": 0.5, "test_images": 2, **per_image(np.array([True, False]))}))
    tables = read_sources(tmp_path)
    assert tables["summary"] is None and tables["detection"] is None
    assert list(tables["pipeline"]["device"]) == ["rpi4"]
    pruning = tables["pruning"].set_index("prune_iteration")
    assert list(pruning["params"]) == [100, 80, 64] and list(pruning["channels"]) == [48, 40, 34]
    assert tables["eval"][["model", "artifact", "top1"]].values.tolist() == [["mnv2", "tflite-fp32", 0.5]]


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


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tables"][0]["rows"][0].update(depends_on=["sometimes"]), r"tables.0.rows.0.depends_on': got"),
    (lambda m: m["tables"][0]["rows"][0].update(depends_on=["network"]), r"tables.0.rows.0.note': depends_on network"),
    (lambda m: m.pop("paper_setting"), r"paper_setting.params': depends_on model_size needs"),
])
def test_broken_mapping_names_the_key(tmp_path, edit, message):
    root = mapping_copy(tmp_path, YUV, edit)
    with pytest.raises(UserError, match=message):
        load_paper(YUV, root)
