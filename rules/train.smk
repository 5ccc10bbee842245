rule train:
    """Train one model variant of params.yaml `models` (checkpoint every epoch, resumable; DDP by train.processes_per_node x train.nodes)."""
    output:
        "results/models/{model}/model.pt",
        metrics="results/models/{model}/train_metrics.json",
        history="results/models/{model}/history.csv",
    input:
        "data/packed/train",
        packed("test.npy"),
        packed("manifest.json"),
        "workflow/input_pipeline.py",
        TRAINING_CODE,
        # a distilled model's teacher and init checkpoints, and the KD code
        lambda wc: upstream_args(P["models"][wc.model])[1],
        lambda wc: ["workflow/distill.py"] if "distill" in P["models"][wc.model] else [],
    wildcard_constraints:
        model="|".join(TRAINED_MODELS) or "^$",
    params:
        train=lambda wc: {"seed": P["seed"], "train": P["train"], "model": P["models"][wc.model]},
        command=lambda wc: train_command(P, wc.model),
    # every process's threads on this machine (on Slurm, cpus_per_task applies to each task)
    threads: P["train"]["num_threads"] * P["train"]["processes_per_node"]
    resources:
        **job_resources(P["train"]),
    log:
        "logs/train/{model}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "{params.command} > {log} 2>&1"
