rule aggregate:
    """One row per (model, input format, precision, runtime, device): results/summary.csv and .md."""
    output:
        report("results/summary.csv", category="Summary", caption="../workflow/report/summary.rst"),
        "results/summary.md",
    input:
        summary_inputs,
        "workflow/aggregate.py",
        "workflow/accuracy.py",
    log:
        "logs/aggregate.log",
    conda:
        "../envs/aggregate.yaml"
    shell:
        "python -m workflow.aggregate --params params.yaml --results results --out results/summary.csv"
        " > {log} 2>&1"
