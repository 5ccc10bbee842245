rule convert_tflite:
    """TFLite conversion (onnx2tf from the fp32 ONNX, or litert-torch from the checkpoint), parity-checked."""
    output:
        model="results/artifacts/{model}/{artifact}.tflite",
        report="results/artifacts/{model}/{artifact}.json",
    input:
        model="results/artifacts/{model}/onnx-fp32.onnx",
        checkpoint=lambda wc: ([f"results/models/{wc.model}/model.pt"]
                               if P["artifacts"][wc.artifact]["tflite"].get("converter") == "litert_torch" else []),
        calib=packed("calib.npy"),
        manifest=packed("manifest.json"),
        code=["workflow/tflite.py", "workflow/litert.py"],
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "tflite")) or "^$",
    params:
        options=lambda wc: tflite_args(P, wc.artifact, wc.model),
        settings=lambda wc: P["artifacts"][wc.artifact],
    log:
        "logs/tflite/{model}/{artifact}.log",
    conda:
        "../envs/tflite.yaml"
    shell:
        "python -m workflow.tflite --params params.yaml --model {input.model} {params.options} "
        "--calib {input.calib} --manifest {input.manifest} --out {output.model}"
        " > {log} 2>&1"
