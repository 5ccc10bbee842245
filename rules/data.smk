rule pack:
    """Pack the dataset source into single-file train/test/calib splits of one color format."""
    output:
        "data/packed/{fmt}/train.npy",
        "data/packed/{fmt}/test.npy",
        "data/packed/{fmt}/calib.npy",
        "data/packed/{fmt}/manifest.json",
    input:
        "workflow/pack.py",
        "workflow/datasets.py",
        "workflow/colorspace.py",
    params:
        data=lambda wc: {"seed": P["seed"], "data": P["data"]},
    log:
        "logs/pack/{fmt}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow.pack --params params.yaml --format {wildcards.fmt} --out data/packed/{wildcards.fmt}"
        " > {log} 2>&1"
