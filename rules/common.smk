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
