"""Accuracy effect of each optimization, from a finished run's results/ tree.

    .venv/bin/python bench/optimizations.py [--params params.yaml] [--results results]

Figures (all top-1 measured from the exported artifact by its own runtime, results/eval/):
  quantization  every quantized artifact (ORT PTQ dynamic, static per calibration method, QAT)
                vs the same model's onnx-fp32
  distillation  every distilled student vs its baseline: the model it started from (distill.init),
                or, from scratch, an undistilled model of the same arch, width and input format;
                the teacher's top-1 beside it
  pruning       every pruned model vs the model it was pruned from, with parameters and MACs per
                pass, and vs an unpruned model of the same arch/width/format trained for the same
                total epochs when the matrix has one (e.g. a prune entry with ratio 0: the same
                recipe without removal)
Each comparison records both models' total training epochs, so unequal budgets are visible.
Writes bench/results/optimizations.json.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.config import load_params  # noqa: E402
from workflow.producers import artifacts_of, producer  # noqa: E402
from workflow.model_specs import total_epochs  # noqa: E402


def read(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def top1(results, model, artifact="onnx-fp32"):
    evaluation = read(results / "eval" / model / f"{artifact}.json")
    if evaluation is None or evaluation.get("status") == "failed":
        return None
    return evaluation["top1"]


def delta(a, b):
    return None if a is None or b is None else a - b


def quantization(params, results):
    rows = []
    for model in params["models"]:
        fp32 = top1(results, model)
        for artifact in artifacts_of(params, model):
            kind = producer(params, artifact)
            if kind not in ("quantize", "qat"):
                continue
            report = read(results / "artifacts" / model / f"{artifact}.json") or {}
            method = "qat" if kind == "qat" else params["artifacts"][artifact]["quantize"]["method"]
            value = top1(results, model, artifact)
            rows.append({"model": model, "input_format": params["models"][model]["input_format"],
                         "artifact": artifact, "method": method, "calibration": report.get("calibration"),
                         "status": report.get("status", "missing"), "reason": report.get("reason"),
                         "top1_fp32": fp32, "top1": value, "top1_change": delta(value, fp32),
                         "size_ratio": report.get("size_ratio")})
    return rows


def same_family(spec, other):
    return all(spec[k] == other[k] for k in ("arch", "width_mult", "input_format"))


def distillation(params, results):
    models, rows = params["models"], []
    for model, spec in models.items():
        if "distill" not in spec:
            continue
        d = spec["distill"]
        baseline = d.get("init", "scratch")
        if baseline == "scratch":
            baseline = next((m for m, s in models.items() if m != model and same_family(spec, s)
                             and "distill" not in s and "prune" not in s), None)
        student, base = top1(results, model), top1(results, baseline) if baseline else None
        rows.append({"student": model, "input_format": spec["input_format"], "kd_type": d["type"],
                     "teacher": d["teacher"], "init": d.get("init", "scratch"), "baseline": baseline,
                     "top1_student": student, "top1_baseline": base, "top1_teacher": top1(results, d["teacher"]),
                     "top1_change": delta(student, base),
                     "epochs_student": total_epochs(params, model),
                     "epochs_baseline": total_epochs(params, baseline) if baseline else None})
    return rows


def pruning(params, results):
    models, rows = params["models"], []
    for model, spec in models.items():
        if "prune" not in spec:
            continue
        source, epochs = spec["prune"]["from"], total_epochs(params, model)
        control = next((m for m, s in models.items() if m not in (model, source) and same_family(spec, s)
                        and total_epochs(params, m) == epochs
                        and ("prune" not in s or s["prune"].get("ratio") == 0)), None)
        report = read(results / "models" / model / "prune_report.json") or {}
        pruned = top1(results, model)
        rows.append({"model": model, "input_format": spec["input_format"], "from": source,
                     "ratio": spec["prune"].get("ratio"), "passes": report.get("iterations"),
                     "params_ratio": report.get("params_ratio"), "macs_ratio": report.get("macs_ratio"),
                     "top1_pruned": pruned, "top1_unpruned": top1(results, source),
                     "top1_change": delta(pruned, top1(results, source)),
                     "epochs_pruned": epochs, "epochs_unpruned": total_epochs(params, source),
                     "equal_epochs_control": control,
                     "top1_change_equal_epochs": delta(pruned, top1(results, control)) if control else None})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "optimizations.json"))
    args = parser.parse_args()
    params, results = load_params(args.params), Path(args.results)
    figures = {"params": args.params, "results": str(results), "quantization": quantization(params, results),
               "distillation": distillation(params, results), "pruning": pruning(params, results)}
    fmt = lambda v: "n/a" if v is None else f"{v * 100:+.2f} pts"
    for row in figures["quantization"]:
        print(f"{row['model']:32s} {row['artifact']:20s} {row['status']:7s} top-1 change vs fp32 "
              f"{fmt(row['top1_change'])}")
    for row in figures["distillation"]:
        print(f"{row['student']:32s} {row['kd_type']} KD from {row['teacher']}: vs {row['baseline']} "
              f"{fmt(row['top1_change'])} ({row['epochs_student']} vs {row['epochs_baseline']} epochs)")
    for row in figures["pruning"]:
        print(f"{row['model']:32s} params x{row['params_ratio'] or float('nan'):.2f}: vs {row['from']} "
              f"{fmt(row['top1_change'])} ({row['epochs_pruned']} vs {row['epochs_unpruned']} epochs); "
              f"equal-epoch control: {row['equal_epochs_control'] or 'none in the matrix'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
