"""Where every file of the pipeline lives: the one home of data, result, log and config paths.

The DAG (workflow.dag: dvc.yaml and the Snakemake rules), the stages, aggregate, papers, plots
and the detection track take their paths from here, so moving a file is one edit. Paths are
relative to the repository root (the working directory of every stage). Functions that name
files of a result tree take ``root`` for stages that are pointed at another tree (--results).
Light on purpose: it imports nothing but the standard library, so planning the DAG loads no
plotting or table library.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMS = "params.yaml"

# ----------------------------------------------------------------------------- data
PACKED = "data/packed"
# The training split is packed once, in RGB, for every input format (a folder: images.npy, or JPEG
# shards + index.npy); each color format has its own evaluation splits.
PACKED_TRAIN = "train"
EVAL_SPLITS = ("test", "calib")


def packed_dir(fmt, root=PACKED):
    """The packed dataset of one color format (workflow.pack --out)."""
    return f"{root}/{fmt}"


def split_file(folder, split):
    """One split of a packed dataset folder."""
    return f"{folder}/{split}.npy"


def manifest_file(folder):
    """Written last by the pack stage: its presence means every split beside it is complete."""
    return f"{folder}/manifest.json"


def packed_split(fmt, split, root=PACKED):
    return split_file(packed_dir(fmt, root), split)


def packed_manifest(fmt, root=PACKED):
    return manifest_file(packed_dir(fmt, root))


def packed_files(fmt, root=PACKED):
    """A color format's evaluation splits and manifest."""
    return [packed_split(fmt, split, root) for split in EVAL_SPLITS] + [packed_manifest(fmt, root)]


def packed_train(root=PACKED):
    """The training split's folder (workflow.pack --split train --out)."""
    return f"{root}/{PACKED_TRAIN}"


# ----------------------------------------------------------------------------- classification results
RESULTS = "results"
# An artifact's name starts with its file format: onnx-fp32, onnx-int8-static, tflite-fp16, hef-int8 ...
FILE_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "hef": ".hef"}


def file_format(artifact):
    return artifact.split("-")[0]


def model_dir(model, root=RESULTS):
    return f"{root}/models/{model}"


def checkpoint(model, root=RESULTS):
    return f"{model_dir(model, root)}/model.pt"


def train_metrics(model, root=RESULTS):
    return f"{model_dir(model, root)}/train_metrics.json"


def history(model, root=RESULTS):
    return f"{model_dir(model, root)}/history.csv"


def prune_report(model, root=RESULTS):
    return f"{model_dir(model, root)}/prune_report.json"


def epoch_checkpoints(model, root=RESULTS):
    """Per-epoch checkpoints a rerun resumes from (not a DAG output)."""
    return f"{root}/checkpoints/{model}"


def artifact_path(model, artifact, root=RESULTS, fmt=None):
    """The artifact's file; ``fmt`` names its format when ``artifact`` is a {wildcard} (a rule's pattern)."""
    return f"{root}/artifacts/{model}/{artifact}{FILE_SUFFIX[fmt or file_format(artifact)]}"


def report_path(model, artifact, root=RESULTS):
    """The JSON beside every artifact: settings, parity, checksums, and status ok/failed."""
    return f"{root}/artifacts/{model}/{artifact}.json"


def hailo_path(model, artifact, step, suffix, root=RESULTS):
    """Intermediate files of the Hailo flow: <artifact>-{parsed,quantized}.{har,json,alls}."""
    return f"{root}/hailo/{model}/{artifact}-{step}.{suffix}"


def eval_path(model, artifact, root=RESULTS):
    return f"{root}/eval/{model}/{artifact}.json"


def bench_path(device, model, artifact, root=RESULTS):
    return f"{root}/bench/{device}/{model}/{artifact}.json"


def pipeline_dir(device, root=RESULTS):
    """Seed 000's pre-processing table of one device: table.csv, fig20.csv, pipeline.json."""
    return f"{root}/pipeline/{device}"


def pipeline_json(device, root=RESULTS):
    return f"{pipeline_dir(device, root)}/pipeline.json"


SUMMARY = f"{RESULTS}/summary.csv"
SUMMARY_MD = f"{RESULTS}/summary.md"

