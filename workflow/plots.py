"""Plots of the results (PNG and SVG, axes with units), readable at their default size.

    python -m workflow.plots --params params.yaml --summary results/summary.csv --out results/plots

* ``pareto-<device>``: top-1 (with its 95 % interval) vs batch-1 latency per device, the Pareto
  front drawn through the points no other point beats on both;
* ``bubble``: seed 001's chart: latency, accuracy and (marker area) file size;
* ``yuv_gain_vs_area``: seed 000's Fig. 20, latency gain of YUV 4:2:0 over RGB vs image
  area: the published points and the pipeline benchmark's, each with its models' input size,
  and a note when the run cannot test the paper's claim;
* ``latency_distribution`` and ``first_run_ratio``: seed 004's Figs. 5.9-5.10, one small panel
  per model and device: the distribution of every timed run per artifact and delegate (min,
  median, 99 % quantile, max marked), and the first run and the slowest later run as ratios of
  the median.

Points are told apart by colour (model), marker (artifact) and fill (open: TF Lite's builtin
kernels, filled: XNNPACK or ONNX Runtime) and named in a legend beside the axes, never by text
on the canvas, so that close points cannot hide each other's labels.

A figure whose data has not been produced says so on the canvas ("not run: ..."); it is never
filled with other numbers.
"""
import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "edge-vision-repro"  # stable SVG ids: same data, same bytes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from workflow.config import load_params  # noqa: E402
from workflow.errors import UserError, cli  # noqa: E402
from workflow.io import atomic_path, read_json  # noqa: E402
from workflow.schema import read_yaml  # noqa: E402
from workflow.layout import PAPERS_DIR, PLOT_FORMATS, PLOTS_DIR, SOURCES, YUV_GAIN_REFERENCE, plot_files  # noqa: E402

YUV_PAPER = YUV_GAIN_REFERENCE.stem
COLOURS = plt.get_cmap("tab10").colors
MARKERS = "osD^vP*Xh<>p"
DELEGATES = {"xnnpack": "XNNPACK", "none": "builtin kernels", "CPUExecutionProvider": "ORT CPU"}
OPEN_DELEGATES = {"none"}  # drawn as open markers
PANEL_COLUMNS = 2  # small multiples per row


def save(fig, out, name):
    for ext in PLOT_FORMATS:
        with atomic_path(Path(out) / f"{name}.{ext}") as tmp:
            # metadata without dates: the same data gives the same file
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight",
                        metadata={"Date": None} if ext == "svg" else {"Software": None})
    plt.close(fig)


def not_run(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=10,
            bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#999999"})


def delegate_label(delegate):
    if delegate is None or (isinstance(delegate, float) and math.isnan(delegate)) or delegate == "":
        return "no delegate"
    return DELEGATES.get(delegate, str(delegate).replace("ExecutionProvider", ""))


def point_styles(rows):
    """{row index: (colour, marker, open, label)}: colour per model, marker per artifact, open marker for
    TF Lite's builtin kernels; the label names model, artifact and delegate (and the device if several)."""
    models = list(dict.fromkeys(rows["model"]))
    artifacts = list(dict.fromkeys(rows["artifact"]))
    several_devices = rows["device"].nunique() > 1
    styles = {}
    for i, r in rows.iterrows():
        label = f"{r['model']} · {r['artifact']} · {delegate_label(r.get('delegate'))}"
        if several_devices:
            label += f" · {r['device']}"
        colour = COLOURS[models.index(r["model"]) % len(COLOURS)]
        marker = MARKERS[artifacts.index(r["artifact"]) % len(MARKERS)]
        styles[i] = (colour, marker, r.get("delegate") in OPEN_DELEGATES, label)
    return styles


def scatter_points(ax, rows, styles, sizes=None):
    """One marker per row, in the order of the legend (sorted by label)."""
    handles = []
    for i in sorted(styles, key=lambda k: styles[k][3]):
        colour, marker, hollow, label = styles[i]
        r = rows.loc[i]
        ax.scatter(r["latency_p50_ms"], 100 * r["top1"], s=40 if sizes is None else sizes[i], marker=marker,
                   facecolors="none" if hollow else colour, edgecolors=colour, linewidths=1.2,
                   alpha=0.85 if sizes is None else 0.55, zorder=3)
        handles.append(Line2D([], [], linestyle="", marker=marker, markersize=6, color=colour,
                              markerfacecolor="none" if hollow else colour, label=label))
    return handles


def legend_beside(ax, handles, title):
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
              title_fontsize=8, ncol=1 if len(handles) <= 40 else 2, frameon=False, borderaxespad=0.0)


