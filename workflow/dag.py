"""The pipeline's stages, declared once and expanded from params.yaml.

    python -m workflow.dag            # write dvc.yaml
    python -m workflow.dag --check    # dvc.yaml must match params.yaml (one line and exit 2 if not)

Every :class:`Stage` (command, dependencies, outputs, the params keys it reads) belongs to a
:class:`Rule`, a stage family. dvc.yaml gets one DVC stage per Stage; the Snakefile defines one
Snakemake rule per Rule: its output patterns come from the Rule's output function (the same one
that names each Stage's outputs, called with ``{wildcard}`` placeholders), and its input, params
and shell command are those of the Stage its job's wildcards name. tests/test_dag_parity.py checks
that both tools see the same stages, commands, outputs, dependencies and params.

DVC reads dvc.yaml as it was written: after an edit of params.yaml that adds or removes stages, its
first stage (``check-dvc-yaml``, which every stage waits for) stops `dvc repro` and `dvc exp run`
with one line naming the command that regenerates it. Commands name files and params entries but
hold no parameter value, so a changed value never makes dvc.yaml stale; the one exception is a model
instance's training seed (``seeds``), part of its identity like its name, so a change of ``seeds`` is
structural.
"""
import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from workflow import layout
from workflow.config import load_params
from workflow.detection import plan as det_plan
from workflow.distributed import job_resources, launch_command
from workflow.errors import UserError, cli
from workflow.io import write_text
from workflow.model_specs import base_model, model_seed, upstream_models
from workflow.producers import artifacts_of, producer

PARAMS = layout.PARAMS
FORMATS = ("rgb", "yuv420")
# The training library and what it builds on: code of the train, prune and QAT stages.
TRAINING_CODE = ["workflow/train.py", "workflow/training.py", "workflow/distributed.py", "workflow/models.py"]
BENCHMARK_KEYS = ("warmup_runs", "min_runs", "min_duration_s", "threads", "samples", "stream_workers",
                  "perf_counters", "rt", "accuracy", "emulated")
# benchmark params that only some formats read
FORMAT_BENCHMARK_KEYS = {"tflite": ("litert_xnnpack",)}
CHECK_STAGE = "check-dvc-yaml"
CHECK_MARKER = f"{layout.DVC_YAML} matches {layout.PARAMS}\n"  # the check stage's output: never changes


def benchmark_keys(artifact):
    return BENCHMARK_KEYS + FORMAT_BENCHMARK_KEYS.get(layout.file_format(artifact), ())


@dataclass(frozen=True)
class Outputs:
    outs: tuple = ()     # cached outputs
    metrics: tuple = ()  # cached JSON metrics (dvc metrics)
    plots: tuple = ()    # cached plot data (dvc plots)
    dirs: tuple = ()     # the outs that are folders

    @property
    def files(self):
        return self.outs + self.metrics + self.plots


@dataclass(frozen=True)
class Rule:
    """A stage family: one Snakemake rule, and one DVC stage `<prefix>-<wildcard values>` per job."""
    name: str
    prefix: str
    wildcards: tuple
    outputs: Callable  # (params, **wildcards) -> Outputs
    env: str           # the conda environment, envs/<env>.yaml
    doc: str

    def patterns(self, params):
        """The rule's outputs, with a {wildcard} placeholder for each wildcard."""
        return self.outputs(params, **{w: f"{{{w}}}" for w in self.wildcards})

    @property
    def log(self):
        return layout.log_path(self.name, *(f"{{{w}}}" for w in self.wildcards))


@dataclass
class Stage:
    rule: Rule
    wildcards: dict
    cmd: str
    deps: list
    outs: list
    metrics: list = field(default_factory=list)
    plots: list = field(default_factory=list)
    params: list = field(default_factory=list)  # dotted params.yaml keys the stage reads
    threads: int = 1
    resources: dict = field(default_factory=dict)  # Snakemake resources (devices, GPU)
    dirs: list = field(default_factory=list)

    @property
    def name(self):
        return "-".join((self.rule.prefix, *self.wildcards.values()))

    @property
    def outputs(self):
        return self.outs + self.metrics + self.plots


