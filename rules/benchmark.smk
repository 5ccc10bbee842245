rule benchmark:
    """Latency, throughput and memory of an artifact on a device, by the self-contained runner."""
    output:
        "results/bench/{device}/{model}/{artifact}.json",
    input:
        artifact=lambda wc: artifact_path(wc.model, wc.artifact),
        report=lambda wc: report_path(wc.model, wc.artifact),
        test=packed("test.npy"),
        manifest=packed("manifest.json"),
        inventory=lambda wc: device_deps(P, wc.device),
        code=["workflow/benchmark.py", "workflow/device_runner.py", "workflow/remote.py"],
    params:
        benchmark=lambda wc: {k: P["benchmark"][k] for k in benchmark_keys(wc.artifact)},
    threads: max(P["benchmark"]["threads"])
    resources:
        # One benchmark at a time per board (limits set in the Snakefile: a pool's size), so runs
        # never compete for a board's cores while other devices and stages go on in parallel;
        # the device lock (workflow/remote.py) picks the free board of a pool.
        **{f"device_{d}": (lambda wc, d=d: int(wc.device == d)) for d in DEVICES},
    log:
        "logs/benchmark/{device}/{model}/{artifact}.log",
    conda:
        "../envs/benchmark.yaml"
    shell:
        "python -m workflow.benchmark --params params.yaml --device {wildcards.device} "
        "--model-name {wildcards.model} --artifact {input.artifact} --packed {input.test} "
        "--manifest {input.manifest} --out {output}"
        " > {log} 2>&1"