def ok_rows(summary):
    if "status" in summary.columns:
        summary = summary[summary["status"] == "ok"]
    return summary.dropna(subset=["top1", "latency_p50_ms"])


def pareto_front(points):
    """Indices of the points with no other point both faster and more accurate (latency up, accuracy up)."""
    front, best = [], -1.0
    for idx, (latency, accuracy) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        if accuracy > best:
            front.append(idx)
            best = accuracy
    return front


def plot_pareto(summary, device, out):
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    rows = ok_rows(summary)
    rows = rows[rows["device"] == device]
    if rows.empty:
        not_run(ax, f"not run: no benchmarked artifact on device '{device}'")
        ax.set_title(f"Accuracy vs latency on {device}")
    else:
        handles = scatter_points(ax, rows, point_styles(rows))
        if {"top1_ci_low", "top1_ci_high"} <= set(rows.columns):  # 95 % interval of each top-1
            ax.vlines(rows["latency_p50_ms"], 100 * rows["top1_ci_low"], 100 * rows["top1_ci_high"],
                      color="#bbbbbb", linewidth=0.8, zorder=1)
        points = {i: (r.latency_p50_ms, 100 * r.top1) for i, r in rows.iterrows()}
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="#c44e52", zorder=2)
        handles.append(Line2D([], [], linestyle="--", color="#c44e52", label="Pareto front"))
        legend_beside(ax, handles, "model · artifact · delegate")
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
        threads = ", ".join(str(int(t)) for t in sorted(rows["threads"].dropna().unique()))
        ax.set_title(f"Accuracy vs latency on {device} (batch 1, {threads} thread(s); bars: 95 % interval)")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    save(fig, out, f"pareto-{device}")


def plot_bubble(summary, out):
    rows = ok_rows(summary).dropna(subset=["size_bytes"])
    fig, ax = plt.subplots(figsize=(10.5, max(5.2, 1.2 + 0.16 * len(rows))))  # room for one legend line per point
    if rows.empty:
        not_run(ax, "not run: no benchmarked artifact in results/summary.csv")
        ax.set_title("Latency, accuracy and file size")
    else:
        size_mb = rows["size_bytes"] / 1e6
        area_per_mb = 600 / max(size_mb.max(), 1e-9)  # the largest file: a 600 pt² marker
        handles = scatter_points(ax, rows, point_styles(rows), sizes=(size_mb * area_per_mb).clip(lower=8))
        legend_beside(ax, handles, "model · artifact · delegate")
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
        ax.set_title(f"Latency, accuracy and file size (seed 001's bubble chart; marker area ∝ file size, "
                     f"largest {size_mb.max():.2g} MB)")
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    save(fig, out, "bubble")


def published_yuv_gain(papers_dir=PAPERS_DIR):
    reference = read_yaml(Path(papers_dir) / f"{YUV_PAPER}.yaml", "published reference not found", "experiments")
    experiment = next(e for e in reference["experiments"] if e["id"] == "E7_cm4_hailo8_latency_throughput")
    rows = experiment["published_results"][1]["rows"]
    return [(r["w"] * r["h"] / 1e6, 100 * (r["latency_ms_rgb"] - r["latency_ms_yuv"]) / r["latency_ms_rgb"])
            for r in rows]


def paper_input_size(papers_dir=PAPERS_DIR):
    """The input size of seed 000's models, as its mapping states it (paper_setting.imgsz)."""
    mapping = read_yaml(Path(papers_dir) / YUV_PAPER / "mapping.yaml", "paper mapping not found", "tables")
    return str(mapping["paper_setting"]["imgsz"])


def reproduced_yuv_gain(pipeline):
    """{device: (model input size, [(megapixels, latency gain %)], colour conversion's share of the RGB
    pipeline's time)} from the pipeline benchmark's tables (rows with status ok)."""
    rows = pipeline[pipeline["status"] == "ok"] if "status" in pipeline.columns else pipeline
    rows = rows.dropna(subset=["gain_latency_pct"])
    out = {}
    for device, group in rows.groupby("device"):
        imgsz = str(group["imgsz"].iloc[0]) if "imgsz" in group.columns else None
        share = ((group["rgb_color_conversion_ms"] / group["rgb_latency_ms"]).mean()
                 if {"rgb_color_conversion_ms", "rgb_latency_ms"} <= set(group.columns) else None)
        out[device] = (imgsz, sorted(zip(group["width"] * group["height"] / 1e6, group["gain_latency_pct"])), share)
    return out