def stage(rule, params, cmd, deps, keys=(), threads=1, resources=None, **wildcards):
    """A Stage of ``rule``; its outputs are the rule's output function of these wildcards."""
    wildcards = {w: wildcards[w] for w in rule.wildcards}
    out = rule.outputs(params, **wildcards)
    return Stage(rule, wildcards, cmd, list(dict.fromkeys(deps)), list(out.outs), list(out.metrics),
                 list(out.plots), list(keys), threads, resources or {}, list(out.dirs))


def param_value(params, key):
    """The value of a dotted params.yaml key (what DVC tracks for the key): ``models.<name>`` as declared,
    not the model instances of each seed."""
    node = {**params, "models": params.get("declared_models", params["models"])}
    for part in key.split("."):
        node = node[part]
    return node


def artifact_outputs(fmt):
    """A model file of format ``fmt`` (whatever the artifact wildcard) and its report."""
    return lambda params, model, artifact: Outputs(outs=(layout.artifact_path(model, artifact, fmt=fmt),
                                                         layout.report_path(model, artifact)))


def det_artifact_outputs(fmt):
    return lambda params, model, artifact: Outputs(outs=(layout.det_artifact_path(model, artifact, fmt=fmt),
                                                         layout.det_report_path(model, artifact)))


def model_outputs(*extra_metrics):
    return lambda params, model: Outputs(outs=(layout.checkpoint(model),),
                                         metrics=(layout.train_metrics(model), *(f(model) for f in extra_metrics)),
                                         plots=(layout.history(model),))


# ----------------------------------------------------------------------------- the stage families
PACK_TRAIN = Rule("pack_train", "pack-train", (),
                  lambda params: Outputs(outs=(layout.packed_train(),), dirs=(layout.packed_train(),)), "data",
                  "Pack the training split once, in RGB, for every input format (raw pixels, or JPEG shards + index).")
PACK = Rule("pack", "pack", ("fmt",), lambda params, fmt: Outputs(outs=tuple(layout.packed_files(fmt))), "data",
            "Pack one color format's evaluation splits (test, and calib drawn from the training subset).")
TRAIN = Rule("train", "train", ("model",), model_outputs(), "train",
             "Train one model variant of params.yaml `models` (checkpoint every epoch, resumable).")
PRUNE = Rule("prune", "prune", ("model",), model_outputs(layout.prune_report), "optimize",
             "Network slimming of a trained model (models.<name>.prune): the train outputs and a report.")
EXPORT = Rule("export_onnx", "export", ("model",),
              lambda params, model: Outputs(outs=(layout.artifact_path(model, "onnx-fp32"),
                                                  layout.report_path(model, "onnx-fp32"))), "export",
              "Export a trained model to ONNX and check it against PyTorch on real test images.")
QUANTIZE = Rule("quantize_onnx", "quantize", ("model", "artifact"), artifact_outputs("onnx"), "export",
                "ONNX Runtime post-training quantization (dynamic, or static with the calibration split).")
QAT = Rule("qat", "qat", ("model", "artifact"), artifact_outputs("onnx"), "optimize",
           "PyTorch quantization-aware fine-tuning of a trained model, exported as ONNX QDQ.")
TFLITE = Rule("convert_tflite", "tflite", ("model", "artifact"), artifact_outputs("tflite"), "tflite",
              "TFLite conversion (onnx2tf from the fp32 ONNX, or litert-torch from the checkpoint).")
HAILO_TRANSLATE = Rule(
    "hailo_translate", "hailo-translate", ("model", "artifact"),
    lambda params, model, artifact: Outputs(outs=tuple(layout.hailo_path(model, artifact, "parsed", s)
                                                       for s in ("har", "json"))), "hailo",
    "Translate the fp32 ONNX model to a Hailo archive (.har) for one hw_arch.")
HAILO_OPTIMIZE = Rule(
    "hailo_optimize", "hailo-optimize", ("model", "artifact"),
    lambda params, model, artifact: Outputs(outs=tuple(layout.hailo_path(model, artifact, "quantized", s)
                                                       for s in ("har", "json", "alls"))), "hailo",
    "Quantize the archive with the packed calibration split (NHWC) and the generated model script.")
