"""The pipeline's stages, expanded from params.yaml; writes dvc.yaml.

    python -m workflow.dag            # rewrite dvc.yaml from params.yaml
    python -m workflow.dag --check    # exit 1 if dvc.yaml is out of date

The Snakefile (rules/*.smk) declares the same stages as wildcard rules;
tests/test_dag_parity.py checks that Snakemake's jobs and these DVC stages have
the same commands, outputs and inputs.
"""
import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workflow.config import load_params
from workflow.distributed import launch_command
from workflow.errors import cli
from workflow.model_specs import qat_settings, upstream_models

PARAMS = "params.yaml"
PACKED = "data/packed"
PACKED_TRAIN = f"{PACKED}/train"  # the training split (a folder: images.npy, or JPEG shards + index.npy)
FORMATS = ("rgb", "yuv420")
# The training library and what it builds on: code of the train, prune and QAT stages.
TRAINING_CODE = ["workflow/train.py", "workflow/training.py", "workflow/distributed.py", "workflow/models.py"]
# An artifact's name starts with its file format: onnx-fp32, onnx-int8-static, tflite-fp16 ...
FILE_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "hef": ".hef"}
BENCHMARK_KEYS = ("warmup_runs", "min_runs", "min_duration_s", "threads", "samples", "stream_workers",
                  "perf_counters", "rt")
# benchmark params that only some formats read
FORMAT_BENCHMARK_KEYS = {"tflite": ("litert_xnnpack",)}


def benchmark_keys(artifact):
    return BENCHMARK_KEYS + FORMAT_BENCHMARK_KEYS.get(artifact.split("-")[0], ())


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list
    outs: list
    params: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    plots: list = field(default_factory=list)


def artifact_path(model, artifact):
    return f"results/artifacts/{model}/{artifact}{FILE_SUFFIX[artifact.split('-')[0]]}"


def report_path(model, artifact):
    """The JSON beside every artifact: settings, parity, checksums, and status ok/failed."""
    return f"results/artifacts/{model}/{artifact}.json"


def producer(params, artifact):
    """The stage that makes an artifact: the one key of its params entry ('export' for onnx-fp32)."""
    return next(iter(params["artifacts"][artifact]), "export")


def targets(params):
    """The file formats this run produces (params.yaml `targets`)."""
    from workflow.config import DEFAULT_TARGETS

    return params.get("targets", list(DEFAULT_TARGETS))


def artifacts_of(params, model):
    """The artifacts a model is exported to: its own `artifacts` list, else all of them, of the `targets` formats."""
    names = params["models"][model].get("artifacts", list(params["artifacts"]))
    return [a for a in names if a.split("-")[0] in targets(params)]


def artifacts_by_producer(params, name):
    return [a for a in params["artifacts"] if producer(params, a) == name and a.split("-")[0] in targets(params)]


def quantize_args(params, artifact):
    """Command-line options of workflow.quantize for one `artifacts` entry (Snakefile and dvc.yaml share it).

    The packed calibration images calibrate static quantization (all of them unless calib_size says
    fewer) and are the parity check's inputs for both methods."""
    q = params["artifacts"][artifact]["quantize"]
    args = ["--method", q["method"]]
    if "calib_size" not in q:
        args += ["--calib-size", str(params["data"]["calib_subset"])]
    for key in ("format", "calibration", "percentile", "calib_size", "calib_batch", "weight_type",
                "activation_type"):
        if key in q:
            args += [f"--{key.replace('_', '-')}", str(q[key])]
    if "per_channel" in q:
        args.append("--per-channel" if q["per_channel"] else "--no-per-channel")
    return " ".join(args)


def quantize_stage(params, model, artifact):
    fmt = params["models"][model]["input_format"]
    source, out = artifact_path(model, "onnx-fp32"), artifact_path(model, artifact)
    return Stage(
        f"quantize-{model}-{artifact}",
        f"python -m workflow.quantize --params {PARAMS} --model {source} "
        f"{quantize_args(params, artifact)} --calib {packed(fmt, 'calib.npy')} "
        f"--manifest {packed(fmt, 'manifest.json')} --out {out}",
        [source, packed(fmt, "calib.npy"), packed(fmt, "manifest.json"), "workflow/quantize.py"],
        [out, report_path(model, artifact)], params=[f"artifacts.{artifact}"])


