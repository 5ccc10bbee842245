from workflow.plots import plot_files

report: "../workflow/report/workflow.rst"

PLOTS = next(stage for stage in DAG_STAGES if stage.name == "plots")
PLOT_CAPTIONS = {"pareto": "Pareto front", "bubble": "Bubble chart", "yuv_gain_vs_area": "YUV gain",
                 "latency_distribution": "Latency distribution", "first_run_ratio": "First run"}


rule plots:
    """Accuracy-latency Pareto fronts, bubble chart, YUV gain vs area, latency distributions (PNG + SVG)."""
    output:
        [plot_output(path) for path in plot_files(P)],
    input:
        PLOTS.deps,
    log:
        "logs/plots.log",
    conda:
        "../envs/report.yaml"
    shell:
        PLOTS.cmd + " > {log} 2>&1"