HAILO_COMPILE = Rule("hailo_compile", "hailo-compile", ("model", "artifact"), artifact_outputs("hef"), "hailo",
                     "Compile the quantized archive to a .hef for the Hailo device.")
EVALUATE = Rule("evaluate", "evaluate", ("model", "artifact"),
                lambda params, model, artifact: Outputs(metrics=(layout.eval_path(model, artifact),)), "export",
                "Top-1 of an exported artifact on the packed test split, run by its own runtime.")
BENCHMARK = Rule("benchmark", "benchmark", ("device", "model", "artifact"),
                 lambda params, device, model, artifact: Outputs(metrics=(layout.bench_path(device, model, artifact),)),
                 "benchmark", "Latency, throughput and memory of an artifact on a device, by the on-device runner.")
PIPELINE = Rule("pipeline_bench", "pipeline", ("device",),
                lambda params, device: Outputs(outs=tuple(f"{layout.pipeline_dir(device)}/{f}"
                                                          for f in ("table.csv", "fig20.csv")),
                                               metrics=(layout.pipeline_json(device),)), "benchmark",
                "Seed 000 §7-8: resize + YUV->RGB + infer (RGB model) vs resize + infer (YUV model).")
AGGREGATE = Rule("aggregate", "aggregate", (), lambda params: Outputs(outs=(layout.SUMMARY, layout.SUMMARY_MD)),
                 "aggregate", "One row per (model, input format, precision, runtime, device): results/summary.csv.")
PAPER = Rule("paper_table", "paper", ("paper",),
             lambda params, paper: Outputs(outs=tuple(f"{layout.paper_dir(paper)}/table.{s}"
                                                      for s in ("md", "csv", "tex")),
                                           metrics=(f"{layout.paper_dir(paper)}/verdicts.json",)), "report",
             "A paper's tables: each published figure beside the reproduced one, the difference and a verdict.")
PLOTS = Rule("plots", "plots", (), lambda params: Outputs(outs=tuple(layout.plot_files(params))),
             "report", "Accuracy-latency Pareto fronts, bubble chart, YUV gain vs area, latency distributions.")
DET_PACK = Rule("det_pack", "det-pack", (),
                lambda params: Outputs(outs=layout.DET_PACK_DIRS + layout.DET_PACK_FILES, dirs=layout.DET_PACK_DIRS),
                "detection", "Validate the YOLO-format source and write the train/val/calib split and data yamls.")
DET_TRAIN = Rule("det_train", "det-train", ("model",),
                 lambda params, model: Outputs(outs=(layout.det_checkpoint(model),
                                                     f"{layout.det_model_dir(model)}/model.yaml"),
                                               metrics=(f"{layout.det_model_dir(model)}/train_metrics.json",),
                                               plots=(f"{layout.det_model_dir(model)}/history.csv",)), "detection",
                 "Train one detection.models entry with ultralytics (offline; KD when it names a teacher).")
DET_EXPORT_ONNX = Rule("det_export_onnx", "det-export", ("model", "artifact"), det_artifact_outputs("onnx"),
                       "detection", "ONNX (ultralytics exporter) and its ONNX Runtime dynamic/static int8 versions.")
DET_EXPORT_TFLITE = Rule("det_export_tflite", "det-export", ("model", "artifact"), det_artifact_outputs("tflite"),
                         "detection", "LiteRT fp32 and full-integer int8 (ultralytics exporter).")
DET_EVALUATE = Rule("det_evaluate", "det-evaluate", ("model", "artifact"),
                    lambda params, model, artifact: Outputs(metrics=(layout.det_eval_path(model, artifact),)),
                    "detection", "mAP50-95 / mAP50 (pycocotools) and the time split of one artifact.")
DET_AGGREGATE = Rule("det_aggregate", "det-aggregate", (),
                     lambda params: Outputs(outs=tuple(f"{layout.DET_RESULTS}/{f}" for f in
                                                       ("summary.csv", "summary.md", "paper_tables.md"))),
                     "aggregate", "results/detection/summary.csv (task=detection), summary.md and the seed tables.")


# ----------------------------------------------------------------------------- one stage of each family
PACK_CODE = ["workflow/pack.py", "workflow/sources.py", "workflow/datasets.py"]


