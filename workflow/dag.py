"""The pipeline's stages, expanded from params.yaml; writes dvc.yaml.

    python -m workflow.dag            # rewrite dvc.yaml from params.yaml
    python -m workflow.dag --check    # exit 1 if dvc.yaml is out of date

The Snakefile (rules/*.smk) declares the same stages as wildcard rules;
tests/test_dag_parity.py checks that Snakemake's jobs and these DVC stages have
the same commands, outputs and inputs.
"""
import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workflow.config import load_params
from workflow.errors import cli

PARAMS = "params.yaml"
PACKED = "data/packed"
FORMATS = ("rgb", "yuv420")
# Artifacts each trained model is exported to (format-precision); later stages add more.
ARTIFACTS = ("onnx-fp32",)
ARTIFACT_SUFFIX = {"onnx": ".onnx"}
BENCHMARK_KEYS = ("warmup_runs", "min_runs", "min_duration_s", "threads", "samples")


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
    return f"results/artifacts/{model}/{artifact}{ARTIFACT_SUFFIX[artifact.split('-')[0]]}"


def packed(fmt, name):
    return f"{PACKED}/{fmt}/{name}"


def stages(params):
    out = []
    for fmt in FORMATS:
        files = [packed(fmt, f) for f in ("train.npy", "test.npy", "calib.npy", "manifest.json")]
        out.append(Stage(
            f"pack-{fmt}",
            f"python -m workflow.pack --params {PARAMS} --format {fmt} --out {PACKED}/{fmt}",
            ["workflow/pack.py", "workflow/datasets.py", "workflow/colorspace.py"],
            files, params=["seed", "data"]))
    summary_deps = []
    for model, spec in params["models"].items():
        fmt = spec["input_format"]
        model_dir = f"results/models/{model}"
        out.append(Stage(
            f"train-{model}",
            f"python -m workflow.train --params {PARAMS} --model {model} --data {PACKED} --out {model_dir}",
            [packed("rgb", "train.npy"), packed("rgb", "manifest.json"), packed(fmt, "test.npy"),
             packed(fmt, "manifest.json"), "workflow/train.py", "workflow/models.py"],
            [f"{model_dir}/model.pt"], params=["seed", "train", f"models.{model}"],
            metrics=[f"{model_dir}/train_metrics.json"], plots=[f"{model_dir}/history.csv"]))
        summary_deps.append(f"{model_dir}/train_metrics.json")
        onnx_path = artifact_path(model, "onnx-fp32")
        out.append(Stage(
            f"export-{model}",
            f"python -m workflow.export --params {PARAMS} --checkpoint {model_dir}/model.pt "
            f"--packed {packed(fmt, 'test.npy')} --out {onnx_path}",
            [f"{model_dir}/model.pt", packed(fmt, "test.npy"), "workflow/export.py", "workflow/models.py"],
            [onnx_path, onnx_path.rsplit(".", 1)[0] + ".json"], params=["export"]))
        for artifact in ARTIFACTS:
            path = artifact_path(model, artifact)
            eval_out = f"results/eval/{model}/{artifact}.json"
            out.append(Stage(
                f"evaluate-{model}-{artifact}",
                f"python -m workflow.evaluate --params {PARAMS} --artifact {path} --packed {packed(fmt, 'test.npy')} "
                f"--manifest {packed(fmt, 'manifest.json')} --out {eval_out}",
                [path, packed(fmt, "test.npy"), packed(fmt, "manifest.json"), "workflow/evaluate.py"],
                [], params=["evaluate"], metrics=[eval_out]))
            summary_deps.append(eval_out)
            for device in params["benchmark"]["devices"]:
                bench_out = f"results/bench/{device}/{model}/{artifact}.json"
                out.append(Stage(
                    f"benchmark-{device}-{model}-{artifact}",
                    f"python -m workflow.benchmark --params {PARAMS} --device {device} --model-name {model} "
                    f"--artifact {path} --packed {packed(fmt, 'test.npy')} "
                    f"--manifest {packed(fmt, 'manifest.json')} --out {bench_out}",
                    [path, packed(fmt, "test.npy"), packed(fmt, "manifest.json"), "workflow/benchmark.py",
                     "workflow/device_runner.py"],
                    [], params=[f"benchmark.{k}" for k in BENCHMARK_KEYS], metrics=[bench_out]))
                summary_deps.append(bench_out)
    out.append(Stage(
        "aggregate",
        f"python -m workflow.aggregate --params {PARAMS} --results results --out results/summary.csv",
        summary_deps + ["workflow/aggregate.py"],
        ["results/summary.csv", "results/summary.md"]))
    if params.get("detection", {}).get("enabled"):
        out += detection_stages(params["detection"])
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