def qat_args(spec):
    """Command-line options of workflow.qat for one `artifacts` entry (Snakefile and dvc.yaml share it)."""
    q = qat_settings(spec)
    args = [f"--{key.replace('_', '-')} {q[key]}" for key in ("epochs", "steps", "lr", "freeze_bn_after")
            if q[key] is not None]
    return " ".join(args + ["--per-channel" if q["per_channel"] else "--no-per-channel"])


def qat_stage(params, model, artifact):
    fmt = params["models"][model]["input_format"]
    checkpoint, reference = f"results/models/{model}/model.pt", artifact_path(model, "onnx-fp32")
    out = artifact_path(model, artifact)
    options = qat_args(params["artifacts"][artifact])
    return Stage(
        f"qat-{model}-{artifact}",
        f"python -m workflow.qat --params {PARAMS} --checkpoint {checkpoint} --reference {reference} "
        f"--data {PACKED} {options} --out {out}",
        [checkpoint, reference, PACKED_TRAIN, packed(fmt, "test.npy"), packed(fmt, "calib.npy"),
         packed(fmt, "manifest.json"), "workflow/qat.py", "workflow/input_pipeline.py", *TRAINING_CODE],
        [out, report_path(model, artifact)], params=["seed", "train", "export", "data.calib_subset",
                                                     f"artifacts.{artifact}"])


def checkpoint_of(model):
    return f"results/models/{model}/model.pt"


def upstream_args(spec):
    """--teacher / --init options of workflow.train for a distilled model, and the checkpoints they name."""
    links = upstream_models(spec)
    files = [checkpoint_of(links[role]) for role in ("teacher", "init") if role in links]
    args = "".join(f" --{role} {checkpoint_of(links[role])}" for role in ("teacher", "init") if role in links)
    return args, files


def train_command(params, model):
    """The train stage's command: ``python -m workflow.train ...``, through the DDP launcher for several processes."""
    args = upstream_args(params["models"][model])[0]
    return launch_command(params["train"], "workflow.train",
                          f"--params {PARAMS} --model {model} --data {PACKED} --out results/models/{model}{args}")


def train_stage(params, model):
    """train (workflow.train), or prune (workflow.prune) for a model with a prune section: same outputs."""
    spec = params["models"][model]
    fmt, model_dir = spec["input_format"], f"results/models/{model}"
    data = [PACKED_TRAIN, packed(fmt, "test.npy"), packed(fmt, "manifest.json"), "workflow/input_pipeline.py"]
    if "prune" in spec:
        source = checkpoint_of(spec["prune"]["from"])
        return Stage(
            f"prune-{model}",
            f"python -m workflow.prune --params {PARAMS} --model {model} --source {source} --data {PACKED} "
            f"--out {model_dir}",
            [source, *data, "workflow/prune.py", *TRAINING_CODE],
            [f"{model_dir}/model.pt"], params=["seed", "train", f"models.{model}"],
            metrics=[f"{model_dir}/train_metrics.json", f"{model_dir}/prune_report.json"],
            plots=[f"{model_dir}/history.csv"])
    upstream = upstream_args(spec)[1]
    return Stage(
        f"train-{model}", train_command(params, model),
        [*data, *upstream, *TRAINING_CODE] + (["workflow/distill.py"] if upstream else []),
        [f"{model_dir}/model.pt"], params=["seed", "train", f"models.{model}"],
        metrics=[f"{model_dir}/train_metrics.json"], plots=[f"{model_dir}/history.csv"])


def device_deps(params, device):
    """The inventory file for a remote device (its SSH profile is an input); nothing for local."""
    return [] if device == "local" else [params["benchmark"]["inventory"]]