def pack_stages(params):
    """The training split (RGB, once for every input format) and each color format's test/calib splits."""
    from workflow.pack import EVAL_KEYS, TRAIN_KEYS

    workers = params["data"]["pack_workers"]
    return [stage(PACK_TRAIN, params, f"python -m workflow.pack --params {PARAMS} --split train "
                                      f"--out {layout.packed_train()}",
                  PACK_CODE, ["seed", *(f"data.{k}" for k in TRAIN_KEYS)], workers),
            *(stage(PACK, params, f"python -m workflow.pack --params {PARAMS} --split eval --format {fmt} "
                                  f"--out {layout.packed_dir(fmt)}",
                    PACK_CODE + ["workflow/colorspace.py"], ["seed", *(f"data.{k}" for k in EVAL_KEYS)], workers,
                    fmt=fmt)
              for fmt in FORMATS)]


def training_data(fmt):
    """Training reads the RGB training split (YUV models see it converted after the crop); tests use the model's
    format."""
    return [layout.packed_train(), layout.packed_split(fmt, "test"), layout.packed_manifest(fmt),
            "workflow/input_pipeline.py"]


def train_stage(params, model):
    """train (workflow.train, through the DDP launcher for several processes), or prune (workflow.prune) for a
    model with a prune section: same outputs."""
    spec, train = params["models"][model], params["train"]
    data, out = training_data(spec["input_format"]), layout.model_dir(model)
    # the training seed is in the command (a model instance's identity, like its name), its settings in params.yaml
    seed, keys = f"--seed {model_seed(params, model)}", f"models.{base_model(params, model)}"
    # every process's threads on this machine (on Slurm, cpus_per_task applies to each task)
    threads, resources = train["num_threads"] * train["processes_per_node"], job_resources(train)
    if "prune" in spec:
        source = layout.checkpoint(spec["prune"]["from"])
        return stage(PRUNE, params, f"python -m workflow.prune --params {PARAMS} --model {model} {seed} --source {source} "
                                    f"--data {layout.PACKED} --out {out}",
                     [source, *data, "workflow/prune.py", *TRAINING_CODE],
                     ["train", keys], train["num_threads"],
                     {"gpu": int(train["device"] == "cuda")}, model=model)  # one process
    links = upstream_models(spec)
    roles = [role for role in ("teacher", "init") if role in links]
    upstream = "".join(f" --{role} {layout.checkpoint(links[role])}" for role in roles)
    command = launch_command(train, "workflow.train",
                             f"--params {PARAMS} --model {model} {seed} --data {layout.PACKED} --out {out}{upstream}")
    return stage(TRAIN, params, command,
                 [*data, *(layout.checkpoint(links[role]) for role in roles), *TRAINING_CODE,
                  *(["workflow/distill.py"] if roles else [])],
                 ["train", keys], threads, resources, model=model)


def export_stage(params, model):
    fmt = params["models"][model]["input_format"]
    test = layout.packed_split(fmt, "test")
    return stage(EXPORT, params, f"python -m workflow.export --params {PARAMS} --checkpoint {layout.checkpoint(model)} "
                                 f"--packed {test} --out {layout.artifact_path(model, 'onnx-fp32')}",
                 [layout.checkpoint(model), test, "workflow/export.py", "workflow/models.py"], ["export"], model=model)


def calibration(params, model):
    fmt = params["models"][model]["input_format"]
    return layout.packed_split(fmt, "calib"), layout.packed_manifest(fmt)


def quantize_stage(params, model, artifact):
    source, (calib, manifest) = layout.artifact_path(model, "onnx-fp32"), calibration(params, model)
    return [stage(QUANTIZE, params, f"python -m workflow.quantize --params {PARAMS} --model {source} "
                                    f"--artifact {artifact} --calib {calib} --manifest {manifest} "
                                    f"--out {layout.artifact_path(model, artifact)}",
                  [source, calib, manifest, "workflow/quantize.py"], ["data.calib_subset", f"artifacts.{artifact}"],
                  model=model, artifact=artifact)]


