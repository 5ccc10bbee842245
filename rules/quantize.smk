rule quantize_onnx:
    """ONNX Runtime post-training quantization (dynamic, or static with the packed calibration split)."""
    output:
        onnx="results/artifacts/{model}/{artifact}.onnx",
        report="results/artifacts/{model}/{artifact}.json",
    input:
        model="results/artifacts/{model}/onnx-fp32.onnx",
        calib=packed("calib.npy"),
        manifest=packed("manifest.json"),
        code="workflow/quantize.py",
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "quantize")) or "^$",
    params:
        options=lambda wc: quantize_args(P, wc.artifact),
        settings=lambda wc: P["artifacts"][wc.artifact],
    log:
        "logs/quantize_onnx/{model}/{artifact}.log",
    conda:
        "../envs/export.yaml"
    shell:
        "python -m workflow.quantize --params params.yaml --model {input.model} {params.options} "
        "--calib {input.calib} --manifest {input.manifest} --out {output.onnx}"
        " > {log} 2>&1"
