# Input functions shared by the rules (Snakemake's linter wants functions apart from rules).


def input_format(wildcards):
    return P["models"][wildcards.model]["input_format"]


def packed(name):
    """Input function: a file of the model's own packed color format."""
    return lambda wc: f"{PACKED}/{input_format(wc)}/{name}"


def summary_inputs(wildcards):
    files = []
    for model in MODELS:
        files.append(f"results/models/{model}/train_metrics.json")
        for artifact in artifacts_of(P, model):
            files += [report_path(model, artifact), f"results/eval/{model}/{artifact}.json"]
            files += [f"results/bench/{device}/{model}/{artifact}.json" for device in DEVICES]
    return files + pipeline_targets()


def pipeline_targets(wildcards=None):
    """The pipeline tables of every device, when benchmark.pipeline.enabled."""
    if not PIPELINE["enabled"]:
        return []
    return [f"results/pipeline/{device}/pipeline.json" for device in DEVICES]


def plot_output(path):
    """PNGs go into the report (category Plots, with a caption); SVGs are for papers."""
    if not path.endswith(".png"):
        return path
    kind = Path(path).stem.split("-")[0]
    return report(path, category="Plots", subcategory=PLOT_CAPTIONS[kind],
                  caption=f"../workflow/report/plot_{kind}.rst")


# ----------------------------------------------------------------------------- detection track
def det_local_yaml(wc):
    path = Path("config/detection/models") / DET["models"][wc.det_model]["yaml"]
    return [str(path)] if path.is_file() else []

def det_parents(wc):
    """The KD teacher's and the pruning source's checkpoints, when they are entries of this DAG."""
    parents = (det_plan.teacher_model(DET, wc.det_model), det_plan.prune_source(DET, wc.det_model))
    return [f"{det_plan.model_dir(p)}/model.pt" for p in parents if p]

def det_export_inputs(wc, artifact):
    files = [f"{det_plan.model_dir(wc.det_model)}/model.pt", f"{det_plan.DATA}/manifest.json",
             "workflow/detection/export.py", "workflow/detection/runner.py"]
    if artifact.startswith("onnx-int8"):
        files += [det_plan.artifact_path(wc.det_model, "onnx-fp32"), "workflow/quantize.py"]
    if artifact.endswith("int8"):
        files.append(f"{det_plan.DATA}/calib.yaml")
    return files

def det_eval_inputs(wc):
    files = [f"{det_plan.DATA}/manifest.json", f"{det_plan.DATA}/val_coco.json",
             "workflow/detection/evaluate.py", "workflow/detection/runner.py"]
    if wc.det_eval == "pytorch":
        return files + [f"{det_plan.model_dir(wc.det_model)}/model.pt"]
    return files + [det_plan.artifact_path(wc.det_model, wc.det_eval),
                    det_plan.report_path(wc.det_model, wc.det_eval)]



def hailo_options(step):
    """Options of one step of workflow.hailo for the job's artifact (rules/hailo.smk)."""
    return lambda wc: f" {hailo_args(P['artifacts'][wc.artifact], step)}".rstrip()
