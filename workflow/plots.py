"""Plots of the results (PNG and SVG, axes with units).

    python -m workflow.plots --params params.yaml --summary results/summary.csv --out results/plots

* ``pareto-<device>``: top-1 vs batch-1 latency per device, the Pareto front drawn through
  the points no other point beats on both;
* ``bubble``: seed 001's chart: latency, accuracy and (bubble area) file size;
* ``yuv_gain_vs_area``: seed 000's Fig. 20, latency gain of YUV 4:2:0 over RGB vs image
  area: the published points, and the pipeline benchmark's when it has run;
* ``latency_distribution`` and ``first_run_ratio``: seed 004's Figs. 5.9-5.10, the
  distribution of every timed run per model (min, median, 99 % quantile, max marked) and the
  first run and the slowest later run as ratios of the median.

A figure whose data has not been produced says so on the canvas ("not run: ..."); it is never
filled with other numbers.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "edge-vision-repro"  # stable SVG ids: same data, same bytes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from workflow.config import load_params  # noqa: E402
from workflow.errors import UserError, cli  # noqa: E402
from workflow.io import atomic_path, read_json  # noqa: E402
from workflow.layout import PAPERS_DIR, PLOT_FORMATS, PLOTS_DIR, SOURCES, YUV_GAIN_REFERENCE, plot_files  # noqa: E402

YUV_PAPER = YUV_GAIN_REFERENCE.stem


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


def label_of(row):
    return f"{row['model']} {row['artifact']}"


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
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rows = ok_rows(summary)
    rows = rows[rows["device"] == device]
    if rows.empty:
        not_run(ax, f"not run: no benchmarked artifact on device '{device}'")
    else:
        points = {i: (r.latency_p50_ms, 100 * r.top1) for i, r in rows.iterrows()}
        ax.scatter([p[0] for p in points.values()], [p[1] for p in points.values()], color="#4c72b0", zorder=3)
        for i, r in rows.iterrows():
            ax.annotate(label_of(r), points[i], textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="#c44e52",
                label="Pareto front", zorder=2)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("batch-1 latency p50 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs latency on {device}")
    ax.grid(alpha=0.3)
    save(fig, out, f"pareto-{device}")


def plot_bubble(summary, out):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rows = ok_rows(summary).dropna(subset=["size_bytes"])
    if rows.empty:
        not_run(ax, "not run: no benchmarked artifact in results/summary.csv")
    else:
        size_mb = rows["size_bytes"] / 1e6
        scale = 1500 / max(size_mb.max(), 1e-9)
        for (model, device), group in rows.groupby(["model", "device"]):
            ax.scatter(group["latency_p50_ms"], 100 * group["top1"], s=group["size_bytes"] / 1e6 * scale,
                       alpha=0.5, label=f"{model} on {device}")
            for _, r in group.iterrows():
                ax.annotate(f"{r['artifact']}\n{r['size_bytes'] / 1e6:.2f} MB", (r["latency_p50_ms"], 100 * r["top1"]),
                            fontsize=7, ha="center", va="center")
        ax.legend(fontsize=7, loc="best", markerscale=0.3)
    ax.set_xlabel("batch-1 latency p50 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Latency, accuracy and file size (bubble area ∝ MB)")
    ax.grid(alpha=0.3)
    save(fig, out, "bubble")


def published_yuv_gain(papers_dir=PAPERS_DIR):
    reference = yaml.safe_load((Path(papers_dir) / f"{YUV_PAPER}.yaml").read_text())
    experiment = next(e for e in reference["experiments"] if e["id"] == "E7_cm4_hailo8_latency_throughput")
    rows = experiment["published_results"][1]["rows"]
    return [(r["w"] * r["h"] / 1e6, 100 * (r["latency_ms_rgb"] - r["latency_ms_yuv"]) / r["latency_ms_rgb"])
            for r in rows]


def reproduced_yuv_gain(pipeline):
    """{device: [(megapixels, latency gain %)]} from the pipeline benchmark's tables (rows with status ok)."""
    rows = pipeline[pipeline["status"] == "ok"] if "status" in pipeline.columns else pipeline
    rows = rows.dropna(subset=["gain_latency_pct"])
    return {device: sorted(zip(group["width"] * group["height"] / 1e6, group["gain_latency_pct"]))
            for device, group in rows.groupby("device")}


