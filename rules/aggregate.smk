def summary_inputs(wildcards):
    files = []
    for model in MODELS:
        files.append(f"results/models/{model}/train_metrics.json")
        for artifact in ARTIFACTS:
            files.append(f"results/eval/{model}/{artifact}.json")
            files += [f"results/bench/{device}/{model}/{artifact}.json" for device in DEVICES]
    return files + pipeline_targets()


rule aggregate:
    """One row per (model, input format, precision, runtime, device): results/summary.csv and .md."""
    output:
        report("results/summary.csv", category="Summary", caption="../workflow/report/summary.rst"),
        "results/summary.md",
    input:
        summary_inputs,
        "workflow/aggregate.py",
    conda:
        "../envs/aggregate.yaml"
    shell:
        "python -m workflow.aggregate --params params.yaml --results results --out results/summary.csv"
