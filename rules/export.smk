rule export_onnx:
    """Export a trained model to ONNX and check it against PyTorch on real test images."""
    output:
        onnx="results/artifacts/{model}/onnx-fp32.onnx",
        meta="results/artifacts/{model}/onnx-fp32.json",
    input:
        checkpoint="results/models/{model}/model.pt",
        test=packed("test.npy"),
        code=["workflow/export.py", "workflow/models.py"],
    params:
        export=lambda wc: P["export"],
    log:
        "logs/export_onnx/{model}.log",
    conda:
        "../envs/export.yaml"
    shell:
        "python -m workflow.export --params params.yaml --checkpoint {input.checkpoint} "
        "--packed {input.test} --out {output.onnx}"
        " > {log} 2>&1"