def plot_yuv_gain(pipeline, out, papers_dir=PAPERS_DIR):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    published = published_yuv_gain(papers_dir)
    ax.plot(*zip(*published), "o-", color="#8c8c8c", label="published (CM4 + Hailo-8, seed 000 Fig. 20)")
    series = reproduced_yuv_gain(pipeline) if pipeline is not None else {}
    for device, points in series.items():
        ax.plot(*zip(*points), "s-", label=f"reproduced on {device}")
    if not series:
        ax.text(0.5, -0.2, "reproduced: not run (no pre-processing pipeline benchmark results)",
                transform=ax.transAxes, ha="center", va="top", fontsize=8, color="#c44e52")
    ax.set_xlabel("image area (megapixels)")
    ax.set_ylabel("latency gain of YUV 4:2:0 over RGB (%)")
    ax.set_title("YUV 4:2:0 latency gain vs image area")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, out, "yuv_gain_vs_area")


def run_series(bench_files):
    """[(label, latencies in ms, first run in ms)] at each file's first thread count.

    A benchmark that failed (status failed: its reason is in summary.csv) has no runs to draw."""
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
            delegate = f", {run['delegate']}" if run.get("delegate") else ""
            device, model = Path(path).parent.parent.name, Path(path).parent.name  # results/bench/<d>/<m>/<a>.json
            label = f"{model}\n{Path(path).stem}{delegate}\n{device}, {threads} thr"
            series.append((label, timed["latencies_ms"], run.get("first_run_ms", bench.get("first_run_ms"))))
    return series


def plot_latency_distribution(series, out):
    fig, ax = plt.subplots(figsize=(max(6.4, 2.0 * len(series)), 4.4))
    if not series:
        not_run(ax, "not run: no benchmark results")
    else:
        data = [s[1] for s in series]
        ax.set_yscale("log")  # the slowest runs are far above the median (seed 004 Fig. 5.9)
        ax.violinplot(data, showextrema=False)
        for i, values in enumerate(data, start=1):
            q = pd.Series(values).quantile([0.0, 0.5, 0.99, 1.0])
            for value, marker, name in zip(q, ("v", "o", "d", "^"), ("min", "median", "99 % quantile", "max")):
                ax.scatter(i, value, marker=marker, color="black", s=18, zorder=3, label=name if i == 1 else None)
        ax.set_xticks(range(1, len(series) + 1), [s[0] for s in series], fontsize=7)
        ax.legend(fontsize=7)
    ax.set_ylabel("inference time per run (ms, log scale)")
    ax.set_title("Distribution of batch-1 inference time (timed runs after warm-up)")
    ax.grid(axis="y", alpha=0.3)
    save(fig, out, "latency_distribution")


def plot_first_run_ratio(series, out):
    fig, ax = plt.subplots(figsize=(max(6.4, 2.0 * len(series)), 4.4))
    if not series:
        not_run(ax, "not run: no benchmark results")
    else:
        xs = range(len(series))
        medians = [pd.Series(s[1]).median() for s in series]
        first = [s[2] / m for s, m in zip(series, medians)]
        rest = [max(s[1]) / m for s, m in zip(series, medians)]
        ax.bar([x - 0.2 for x in xs], first, width=0.4, color="#dd8452", label="first run / median")
        ax.bar([x + 0.2 for x in xs], rest, width=0.4, color="#4c72b0", label="max of timed runs / median")
        ax.set_xticks(list(xs), [s[0] for s in series], fontsize=7)
        ax.legend(fontsize=8)
    ax.set_ylabel("ratio to the median inference time (×)")
    ax.set_title("First execution vs the slowest later run")
    ax.grid(axis="y", alpha=0.3)
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