def tflite_args(params, artifact, model):
    """Command-line options of workflow.tflite for one `artifacts` entry (Snakefile and dvc.yaml share it).

    Full-integer int8 calibrates on all packed calibration images unless calib_size says fewer."""
    t = params["artifacts"][artifact]["tflite"]
    args = ["--precision", t["precision"]]
    if t["precision"] == "int8" and "calib_size" not in t:
        args += ["--calib-size", str(params["data"]["calib_subset"])]
    for key in ("converter", "io_type", "calib_size"):
        if key in t:
            args += [f"--{key.replace('_', '-')}", str(t[key])]
    if t.get("converter") == "litert_torch":
        args += ["--checkpoint", f"results/models/{model}/model.pt"]
    return " ".join(args)


def tflite_stage(params, model, artifact):
    fmt = params["models"][model]["input_format"]
    spec = params["artifacts"][artifact]
    source, out = artifact_path(model, "onnx-fp32"), artifact_path(model, artifact)
    checkpoint = [f"results/models/{model}/model.pt"] if spec["tflite"].get("converter") == "litert_torch" else []
    return Stage(
        f"tflite-{model}-{artifact}",
        f"python -m workflow.tflite --params {PARAMS} --model {source} {tflite_args(params, artifact, model)} "
        f"--calib {packed(fmt, 'calib.npy')} --manifest {packed(fmt, 'manifest.json')} --out {out}",
        [source, *checkpoint, packed(fmt, "calib.npy"), packed(fmt, "manifest.json"), "workflow/tflite.py",
         "workflow/litert.py"],
        [out, report_path(model, artifact)], params=[f"artifacts.{artifact}"])


def hailo_path(model, artifact, step, suffix):
    """Intermediate files of the Hailo flow: results/hailo/<model>/<artifact>-{parsed,quantized}.{har,json,alls}."""
    return f"results/hailo/{model}/{artifact}-{step}.{suffix}"


def hailo_args(spec, step):
    """Command-line options of one step of workflow.hailo for one `artifacts` entry."""
    h = spec["hailo"]
    keys = {"translate": ("hw_arch",),
            "optimize": ("calib_size", "optimization_level", "compression_level", "camera_format"),
            "compile": ()}[step]
    return " ".join(f"--{k.replace('_', '-')} {h[k]}" for k in keys if k in h)


def hailo_stages(params, model, artifact):
    """The Dataflow Compiler flow: translate ONNX -> .har, optimize (calibrate) -> quantized .har, compile -> .hef."""
    fmt = params["models"][model]["input_format"]
    spec = params["artifacts"][artifact]
    source = artifact_path(model, "onnx-fp32")
    parsed, quantized = hailo_path(model, artifact, "parsed", "har"), hailo_path(model, artifact, "quantized", "har")
    out = artifact_path(model, artifact)
    options = {step: (" " + hailo_args(spec, step)) if hailo_args(spec, step) else ""
               for step in ("translate", "optimize", "compile")}
    return [
        Stage(f"hailo-translate-{model}-{artifact}",
              f"python -m workflow.hailo translate --params {PARAMS} --model {source}{options['translate']} "
              f"--out {parsed}",
              [source, "workflow/hailo.py"], [parsed, hailo_path(model, artifact, "parsed", "json")],
              params=[f"artifacts.{artifact}.hailo.hw_arch"]),
        Stage(f"hailo-optimize-{model}-{artifact}",
              f"python -m workflow.hailo optimize --params {PARAMS} --har {parsed}{options['optimize']} "
              f"--calib {packed(fmt, 'calib.npy')} --manifest {packed(fmt, 'manifest.json')} --out {quantized}",
              [parsed, packed(fmt, "calib.npy"), packed(fmt, "manifest.json"), "workflow/hailo.py"],
              [quantized, hailo_path(model, artifact, "quantized", "json"),
               hailo_path(model, artifact, "quantized", "alls")],
              params=[f"artifacts.{artifact}"]),
        Stage(f"hailo-compile-{model}-{artifact}",
              f"python -m workflow.hailo compile --params {PARAMS} --har {quantized}{options['compile']} --out {out}",
              [quantized, "workflow/hailo.py"], [out, report_path(model, artifact)]),
    ]