# ----------------------------------------------------------------------------- papers and plots
PAPERS_DIR = Path("config/papers")
# A paper is a published reference config/papers/<id>.yaml with its folder (mapping.yaml,
# small.yaml, full.yaml); adding one adds its table to the DAG.
PAPERS = tuple(sorted(p.parent.name for p in (REPO / PAPERS_DIR).glob("*/mapping.yaml")
                      if (REPO / PAPERS_DIR / f"{p.parent.name}.yaml").is_file()))
PAPER_CONFIGS = ("mapping", "small", "full")


# The published points of seed 000's Fig. 20 (the plots stage draws the YUV gain beside them).
YUV_GAIN_REFERENCE = PAPERS_DIR / "yuv420_mobilenetv2.yaml"
YUV_GAIN_MAPPING = PAPERS_DIR / "yuv420_mobilenetv2" / "mapping.yaml"


def paper_dir(paper, root=RESULTS):
    return f"{root}/papers/{paper}"


def paper_inputs(paper):
    """The published reference and the paper's mapping and configurations."""
    return [f"{PAPERS_DIR}/{paper}.yaml"] + [f"{PAPERS_DIR}/{paper}/{name}.yaml" for name in PAPER_CONFIGS]


PLOTS_DIR = f"{RESULTS}/plots"
PLOT_FORMATS = ("png", "svg")


def plot_names(params):
    """Every figure of the plots stage (without extension): a Pareto front per benchmark device, then the rest."""
    return [f"pareto-{device}" for device in params["benchmark"]["devices"]] + [
        "bubble", "yuv_gain_vs_area", "latency_distribution", "first_run_ratio"]


def plot_files(params, out=PLOTS_DIR):
    return [f"{out}/{name}.{ext}" for name in plot_names(params) for ext in PLOT_FORMATS]


# ----------------------------------------------------------------------------- detection track
DET_MODEL_CONFIGS = "config/detection/models"  # model yamls of the project (others: ultralytics' own)
DET_DATA = "data/detection"
DET_RESULTS = f"{RESULTS}/detection"
DET_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
DET_PACK_DIRS = tuple(f"{DET_DATA}/{d}" for d in ("images", "labels"))
DET_PACK_FILES = tuple(f"{DET_DATA}/{f}" for f in ("data.yaml", "calib.yaml", "val_coco.json", "manifest.json"))


def det_data_file(name, root=DET_DATA):
    """data.yaml, calib.yaml, val_coco.json or manifest.json (written last) of the packed set."""
    return f"{root}/{name}"


def det_model_dir(model, root=DET_RESULTS):
    return f"{root}/models/{model}"


def det_checkpoint(model, root=DET_RESULTS):
    return f"{det_model_dir(model, root)}/model.pt"


def det_epoch_checkpoints(model, root=DET_RESULTS):
    """The ultralytics run folder a rerun resumes from (not a DAG output)."""
    return f"{root}/checkpoints/{model}"


def det_artifact_path(model, artifact, root=DET_RESULTS, fmt=None):
    return f"{root}/artifacts/{model}/{artifact}{DET_SUFFIX[fmt or file_format(artifact)]}"


def det_report_path(model, artifact, root=DET_RESULTS):
    return f"{root}/artifacts/{model}/{artifact}.json"


def det_eval_path(model, artifact, root=DET_RESULTS):
    """mAP of one artifact, or of the PyTorch model itself (artifact ``pytorch``)."""
    return f"{root}/eval/{model}/{artifact}.json"


DET_SUMMARY = f"{DET_RESULTS}/summary.csv"

# Result tables a paper mapping can read, by the name used in mapping.yaml `source:`. A {name} in
# the path matches one folder per device / model; the tables are stacked with that column.
SOURCES = {
    "summary": SUMMARY,                                      # foundation + optimization variants
    "pipeline": f"{pipeline_dir('{device}')}/table.csv",     # pre-processing pipeline per resolution
    "pruning": prune_report("{model}"),                      # parameters per pruning iteration
    "detection": DET_SUMMARY,                                # detection track
    "eval": eval_path("{model}", "{artifact}"),              # per artifact, with the per-image outcomes behind its top-1
}

# ----------------------------------------------------------------------------- DVC and Snakemake
DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
# Written by the dvc.yaml check, the first stage of every `dvc repro` (workflow.dag --check).
DVC_YAML_CHECK = f"{RESULTS}/dvc-yaml-check.txt"


def log_path(rule, *wildcards):
    """logs/<rule>/<wildcard values>.log, or logs/<rule>.log for a rule without wildcards."""
    return "/".join(("logs", rule, *wildcards)) + ".log" if wildcards else f"logs/{rule}.log"
