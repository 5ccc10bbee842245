rule train:
    """Train one model variant of params.yaml `models` (checkpoint every epoch, resumable)."""
    output:
        "results/models/{model}/model.pt",
        metrics="results/models/{model}/train_metrics.json",
        history="results/models/{model}/history.csv",
    input:
        "data/packed/train",
        packed("test.npy"),
        packed("manifest.json"),
        "workflow/input_pipeline.py",
        "workflow/train.py",
        "workflow/models.py",
        # a distilled model's teacher and init checkpoints, and the KD code
        lambda wc: upstream_args(P["models"][wc.model])[1],
        lambda wc: ["workflow/distill.py"] if "distill" in P["models"][wc.model] else [],
    wildcard_constraints:
        model="|".join(TRAINED_MODELS) or "^$",
    params:
        train=lambda wc: {"seed": P["seed"], "train": P["train"], "model": P["models"][wc.model]},
        upstream=lambda wc: upstream_args(P["models"][wc.model])[0],
    threads: P["train"]["num_threads"]
    resources:
        gpu=lambda wc: int(P["train"]["device"] == "cuda"),
    log:
        "logs/train/{model}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow.train --params params.yaml --model {wildcards.model} --data data/packed "
        "--out results/models/{wildcards.model}{params.upstream}"
        " > {log} 2>&1"