def qat_stage(params, model, artifact):
    fmt = params["models"][model]["input_format"]
    reference = layout.artifact_path(model, "onnx-fp32")
    return [stage(QAT, params, f"python -m workflow.qat --params {PARAMS} --seed {model_seed(params, model)} "
                               f"--checkpoint {layout.checkpoint(model)} "
                               f"--reference {reference} --data {layout.PACKED} --artifact {artifact} "
                               f"--out {layout.artifact_path(model, artifact)}",
                  [layout.checkpoint(model), reference, *training_data(fmt), *calibration(params, model),
                   "workflow/qat.py", *TRAINING_CODE],
                  ["train", "export", "evaluate.batch_size", "data.calib_subset", f"artifacts.{artifact}"],
                  params["train"]["num_threads"], model=model, artifact=artifact)]


def tflite_stage(params, model, artifact):
    source, (calib, manifest) = layout.artifact_path(model, "onnx-fp32"), calibration(params, model)
    return [stage(TFLITE, params, f"python -m workflow.tflite --params {PARAMS} --model {source} "
                                  f"--checkpoint {layout.checkpoint(model)} --artifact {artifact} --calib {calib} "
                                  f"--manifest {manifest} --out {layout.artifact_path(model, artifact)}",
                  [source, layout.checkpoint(model), calib, manifest, "workflow/tflite.py", "workflow/litert.py"],
                  ["data.calib_subset", f"artifacts.{artifact}"], model=model, artifact=artifact)]


def hailo_stages(params, model, artifact):
    """The Dataflow Compiler flow: translate ONNX -> .har, optimize (calibrate) -> quantized .har, compile -> .hef."""
    source, (calib, manifest) = layout.artifact_path(model, "onnx-fp32"), calibration(params, model)
    parsed, quantized = (layout.hailo_path(model, artifact, step, "har") for step in ("parsed", "quantized"))
    command = f"python -m workflow.hailo {{}} --params {PARAMS} --artifact {artifact}"
    return [
        stage(HAILO_TRANSLATE, params, f"{command.format('translate')} --model {source} --out {parsed}",
              [source, "workflow/hailo.py"], [f"artifacts.{artifact}.hailo.hw_arch"], model=model, artifact=artifact),
        stage(HAILO_OPTIMIZE, params, f"{command.format('optimize')} --har {parsed} --calib {calib} "
                                      f"--manifest {manifest} --out {quantized}",
              [parsed, calib, manifest, "workflow/hailo.py"], [f"artifacts.{artifact}"], model=model,
              artifact=artifact),
        stage(HAILO_COMPILE, params, f"{command.format('compile')} --har {quantized} "
                                     f"--out {layout.artifact_path(model, artifact)}",
              [quantized, "workflow/hailo.py"], model=model, artifact=artifact),
    ]


# Stages that derive an artifact from a trained model, by the producer key of its params entry.
PRODUCERS = {"quantize": quantize_stage, "qat": qat_stage, "tflite": tflite_stage, "hailo": hailo_stages}


def device_deps(params, device):
    """The inventory file for a remote device (its SSH profile is an input); nothing for local."""
    return [] if device == "local" else [params["benchmark"]["inventory"]]


def evaluate_stage(params, model, artifact):
    fmt = params["models"][model]["input_format"]
    path, report = layout.artifact_path(model, artifact), layout.report_path(model, artifact)
    test, manifest = layout.packed_split(fmt, "test"), layout.packed_manifest(fmt)
    return stage(EVALUATE, params, f"python -m workflow.evaluate --params {PARAMS} --artifact {path} --packed {test} "
                                   f"--manifest {manifest} --out {layout.eval_path(model, artifact)}",
                 [path, report, test, manifest, "workflow/evaluate.py", "workflow/accuracy.py"], ["evaluate"],
                 params["evaluate"]["num_threads"], model=model, artifact=artifact)


def benchmark_stage(params, device, model, artifact):
    fmt = params["models"][model]["input_format"]
    path, report = layout.artifact_path(model, artifact), layout.report_path(model, artifact)
    test, manifest = layout.packed_split(fmt, "test"), layout.packed_manifest(fmt)
    return stage(BENCHMARK, params, f"python -m workflow.benchmark --params {PARAMS} --device {device} "
                                    f"--model-name {model} --artifact {path} --packed {test} --manifest {manifest} "
                                    f"--out {layout.bench_path(device, model, artifact)}",
                 [path, report, test, manifest, "workflow/benchmark.py", "workflow/device_runner.py",
                  "workflow/remote.py", *device_deps(params, device)],
                 [f"benchmark.{k}" for k in benchmark_keys(artifact)], max(params["benchmark"]["threads"]),
                 {f"device_{device}": 1}, device=device, model=model, artifact=artifact)


