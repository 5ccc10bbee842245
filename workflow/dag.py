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
# An artifact's name starts with its file format: onnx-fp32, onnx-int8-static, tflite-fp16 ...
FILE_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "hef": ".hef"}
BENCHMARK_KEYS = ("warmup_runs", "min_runs", "min_duration_s", "threads", "samples")
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


def quantize_args(spec):
    """Command-line options of workflow.quantize for one `artifacts` entry (Snakefile and dvc.yaml share it)."""
    q = spec["quantize"]
    args = ["--method", q["method"]]
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
        f"{quantize_args(params['artifacts'][artifact])} --calib {packed(fmt, 'calib.npy')} "
        f"--manifest {packed(fmt, 'manifest.json')} --out {out}",
        [source, packed(fmt, "calib.npy"), packed(fmt, "manifest.json"), "workflow/quantize.py"],
        [out, report_path(model, artifact)], params=[f"artifacts.{artifact}"])


def tflite_args(spec, model):
    """Command-line options of workflow.tflite for one `artifacts` entry (Snakefile and dvc.yaml share it)."""
    t = spec["tflite"]
    args = ["--precision", t["precision"]]
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
        f"python -m workflow.tflite --params {PARAMS} --model {source} {tflite_args(spec, model)} "
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
PRODUCERS = {"quantize": quantize_stage, "tflite": tflite_stage, "hailo": hailo_stages}


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
                     "workflow/device_runner.py"],
                    [], params=[f"benchmark.{k}" for k in benchmark_keys(artifact)], metrics=[bench_out]))
                summary_deps.append(bench_out)
    out.append(Stage(
        "aggregate",
        f"python -m workflow.aggregate --params {PARAMS} --results results --out results/summary.csv",
        summary_deps + ["workflow/aggregate.py"],
        ["results/summary.csv", "results/summary.md"]))
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