# Stages that derive an artifact from a trained model, by the producer key of its params entry
# (one Stage, or the list of a multi-step flow).
PRODUCERS = {"quantize": quantize_stage, "qat": qat_stage, "tflite": tflite_stage, "hailo": hailo_stages}


def packed(fmt, name):
    return f"{PACKED}/{fmt}/{name}"


PACK_CODE = ["workflow/pack.py", "workflow/sources.py", "workflow/datasets.py"]


def pack_stages():
    """The training split (RGB, once for every input format) and each color format's test/calib splits."""
    from workflow.pack import EVAL_KEYS, TRAIN_KEYS

    out = [Stage("pack-train", f"python -m workflow.pack --params {PARAMS} --split train --out {PACKED_TRAIN}",
                 PACK_CODE, [PACKED_TRAIN], params=["seed", *(f"data.{k}" for k in TRAIN_KEYS)])]
    for fmt in FORMATS:
        out.append(Stage(
            f"pack-{fmt}",
            f"python -m workflow.pack --params {PARAMS} --split eval --format {fmt} --out {PACKED}/{fmt}",
            PACK_CODE + ["workflow/colorspace.py"], [packed(fmt, f) for f in ("test.npy", "calib.npy", "manifest.json")],
            params=["seed", *(f"data.{k}" for k in EVAL_KEYS)]))
    return out


def stages(params):
    out = pack_stages()
    summary_deps = []
    for model, spec in params["models"].items():
        fmt = spec["input_format"]
        model_dir = f"results/models/{model}"
        out.append(train_stage(params, model))
        summary_deps.append(f"{model_dir}/train_metrics.json")
        onnx_path = artifact_path(model, "onnx-fp32")
        out.append(Stage(
            f"export-{model}",
            f"python -m workflow.export --params {PARAMS} --checkpoint {model_dir}/model.pt "
            f"--packed {packed(fmt, 'test.npy')} --out {onnx_path}",
            [f"{model_dir}/model.pt", packed(fmt, "test.npy"), "workflow/export.py", "workflow/models.py"],
            [onnx_path, onnx_path.rsplit(".", 1)[0] + ".json"], params=["export"]))
        for artifact in artifacts_of(params, model):
            if artifact != "onnx-fp32":
                made = PRODUCERS[producer(params, artifact)](params, model, artifact)
                out += made if isinstance(made, list) else [made]
            path, report = artifact_path(model, artifact), report_path(model, artifact)
            eval_out = f"results/eval/{model}/{artifact}.json"
            out.append(Stage(
                f"evaluate-{model}-{artifact}",
                f"python -m workflow.evaluate --params {PARAMS} --artifact {path} --packed {packed(fmt, 'test.npy')} "
                f"--manifest {packed(fmt, 'manifest.json')} --out {eval_out}",
                [path, report, packed(fmt, "test.npy"), packed(fmt, "manifest.json"), "workflow/evaluate.py"],
                [], params=["evaluate"], metrics=[eval_out]))
            summary_deps += [report, eval_out]
            for device in params["benchmark"]["devices"]:
                bench_out = f"results/bench/{device}/{model}/{artifact}.json"
                out.append(Stage(
                    f"benchmark-{device}-{model}-{artifact}",
                    f"python -m workflow.benchmark --params {PARAMS} --device {device} --model-name {model} "
                    f"--artifact {path} --packed {packed(fmt, 'test.npy')} "
                    f"--manifest {packed(fmt, 'manifest.json')} --out {bench_out}",
                    [path, report, packed(fmt, "test.npy"), packed(fmt, "manifest.json"), "workflow/benchmark.py",
                     "workflow/device_runner.py", "workflow/remote.py", *device_deps(params, device)],
                    [], params=[f"benchmark.{k}" for k in benchmark_keys(artifact)], metrics=[bench_out]))
                summary_deps.append(bench_out)
    pipeline = pipeline_stages(params)
    out += pipeline
    summary_deps += [s.metrics[0] for s in pipeline]
    out.append(Stage(
        "aggregate",
        f"python -m workflow.aggregate --params {PARAMS} --results results --out results/summary.csv",
        summary_deps + ["workflow/aggregate.py"],
        ["results/summary.csv", "results/summary.md"]))
    if params.get("detection", {}).get("enabled"):
        out += detection_stages(params["detection"])
    out += paper_and_plot_stages(params, out)  # keep last: they read the outputs of every stage above
    return out