def pipeline_stages(params):
    """Seed 000's pre-processing pipeline table per device (workflow/pipeline_bench.py)."""
    settings = params["benchmark"]["pipeline"]
    if not settings["enabled"]:
        return []
    rgb, yuv = (layout.artifact_path(settings[key], "onnx-fp32") for key in ("rgb_model", "yuv_model"))
    return [stage(PIPELINE, params, f"python -m workflow.pipeline_bench --params {PARAMS} --device {device} "
                                    f"--rgb-model {rgb} --yuv-model {yuv} --out {layout.pipeline_json(device)}",
                  [rgb, yuv, "workflow/pipeline_bench.py", "workflow/benchmark.py", "workflow/device_runner.py",
                   "workflow/remote.py", *device_deps(params, device)], ["benchmark.pipeline", "benchmark.emulated"], settings["workers"],
                  {f"device_{device}": 1}, device=device)
            for device in params["benchmark"]["devices"]]


def classification_stages(params):
    out = pack_stages(params)
    for model in params["models"]:
        out += [train_stage(params, model), export_stage(params, model)]
        for artifact in artifacts_of(params, model):
            if artifact != "onnx-fp32":
                out += PRODUCERS[producer(params, artifact)](params, model, artifact)
            out.append(evaluate_stage(params, model, artifact))
            out += [benchmark_stage(params, device, model, artifact) for device in params["benchmark"]["devices"]]
    out += pipeline_stages(params)
    summary_deps = [f for s in out if s.rule in (TRAIN, PRUNE, EVALUATE, BENCHMARK, PIPELINE)
                    for f in s.metrics[:1]] + [layout.report_path(s.wildcards["model"], s.wildcards["artifact"])
                                               for s in out if s.rule is EVALUATE]
    out.append(stage(AGGREGATE, params, f"python -m workflow.aggregate --params {PARAMS} --results {layout.RESULTS} "
                                        f"--out {layout.SUMMARY}", [*summary_deps, "workflow/aggregate.py", "workflow/accuracy.py"]))
    return out


