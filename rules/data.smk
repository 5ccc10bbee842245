rule pack_train:
    """Pack the training split once, in RGB, for every input format (raw pixels, or JPEG shards + index)."""
    output:
        directory("data/packed/train"),
    input:
        "workflow/pack.py",
        "workflow/sources.py",
        "workflow/datasets.py",
    params:
        data=lambda wc: {"seed": P["seed"], **{k: P["data"][k] for k in TRAIN_KEYS}},
    threads: P["data"]["pack_workers"]
    log:
        "logs/pack/train.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow.pack --params params.yaml --split train --out data/packed/train > {log} 2>&1"


rule pack:
    """Pack one color format's evaluation splits (test, and calib drawn from the training subset)."""
    output:
        "data/packed/{fmt}/test.npy",
        "data/packed/{fmt}/calib.npy",
        "data/packed/{fmt}/manifest.json",
    input:
        "workflow/pack.py",
        "workflow/sources.py",
        "workflow/datasets.py",
        "workflow/colorspace.py",
    params:
        data=lambda wc: {"seed": P["seed"], **{k: P["data"][k] for k in EVAL_KEYS}},
    threads: P["data"]["pack_workers"]
    log:
        "logs/pack/{fmt}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow.pack --params params.yaml --split eval --format {wildcards.fmt} "
        "--out data/packed/{wildcards.fmt} > {log} 2>&1"