def plot_yuv_gain(pipeline, out, papers_dir=PAPERS_DIR):
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    paper_size = paper_input_size(papers_dir)
    published = published_yuv_gain(papers_dir)
    ax.plot(*zip(*published), "o-", color="#8c8c8c",
            label=f"published: CM4 + Hailo-8, {paper_size} models (seed 000 Fig. 20)")
    series = reproduced_yuv_gain(pipeline) if pipeline is not None else {}
    untestable = []
    for device, (imgsz, points, share) in series.items():
        size = f"{imgsz} models" if imgsz else "model input size not recorded"
        ax.plot(*zip(*points), "s-", label=f"reproduced on {device}, {size}")
        if imgsz and imgsz != paper_size:
            conversion = f", colour conversion {100 * share:.1f} % of the RGB pipeline's time" if share else ""
            untestable.append(f"{device}: {imgsz} models{conversion}")
    notes = []
    if not series:
        notes.append("reproduced: not run (no pre-processing pipeline benchmark results)")
    if untestable:
        notes.append(f"This run cannot test the paper's claim: the YUV model saves the colour conversion, which runs "
                     f"on the frame resized to the model's input ({paper_size} in the paper); at a smaller input it "
                     f"costs almost nothing ({'; '.join(untestable)}), so the difference between the two pipelines "
                     f"here is not the saving the paper measures.")
    if notes:
        fig.text(0.5, -0.02, "\n".join(notes), ha="center", va="top", fontsize=8, color="#c44e52", wrap=True)
    ax.set_xlabel("image area (megapixels)")
    ax.set_ylabel("latency gain of YUV 4:2:0 over RGB (%)")
    ax.set_title("YUV 4:2:0 latency gain vs image area (resize, colour conversion, inference)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, out, "yuv_gain_vs_area")


def run_series(bench_files):
    """[{device, model, artifact, delegate, threads, latencies (ms), first (ms)}] at each file's first
    thread count. A benchmark that failed (status failed: its reason is in summary.csv) has no runs."""
    series = []
    for path in bench_files:
        bench = read_json(path)
        for run in bench.get("runs") or [bench]:  # a .tflite benchmark has one run per XNNPACK setting
            if run.get("status") == "failed" or "threads" not in run:
                continue
            threads = sorted(run["threads"], key=int)[0]
            timed = run["threads"][threads]
            if "latencies_ms" not in timed:
                raise UserError(f"{path}: no per-run latencies (benchmarked by an older runner); rerun the benchmark")
            # LiteRT runs name their delegate; ONNX Runtime's delegate column is its providers, as in summary.csv
            delegate = run.get("delegate") or "+".join(run.get("runtime", {}).get("providers_active", []))
            series.append({"device": Path(path).parent.parent.name, "model": Path(path).parent.name,  # <d>/<m>/<a>
                           "artifact": Path(path).stem, "delegate": delegate, "threads": int(threads),
                           "latencies": timed["latencies_ms"],
                           "first": run.get("first_run_ms", bench.get("first_run_ms"))})
    return series


def panels(series):
    """The series grouped into one panel per (device, model, thread count), the panels with most series
    first (panels side by side then need about the same height)."""
    groups = {}
    for s in series:
        groups.setdefault((s["device"], s["model"], s["threads"]), []).append(s)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def small_multiples(groups, width=11.0):
    """A grid of panels (PANEL_COLUMNS wide) whose rows are as tall as their longest panel needs."""
    keys = list(groups)
    nrows = math.ceil(len(keys) / PANEL_COLUMNS)
    heights = [0.9 + 0.28 * max(len(groups[k]) for k in keys[r * PANEL_COLUMNS:(r + 1) * PANEL_COLUMNS])
               for r in range(nrows)]
    fig, axes = plt.subplots(nrows, PANEL_COLUMNS, figsize=(width, sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for key, ax in zip(keys, axes.flat):
        ax.set_ylim(len(groups[key]) - 0.5, -0.5)  # one row per series, top to bottom, whatever the panel height
        ax.set_yticks(range(len(groups[key])), [series_label(s) for s in groups[key]], fontsize=7)
        ax.set_title(panel_title(key), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    return fig, dict(zip(keys, axes.flat))


def plain_log_axis(axis):
    """A log axis labelled 0.2, 0.5, 1, 2, 5, ... instead of 2x10^-1."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def series_label(s):
    return f"{s['artifact']} · {delegate_label(s['delegate'])}"


def panel_title(key):
    device, model, threads = key
    return f"{model} on {device}, {threads} thread(s)"


def plot_latency_distribution(series, out):
    groups = panels(series)
    if not groups:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        not_run(ax, "not run: no benchmark results")
        ax.set_title("Distribution of batch-1 inference time")
        save(fig, out, "latency_distribution")
        return
    fig, axes = small_multiples(groups)
    for key, ax in axes.items():
        members = groups[key]
        ys = range(len(members))
        ax.violinplot([s["latencies"] for s in members], positions=list(ys), orientation="horizontal",
                      showextrema=False, widths=0.8)
        for y, s in zip(ys, members):
            q = pd.Series(s["latencies"]).quantile([0.0, 0.5, 0.99, 1.0])
            for value, marker, name in zip(q, ("|", "o", "d", "^"), ("min", "median", "99 % quantile", "max")):
                ax.scatter(value, y, marker=marker, color="black", s=16, zorder=3, label=name if y == 0 else None)
        ax.set_xscale("log")  # the slowest runs are far above the median (seed 004 Fig. 5.9)
        plain_log_axis(ax.xaxis)
        ax.grid(axis="x", alpha=0.3, which="both")
    for ax in list(axes.values())[-PANEL_COLUMNS:]:
        ax.set_xlabel("inference time per run (ms, log scale)", fontsize=8)
    first = next(iter(axes.values()))
    fig.legend(*first.get_legend_handles_labels(), loc="upper right", fontsize=8, ncol=4, frameon=False)
    fig.suptitle("Distribution of batch-1 inference time (timed runs after warm-up)", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save(fig, out, "latency_distribution")


def plot_first_run_ratio(series, out):
    groups = panels(series)
    if not groups:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        not_run(ax, "not run: no benchmark results")
        ax.set_title("First execution vs the slowest later run")
        save(fig, out, "first_run_ratio")
        return
    fig, axes = small_multiples(groups)
    for key, ax in axes.items():
        members = groups[key]
        ys = list(range(len(members)))
        medians = [pd.Series(s["latencies"]).median() for s in members]
        ax.barh([y - 0.2 for y in ys], [s["first"] / m for s, m in zip(members, medians)], height=0.4,
                color="#dd8452", label="first run / median")
        ax.barh([y + 0.2 for y in ys], [max(s["latencies"]) / m for s, m in zip(members, medians)], height=0.4,
                color="#4c72b0", label="max of timed runs / median")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.values())[-PANEL_COLUMNS:]:
        ax.set_xlabel("ratio to the median inference time (×)", fontsize=8)
    first = next(iter(axes.values()))
    fig.legend(*first.get_legend_handles_labels(), loc="upper right", fontsize=8, ncol=2, frameon=False)
    fig.suptitle("First execution vs the slowest later run", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save(fig, out, "first_run_ratio")


def make_plots(params, summary_path, bench_files, out, pipeline_tables=(), papers_dir=PAPERS_DIR):
    try:
        summary = pd.read_csv(summary_path)
    except FileNotFoundError:
        raise UserError(f"{summary_path}: file not found (run the aggregate stage)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{summary_path}: not a readable CSV table ({str(err).splitlines()[0]})") from None
    # one table per device: results/pipeline/<device>/table.csv
    pipeline = pd.concat([pd.read_csv(path).assign(device=Path(path).parent.name) for path in pipeline_tables],
                         ignore_index=True) if pipeline_tables else None
    for device in params["benchmark"]["devices"]:
        plot_pareto(summary, device, out)
    plot_bubble(summary, out)
    plot_yuv_gain(pipeline, out, papers_dir)
    series = run_series(bench_files)
    plot_latency_distribution(series, out)
    plot_first_run_ratio(series, out)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--summary", default=SOURCES["summary"])
    parser.add_argument("--pipeline", nargs="*", default=[],
                        help=f"pipeline benchmark tables, {SOURCES['pipeline']}")
    parser.add_argument("--bench", nargs="*", default=[], help="benchmark JSONs for the latency distributions")
    parser.add_argument("--out", default=PLOTS_DIR)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    make_plots(params, args.summary, args.bench, args.out, args.pipeline)
    print(f"wrote {len(plot_files(params, args.out))} files to {args.out}")


if __name__ == "__main__":
    main()
