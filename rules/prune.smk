rule prune:
    """Network slimming of a trained model (params.yaml models.<name>.prune): same outputs as train."""
    output:
        "results/models/{model}/model.pt",
        metrics="results/models/{model}/train_metrics.json",
        report="results/models/{model}/prune_report.json",
        history="results/models/{model}/history.csv",
    input:
        source=lambda wc: f"results/models/{P['models'][wc.model]['prune']['from']}/model.pt",
        data="data/packed/train",
        test=packed("test.npy"),
        manifest=packed("manifest.json"),
        code=["workflow/prune.py", "workflow/input_pipeline.py", *TRAINING_CODE],
    wildcard_constraints:
        model="|".join(PRUNED_MODELS) or "^$",
    params:
        prune=lambda wc: {"seed": P["seed"], "train": P["train"], "model": P["models"][wc.model]},
    threads: P["train"]["num_threads"]
    resources:
        gpu=lambda wc: int(P["train"]["device"] == "cuda"),
    log:
        "logs/prune/{model}.log",
    conda:
        "../envs/optimize.yaml"
    shell:
        "python -m workflow.prune --params params.yaml --model {wildcards.model} --source {input.source} "
        "--data data/packed --out results/models/{wildcards.model}"
        " > {log} 2>&1"
