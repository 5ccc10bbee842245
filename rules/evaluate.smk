rule evaluate:
    """Top-1 of an exported artifact on the packed test split, run by its own runtime."""
    output:
        "results/eval/{model}/{artifact}.json",
    input:
        artifact=lambda wc: artifact_path(wc.model, wc.artifact),
        report=lambda wc: report_path(wc.model, wc.artifact),
        test=packed("test.npy"),
        manifest=packed("manifest.json"),
        code=["workflow/evaluate.py", "workflow/accuracy.py"],
    params:
        evaluate=lambda wc: P["evaluate"],
    threads: P["evaluate"]["num_threads"]
    log:
        "logs/evaluate/{model}/{artifact}.log",
    conda:
        "../envs/export.yaml"
    shell:
        "python -m workflow.evaluate --params params.yaml --artifact {input.artifact} --packed {input.test} "
        "--manifest {input.manifest} --out {output}"
        " > {log} 2>&1"