def detection_stages(params):
    """The detection track: pack, train, export, evaluate, aggregate (workflow/detection/)."""
    det = params["detection"]
    data, manifest = layout.DET_DATA, layout.det_data_file("manifest.json")
    out = [stage(DET_PACK, params, f"python -m workflow.detection.pack --params {PARAMS} --out {data}",
                 ["workflow/detection/pack.py"], ["seed", "detection.data"])]
    for model, spec in det["models"].items():
        checkpoint = layout.det_checkpoint(model)
        teacher, source = det_plan.teacher_model(det, model), det_plan.prune_source(det, model)
        upstream = (f" --teacher {layout.det_checkpoint(teacher)}" if teacher else "") + (
            f" --prune-from {layout.det_checkpoint(source)}" if source else "")
        local_yaml = Path(layout.DET_MODEL_CONFIGS, spec["yaml"])
        out.append(stage(
            DET_TRAIN, params, f"python -m workflow.detection.train --params {PARAMS} --model {model} --data {data} "
                               f"--out {layout.det_model_dir(model)}{upstream}",
            [manifest, layout.det_data_file("data.yaml"), "workflow/detection/train.py", "workflow/detection/kd.py",
             "workflow/detection/modelcfg.py", *([str(local_yaml)] if local_yaml.is_file() else []),
             *(layout.det_checkpoint(parent) for parent in (teacher, source) if parent)],
            ["seed", "detection.train", f"detection.models.{model}"], det["train"]["num_threads"], model=model))
        artifacts = det_plan.model_artifacts(det, model)
        for artifact in artifacts:
            path, fp32 = layout.det_artifact_path(model, artifact), layout.det_artifact_path(model, "onnx-fp32")
            int8_onnx = artifact.startswith("onnx-int8")
            out.append(stage(
                DET_EXPORT_ONNX if artifact.startswith("onnx") else DET_EXPORT_TFLITE, params,
                f"python -m workflow.detection.export --params {PARAMS} --model {model} --artifact {artifact} "
                f"--checkpoint {checkpoint} --data {data} --out {path}" + (f" --source {fp32}" if int8_onnx else ""),
                [checkpoint, manifest, "workflow/detection/export.py", "workflow/detection/runner.py",
                 *([fp32, "workflow/quantize.py"] if int8_onnx else []),
                 *([layout.det_data_file("calib.yaml")] if artifact.endswith("int8") else [])],
                ["detection.export", f"detection.models.{model}"], model=model, artifact=artifact))
        for artifact in ("pytorch", *artifacts):
            path = checkpoint if artifact == "pytorch" else layout.det_artifact_path(model, artifact)
            out.append(stage(
                DET_EVALUATE, params, f"python -m workflow.detection.evaluate --params {PARAMS} --model {model} "
                                      f"--artifact {path} --data {data} --out {layout.det_eval_path(model, artifact)}",
                [manifest, layout.det_data_file("val_coco.json"), "workflow/detection/evaluate.py",
                 "workflow/detection/runner.py", path,
                 *([] if artifact == "pytorch" else [layout.det_report_path(model, artifact)])],
                ["detection.evaluate"], det["evaluate"]["num_threads"], model=model, artifact=artifact))
    summary_deps = [f for s in out if s.rule in (DET_TRAIN, DET_EVALUATE) for f in s.metrics] + [
        s.outs[1] for s in out if s.rule in (DET_EXPORT_ONNX, DET_EXPORT_TFLITE)]
    out.append(stage(DET_AGGREGATE, params, f"python -m workflow.detection.aggregate --params {PARAMS} "
                                            f"--results {layout.DET_RESULTS} --out {layout.DET_SUMMARY}",
                     [*summary_deps, "workflow/detection/aggregate.py"]))
    return out


def source_pattern(pattern):
    return re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(pattern)) + "$")


def produced_sources(stages_so_far):
    """{source name: [files]} of the optional result tables (pipeline, pruning, detection) the DAG makes."""
    produced = [f for s in stages_so_far for f in s.outputs]
    found = {}
    for name, pattern in layout.SOURCES.items():
        files = [f for f in produced if source_pattern(pattern).match(f)]
        if name != "summary" and files:
            found[name] = files
    return found


def report_stages(params, stages_so_far):
    """Paper tables (results/papers/<id>/) and plots (results/plots/) over everything before them."""
    optional = produced_sources(stages_so_far)
    optional_files = [f for files in optional.values() for f in files]
    out = [stage(PAPER, params, f"python -m workflow.papers --paper {paper} --params {PARAMS} "
                                f"--out {layout.paper_dir(paper)}",
                 [layout.SUMMARY, *optional_files, PARAMS, *layout.paper_inputs(paper), "workflow/papers.py",
                  "workflow/accuracy.py"],
                 paper=paper)
           for paper in layout.PAPERS]
    bench = [f for s in stages_so_far if s.rule is BENCHMARK for f in s.metrics]
    pipeline_tables = optional.get("pipeline", [])
    pipeline = f" --pipeline {' '.join(pipeline_tables)}" if pipeline_tables else ""
    out.append(stage(PLOTS, params, f"python -m workflow.plots --params {PARAMS} --summary {layout.SUMMARY}{pipeline} "
                                    f"--bench {' '.join(bench)} --out {layout.PLOTS_DIR}",
                     [layout.SUMMARY, *pipeline_tables, *bench, str(layout.YUV_GAIN_REFERENCE), str(layout.YUV_GAIN_MAPPING),
                      "workflow/plots.py"]))
    return out


def stages(params):
    """Every stage of the DAG params.yaml describes, upstream before downstream."""
    out = classification_stages(params)
    if params.get("detection", {}).get("enabled"):
        out += detection_stages(params)
    return out + report_stages(params, out)  # last: they read the outputs of every stage above


