rule pipeline_bench:
    """Seed 000 §7-8: resize + YUV->RGB + infer (RGB model) vs resize + infer (YUV model) per resolution."""
    output:
        table="results/pipeline/{device}/table.csv",
        fig20="results/pipeline/{device}/fig20.csv",
        metrics="results/pipeline/{device}/pipeline.json",
    input:
        rgb=artifact_path(PIPELINE["rgb_model"], "onnx-fp32"),
        yuv=artifact_path(PIPELINE["yuv_model"], "onnx-fp32"),
        inventory=lambda wc: device_deps(P, wc.device),
        code=["workflow/pipeline_bench.py", "workflow/benchmark.py", "workflow/device_runner.py",
              "workflow/remote.py"],
    params:
        pipeline=lambda wc: PIPELINE,
        emulated=lambda wc: P["benchmark"]["emulated"],
    threads: PIPELINE["workers"]
    resources:
        **{f"device_{d}": (lambda wc, d=d: int(wc.device == d)) for d in DEVICES},
    log:
        "logs/pipeline_bench/{device}.log",
    conda:
        "../envs/benchmark.yaml"
    shell:
        "python -m workflow.pipeline_bench --params params.yaml --device {wildcards.device} "
        "--rgb-model {input.rgb} --yuv-model {input.yuv} --out {output.metrics}"
        " > {log} 2>&1"