def produced_sources(stages_so_far):
    """{source name: [files]} of the optional result tables (pipeline, pruning, detection) the DAG makes."""
    from workflow.papers import SOURCES

    produced = [f for s in stages_so_far for f in s.outs + s.metrics + s.plots]
    found = {}
    for name, pattern in SOURCES.items():
        regex = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(pattern)) + "$")
        files = [f for f in produced if regex.match(f)]
        if name != "summary" and files:
            found[name] = files
    return found


def paper_and_plot_stages(params, stages_so_far):
    """Paper tables (results/papers/<id>/) and plots (results/plots/) over everything before them."""
    from workflow.papers import PAPERS, PAPERS_DIR
    from workflow.plots import plot_files

    optional = produced_sources(stages_so_far)
    optional_files = [f for files in optional.values() for f in files]
    out = []
    for paper in PAPERS:
        folder = f"results/papers/{paper}"
        config = [f"{PAPERS_DIR}/{paper}.yaml"] + [f"{PAPERS_DIR}/{paper}/{f}.yaml"
                                                   for f in ("mapping", "small", "full")]
        out.append(Stage(
            f"paper-{paper}",
            f"python -m workflow.papers --paper {paper} --params {PARAMS} --out {folder}",
            ["results/summary.csv", *optional_files, PARAMS, *config, "workflow/papers.py"],
            [f"{folder}/table.md", f"{folder}/table.csv", f"{folder}/table.tex"],
            metrics=[f"{folder}/verdicts.json"]))
    bench = [f"results/bench/{device}/{model}/{artifact}.json" for model in params["models"]
             for artifact in artifacts_of(params, model) for device in params["benchmark"]["devices"]]
    pipeline_tables = optional.get("pipeline", [])
    pipeline = f" --pipeline {' '.join(pipeline_tables)}" if pipeline_tables else ""
    out.append(Stage(
        "plots",
        f"python -m workflow.plots --params {PARAMS} --summary results/summary.csv{pipeline} "
        f"--bench {' '.join(bench)} --out results/plots",
        ["results/summary.csv", *pipeline_tables, *bench,
         f"{PAPERS_DIR}/yuv420_mobilenetv2.yaml", "workflow/plots.py"],
        plot_files(params)))
    return out


def pipeline_stages(params):
    """Seed 000's pre-processing pipeline table per device (workflow/pipeline_bench.py)."""
    settings = params["benchmark"]["pipeline"]
    if not settings["enabled"]:
        return []
    rgb, yuv = artifact_path(settings["rgb_model"], "onnx-fp32"), artifact_path(settings["yuv_model"], "onnx-fp32")
    out = []
    for device in params["benchmark"]["devices"]:
        folder = f"results/pipeline/{device}"
        out.append(Stage(
            f"pipeline-{device}",
            f"python -m workflow.pipeline_bench --params {PARAMS} --device {device} --rgb-model {rgb} "
            f"--yuv-model {yuv} --out {folder}/pipeline.json",
            [rgb, yuv, "workflow/pipeline_bench.py", "workflow/benchmark.py", "workflow/device_runner.py",
             "workflow/remote.py", *device_deps(params, device)],
            [f"{folder}/table.csv", f"{folder}/fig20.csv"], params=["benchmark.pipeline"],
            metrics=[f"{folder}/pipeline.json"]))
    return out


