# Detection track (issue 6): pack a YOLO-format set -> train (KD, variants) -> export -> evaluate -> summary.
#   snakemake --cores 2 results/detection/summary.csv
# Wildcards are det_model / det_artifact (the Snakefile constrains `model` to the classification models).
# Commands come from workflow/detection/plan.py, the same strings workflow/dag.py writes to dvc.yaml.
if DET:
    DET_MODELS = list(DET["models"])

    wildcard_constraints:
        det_model="|".join(re.escape(m) for m in DET_MODELS),
        det_onnx="|".join(a for a in det_plan.ARTIFACTS if a.startswith("onnx")),
        det_tflite="|".join(a for a in det_plan.ARTIFACTS if a.startswith("tflite")),
        det_eval="|".join(("pytorch",) + det_plan.ARTIFACTS),

    rule det_pack:
        """Validate the YOLO-format source and write the train/val/calib split, data yamls and COCO json."""
        output:
            directory(f"{det_plan.DATA}/images"),
            directory(f"{det_plan.DATA}/labels"),
            *det_plan.PACK_OUTPUTS[2:],
        input:
            "workflow/detection/pack.py",
        params:
            data=lambda wc: {"seed": P["seed"], "data": DET["data"]},
        log:
            "logs/det_pack.log",
        conda:
            "../envs/detection.yaml"
        shell:
            f"python -m workflow.detection.pack --params params.yaml --out {det_plan.DATA} > {{log}} 2>&1"

    rule det_train:
        """Train one detection.models entry with ultralytics (offline; KD when it names a teacher)."""
        output:
            f"{det_plan.RESULTS}/models/{{det_model}}/model.pt",
            f"{det_plan.RESULTS}/models/{{det_model}}/model.yaml",
            f"{det_plan.RESULTS}/models/{{det_model}}/train_metrics.json",
            f"{det_plan.RESULTS}/models/{{det_model}}/history.csv",
        input:
            f"{det_plan.DATA}/manifest.json",
            f"{det_plan.DATA}/data.yaml",
            "workflow/detection/train.py",
            "workflow/detection/kd.py",
            "workflow/detection/modelcfg.py",
            det_local_yaml,
            det_parents,
        params:
            train=lambda wc: {"seed": P["seed"], "train": DET["train"], "model": DET["models"][wc.det_model]},
            command=lambda wc: det_plan.train_command(DET, wc.det_model),
        threads: DET["train"]["num_threads"]
        log:
            "logs/det_train/{det_model}.log",
        conda:
            "../envs/detection.yaml"
        shell:
            "{params.command} > {log} 2>&1"

    rule det_export_onnx:
        """ONNX (ultralytics exporter) and its ONNX Runtime dynamic/static int8 versions."""
        output:
            f"{det_plan.RESULTS}/artifacts/{{det_model}}/{{det_onnx}}.onnx",
            f"{det_plan.RESULTS}/artifacts/{{det_model}}/{{det_onnx}}.json",
        input:
            lambda wc: det_export_inputs(wc, wc.det_onnx),
        params:
            export=lambda wc: {"export": DET["export"], "model": DET["models"][wc.det_model]},
            command=lambda wc: det_plan.export_command(wc.det_model, wc.det_onnx),
        log:
            "logs/det_export/{det_model}/{det_onnx}.log",
        conda:
            "../envs/detection.yaml"
        shell:
            "{params.command} > {log} 2>&1"

    rule det_export_tflite:
        """LiteRT fp32 and full-integer int8 (ultralytics exporter via litert-torch)."""
        output:
            f"{det_plan.RESULTS}/artifacts/{{det_model}}/{{det_tflite}}.tflite",
            f"{det_plan.RESULTS}/artifacts/{{det_model}}/{{det_tflite}}.json",
        input:
            lambda wc: det_export_inputs(wc, wc.det_tflite),
        params:
            export=lambda wc: {"export": DET["export"], "model": DET["models"][wc.det_model]},
            command=lambda wc: det_plan.export_command(wc.det_model, wc.det_tflite),
        log:
            "logs/det_export/{det_model}/{det_tflite}.log",
        conda:
            "../envs/detection.yaml"
        shell:
            "{params.command} > {log} 2>&1"

    rule det_evaluate:
        """mAP50-95 / mAP50 (pycocotools) and the pre/inference/post time split of one artifact."""
        output:
            f"{det_plan.RESULTS}/eval/{{det_model}}/{{det_eval}}.json",
        input:
            det_eval_inputs,
        params:
            evaluate=lambda wc: DET["evaluate"],
            command=lambda wc: det_plan.evaluate_command(wc.det_model, wc.det_eval),
        threads: DET["evaluate"]["num_threads"]
        log:
            "logs/det_evaluate/{det_model}/{det_eval}.log",
        conda:
            "../envs/detection.yaml"
        shell:
            "{params.command} > {log} 2>&1"

    rule det_aggregate:
        """results/detection/summary.csv (task=detection), summary.md and the seed tables."""
        output:
            f"{det_plan.RESULTS}/summary.csv",
            f"{det_plan.RESULTS}/summary.md",
            f"{det_plan.RESULTS}/paper_tables.md",
        input:
            det_plan.summary_inputs(DET),
            "workflow/detection/aggregate.py",
        log:
            "logs/det_aggregate.log",
        conda:
            "../envs/aggregate.yaml"
        shell:
            det_plan.AGGREGATE_COMMAND + " > {log} 2>&1"
