rule qat:
    """PyTorch quantization-aware fine-tuning of a trained model, exported as ONNX QDQ."""
    output:
        model="results/artifacts/{model}/{artifact}.onnx",
        report="results/artifacts/{model}/{artifact}.json",
    input:
        checkpoint="results/models/{model}/model.pt",
        reference="results/artifacts/{model}/onnx-fp32.onnx",
        data="data/packed/train",
        test=packed("test.npy"),
        calib=packed("calib.npy"),
        manifest=packed("manifest.json"),
        code=["workflow/qat.py", "workflow/input_pipeline.py", *TRAINING_CODE],
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "qat")) or "^$",
    params:
        options=lambda wc: qat_args(P["artifacts"][wc.artifact]),
        settings=lambda wc: {"seed": P["seed"], "train": P["train"], "export": P["export"],
                             "calib_subset": P["data"]["calib_subset"], "qat": P["artifacts"][wc.artifact]},
    threads: P["train"]["num_threads"]
    log:
        "logs/qat/{model}/{artifact}.log",
    conda:
        "../envs/optimize.yaml"
    shell:
        "python -m workflow.qat --params params.yaml --checkpoint {input.checkpoint} --reference {input.reference} "
        "--data data/packed {params.options} --out {output.model}"
        " > {log} 2>&1"