@dataclass
class Plan:
    """The stages of one params.yaml, by rule and by the wildcard values of their jobs (the Snakefile's view)."""
    params: dict
    stages: list

    def __post_init__(self):
        self.jobs = {(s.rule.name, tuple(s.wildcards.values())): s for s in self.stages}
        self.rules = list(dict.fromkeys(s.rule for s in self.stages))
        self.rule = {r.name: r for r in self.rules}

    def job(self, rule, wildcards):
        """The Stage of a Snakemake job (its rule name and wildcards)."""
        values = tuple(wildcards[w] for w in self.rule[rule].wildcards)
        try:
            return self.jobs[(rule, values)]
        except KeyError:
            raise UserError(f"rule {rule} has no job for {dict(zip(self.rule[rule].wildcards, values))} in "
                            f"{PARAMS} (a model, artifact or device it does not list)") from None

    def values(self, rule):
        """{wildcard: the values the rule's jobs take}: the rule's wildcard constraints."""
        return {w: sorted({s.wildcards[w] for s in self.stages if s.rule is rule}) for w in rule.wildcards}

    def param_values(self, stage):
        """{dotted key: value}: what DVC tracks for the stage's params, Snakemake's params of its job."""
        return {key: param_value(self.params, key) for key in stage.params}


def plan(params):
    return Plan(params, stages(params))


# ----------------------------------------------------------------------------- dvc.yaml
def check_stage():
    """DVC's first stage: dvc.yaml still matches params.yaml. The stages that depend on no other stage
    wait for its marker file, whose content never changes, so passing the check reruns nothing."""
    return {"cmd": f"python -m workflow.dag --params {PARAMS} --check --marker {layout.DVC_YAML_CHECK}",
            "deps": [PARAMS, str(layout.PAPERS_DIR), layout.DET_MODEL_CONFIGS],
            "outs": [layout.DVC_YAML_CHECK]}


def dvc_yaml(params):
    all_stages = stages(params)
    produced = {f for s in all_stages for f in s.outputs}
    doc = {"stages": {CHECK_STAGE: check_stage()}}
    for s in all_stages:
        roots = [] if produced & set(s.deps) else [layout.DVC_YAML_CHECK]
        entry = {"cmd": s.cmd, "deps": s.deps + roots}
        if s.params:
            entry["params"] = s.params
        if s.outs:
            entry["outs"] = list(s.outs)
        if s.metrics:
            entry["metrics"] = [{m: {"cache": True}} for m in s.metrics]
        if s.plots:
            entry["plots"] = [{p: {"cache": True}} for p in s.plots]
        doc["stages"][s.name] = entry
    doc["plots"] = [{layout.history(m): {"x": "epoch", "y": ["train_loss", "test_loss"]}} for m in params["models"]]
    # accuracy vs latency of every artifact, for `dvc plots diff` between commits and experiments
    doc["plots"].append({layout.SUMMARY: {"x": "latency_p50_ms", "y": "top1", "template": "scatter"}})
    header = "# Generated by `python -m workflow.dag` from params.yaml; do not edit by hand.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)


def stage_names(text):
    try:
        return list((yaml.safe_load(text) or {}).get("stages") or {})
    except (yaml.YAMLError, AttributeError):  # a hand-edited file: every stage counts as changed
        return []


def check(params, path, params_path):
    """A UserError naming what changed when ``path`` does not match what params.yaml gives."""
    expected = dvc_yaml(params)
    current = Path(path).read_text() if Path(path).exists() else ""
    if current == expected:
        return
    new, old = stage_names(expected), stage_names(current)
    added, removed = [n for n in new if n not in old], [n for n in old if n not in new]
    what = "; ".join(f"{len(names)} stage(s) {verb}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                     for verb, names in (("to add", added), ("to remove", removed)) if names) or "stages changed"
    raise UserError(f"{path} is out of date with {params_path} ({what}): run `python -m workflow.dag`, "
                    "then the DVC command again")


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS)
    parser.add_argument("--out", default=layout.DVC_YAML)
    parser.add_argument("--check", action="store_true", help="exit 2 with one line if the file is out of date")
    parser.add_argument("--marker", help="with --check: write this file when it is up to date (DVC's first stage)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.check:
        check(params, args.out, args.params)
        if args.marker:
            write_text(args.marker, CHECK_MARKER)
        return
    write_text(args.out, dvc_yaml(params))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