def detection_stages(det):
    """The detection track (rules/detection.smk): pack, train, export, evaluate, aggregate."""
    from workflow.detection import plan

    data = plan.DATA
    out = [Stage("det-pack", f"python -m workflow.detection.pack --params {PARAMS} --out {data}",
                 ["workflow/detection/pack.py"], list(plan.PACK_OUTPUTS), params=["seed", "detection.data"])]
    for model, spec in det["models"].items():
        mdir = plan.model_dir(model)
        deps = [f"{data}/manifest.json", f"{data}/data.yaml", "workflow/detection/train.py",
                "workflow/detection/kd.py", "workflow/detection/modelcfg.py"]
        if Path("config/detection/models", spec["yaml"]).is_file():
            deps.append(f"config/detection/models/{spec['yaml']}")
        for parent in (plan.teacher_model(det, model), plan.prune_source(det, model)):
            if parent:
                deps.append(f"{plan.model_dir(parent)}/model.pt")
        out.append(Stage(f"det-train-{model}", plan.train_command(det, model), deps,
                         [f"{mdir}/model.pt", f"{mdir}/model.yaml"],
                         params=["seed", "detection.train", f"detection.models.{model}"],
                         metrics=[f"{mdir}/train_metrics.json"], plots=[f"{mdir}/history.csv"]))
        for artifact in plan.model_artifacts(det, model):
            deps = [f"{mdir}/model.pt", f"{data}/manifest.json", "workflow/detection/export.py",
                    "workflow/detection/runner.py"]
            if artifact.startswith("onnx-int8"):
                deps += [plan.artifact_path(model, "onnx-fp32"), "workflow/quantize.py"]
            if artifact.endswith("int8"):
                deps.append(f"{data}/calib.yaml")
            out.append(Stage(f"det-export-{model}-{artifact}", plan.export_command(model, artifact), deps,
                             [plan.artifact_path(model, artifact), plan.report_path(model, artifact)],
                             params=["detection.export", f"detection.models.{model}"]))
        for artifact in ("pytorch", *plan.model_artifacts(det, model)):
            deps = [f"{data}/manifest.json", f"{data}/val_coco.json", "workflow/detection/evaluate.py",
                    "workflow/detection/runner.py"]
            deps += ([f"{mdir}/model.pt"] if artifact == "pytorch"
                     else [plan.artifact_path(model, artifact), plan.report_path(model, artifact)])
            out.append(Stage(f"det-evaluate-{model}-{artifact}", plan.evaluate_command(model, artifact), deps, [],
                             params=["detection.evaluate"], metrics=[plan.eval_path(model, artifact)]))
    out.append(Stage("det-aggregate", plan.AGGREGATE_COMMAND,
                     plan.summary_inputs(det) + ["workflow/detection/aggregate.py"],
                     [f"{plan.RESULTS}/summary.csv", f"{plan.RESULTS}/summary.md", f"{plan.RESULTS}/paper_tables.md"]))
    return out


def dvc_yaml(params):
    doc = {"stages": {}}
    for s in stages(params):
        entry = {"cmd": s.cmd, "deps": list(dict.fromkeys(s.deps))}
        if s.params:
            entry["params"] = s.params
        if s.outs:
            entry["outs"] = list(s.outs)
        if s.metrics:
            entry["metrics"] = [{m: {"cache": True}} for m in s.metrics]
        if s.plots:
            entry["plots"] = [{p: {"cache": True}} for p in s.plots]
        doc["stages"][s.name] = entry
    doc["plots"] = [{f"results/models/{m}/history.csv": {"x": "epoch", "y": ["train_loss", "test_loss"]}}
                    for m in params["models"]]
    # accuracy vs latency of every artifact, for `dvc plots diff` between commits and experiments
    doc["plots"].append({"results/summary.csv": {"x": "latency_p50_ms", "y": "top1", "template": "scatter"}})
    header = "# Generated by `python -m workflow.dag` from params.yaml; do not edit by hand.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS)
    parser.add_argument("--out", default="dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = dvc_yaml(load_params(args.params))
    path = Path(args.out)
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date with {args.params}: run python -m workflow.dag", file=sys.stderr)
            sys.exit(1)
        return
    from workflow.io import write_text

    write_text(path, text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
