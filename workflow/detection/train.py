"""Detection train stage: one `detection.models` entry with ultralytics, offline, from its yaml.

    python -m workflow.detection.train --params params.yaml --model yolov5n --data data/detection \
        --out results/detection/models/yolov5n [--teacher results/detection/models/yolov5s/model.pt]

The model yaml is generated from the entry (workflow.detection.modelcfg) and written to
<out>/model.yaml. Training is from scratch (``pretrained=False``), seeded and deterministic
(``deterministic=True``: torch deterministic algorithms), with ultralytics' progress bars.
Checkpoints go to --checkpoints (default results/detection/checkpoints/<model>/weights/last.pt,
every epoch); a rerun resumes an unfinished run from there. A non-square ``imgsz`` [h, w]
trains at max(h, w) (ultralytics trains square mosaics) and is exported/evaluated at h x w.

With ``prune`` the entry starts from another entry's trained model.pt (--prune-from) and runs
seed 003's iterative channel pruning with fine-tuning (prune_and_finetune); model.yaml then
describes the architecture before pruning, model.pt holds the pruned module.

With ``teacher`` the student is distilled (kd: output | feature, factor kd_factor; see
workflow.detection.kd). The teacher is another entry's model.pt, or a path to any
ultralytics checkpoint (e.g. a pre-trained YOLOv5m for the full-scale runs).

Outputs: model.pt (the final-epoch EMA weights of the student alone, an ultralytics checkpoint),
model.yaml, history.csv (ultralytics' per-epoch results.csv) and train_metrics.json (written last).
The final epoch is used, not ultralytics' best.pt: picking by val mAP would select on the split
every artifact is evaluated on.
"""
import argparse
import shutil
import time
from copy import deepcopy
from pathlib import Path

import torch

from workflow.detection.ultra import OFFLINE_SETTINGS  # first: offline settings before ultralytics loads
from workflow import layout
from workflow.config import load_params, params_hash
from workflow.detection.modelcfg import write_model_yaml
from workflow.detection.pack import verify_split
from workflow.detection.plan import imgsz_hw
from workflow.errors import UserError, cli
from workflow.io import atomic_path, write_json
from workflow.models import count_params
from workflow.provenance import provenance


def teacher_path(params, spec, cli_teacher):
    teacher = spec.get("teacher")
    if not teacher:
        return None
    if teacher in params["detection"]["models"]:
        if not cli_teacher:
            raise UserError(f"model teacher {teacher!r} is a detection model: pass its model.pt with --teacher")
        return Path(cli_teacher)
    path = Path(teacher)
    if not path.is_file():
        raise UserError(f"detection teacher {teacher!r}: neither a detection.models entry nor a checkpoint file")
    return path


def train_args(train, spec, data_yaml, run_dir, seed, teacher):
    args = dict(
        data=str(data_yaml), epochs=train["epochs"], imgsz=max(imgsz_hw(spec)), batch=train["batch_size"],
        optimizer=train["optimizer"], lr0=train["lr0"], lrf=train["lrf"], momentum=train["momentum"],
        weight_decay=train["weight_decay"], warmup_epochs=train["warmup_epochs"], device=train["device"],
        workers=train["workers"], seed=seed, deterministic=train["deterministic"],
        amp=False, pretrained=False, plots=False, project=str(run_dir.parent.resolve()), name=run_dir.name,
        exist_ok=True, save_period=-1, patience=train["epochs"] + 1, verbose=True,
        val=False)  # ultralytics still validates after the final epoch; the evaluate stage measures every artifact
    if teacher:
        args.update(distill_model=str(teacher), dis=float(spec["kd_factor"]))
    return args


def final_model(run_dir):
    ckpt = torch.load(run_dir / "weights" / "last.pt", map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float()


def prune_and_finetune(det, spec, source, data_yaml, run_dir, yaml_path, seed):
    """Seed 003's iterative channel pruning: each iteration removes ``ratio`` of the remaining channels
    (global ranking by |BatchNorm scale|, torch-pruning's DependencyGraph keeps every coupled layer
    consistent; the Detect head is left whole), then fine-tunes ``finetune_epochs`` with ultralytics."""
    import torch_pruning as tp
    from ultralytics.nn.modules.head import Detect

    from workflow.detection.kd import Trainer

    prune = spec["prune"]
    model = torch.load(source, map_location="cpu", weights_only=False)["model"].float()
    height, width = imgsz_hw(spec)
    channels = []
    for iteration in range(1, prune["iterations"] + 1):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        pruner = tp.pruner.MetaPruner(
            model, torch.zeros(1, 3, height, width), importance=tp.importance.BNScaleImportance(),
            global_pruning=True, pruning_ratio=prune["ratio"],
            ignored_layers=[m for m in model.modules() if isinstance(m, Detect)],
            output_transform=lambda y: y[0])
        pruner.step()
        channels.append([m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
        iteration_dir = run_dir / f"prune{iteration}"
        args = train_args({**det["train"], "epochs": prune["finetune_epochs"]}, spec, data_yaml, iteration_dir,
                          seed, None)
        trainer = Trainer(overrides={"model": str(yaml_path.resolve()), **args})
        trainer.num_threads = det["train"]["num_threads"]
        trainer.model = model  # a module: ultralytics trains it as it is instead of building the yaml
        trainer.train()
        model = final_model(iteration_dir)
    return iteration_dir, trainer, channels


def unfinished_checkpoint(run_dir):
    """last.pt of an interrupted run (ultralytics marks a finished one with epoch -1), else None."""
    last = run_dir / "weights" / "last.pt"
    if not last.exists():
        return None
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return last if ckpt.get("epoch", -1) != -1 else None


def save_student(last, out):
    """The final EMA weights without the teacher/distillation wrapper, loadable by ultralytics YOLO()."""
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    model = getattr(model, "student_model", model)
    model.criterion = None  # rebuilt on demand; holds the training batch's tensors
    student = {"model": deepcopy(model).float().eval(), "train_args": ckpt.get("train_args", {}),
               "train_metrics": ckpt.get("train_metrics", {}), "date": ckpt.get("date"),
               "version": ckpt.get("version"), "epoch": -1}
    with atomic_path(out) as tmp:
        torch.save(student, tmp)
    return model


def train(params, name, data_dir, out_dir, checkpoints, teacher_cli, prune_from=None):
    det = params["detection"]
    if name not in det["models"]:
        raise UserError(f"--model {name!r}: not in params.yaml detection.models ({', '.join(det['models'])})")
    spec = det["models"][name]
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = verify_split(data_dir, "train")
    teacher = teacher_path(params, spec, teacher_cli)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_metrics.json").unlink(missing_ok=True)
    yaml_path = out_dir / "model.yaml"
    write_model_yaml(spec, manifest["nc"], yaml_path)
    run_dir = Path(checkpoints or layout.det_epoch_checkpoints(name))
    torch.set_num_threads(det["train"]["num_threads"])

    start = time.perf_counter()
    resume, pruned_channels = None, None
    if spec.get("prune"):
        if not prune_from or not Path(prune_from).is_file():
            raise UserError(f"model {name} prunes {spec['prune']['source']!r}: pass its model.pt with --prune-from")
        shutil.rmtree(run_dir, ignore_errors=True)  # fine-tuning a pruned module restarts; it does not resume
        run_dir, trainer, pruned_channels = prune_and_finetune(det, spec, prune_from, data_dir / "data.yaml",
                                                               run_dir, yaml_path, params["seed"])
    else:
        from workflow.detection.kd import Trainer

        resume = unfinished_checkpoint(run_dir)
        if resume:
            print(f"resuming {name} from {resume}")
            trainer = Trainer(overrides={"resume": str(resume)})
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            trainer = Trainer(overrides={"model": str(yaml_path.resolve()),
                                         **train_args(det["train"], spec, data_dir / "data.yaml", run_dir,
                                                      params["seed"], teacher)})
        trainer.kd_method, trainer.num_threads = spec.get("kd"), det["train"]["num_threads"]
        try:
            trainer.train()
        except ValueError as err:  # e.g. output KD between incompatible heads
            raise UserError(f"detection model {name}: {err}") from None
    seconds = time.perf_counter() - start
    model = save_student(run_dir / "weights" / "last.pt", out_dir / "model.pt")
    shutil.copyfile(run_dir / "results.csv", out_dir / "history.csv")
    final = trainer.metrics or {}
    metrics = {
        "model": name, "spec": spec, "imgsz": list(imgsz_hw(spec)), "train_imgsz": max(imgsz_hw(spec)),
        "epochs": spec["prune"]["finetune_epochs"] * spec["prune"]["iterations"] if spec.get("prune")
        else det["train"]["epochs"], "train_images": manifest["splits"]["train"]["images"],
        "params": count_params(model),  # workflow/onnx_stats.py's rule
        "teacher": str(teacher) if teacher else None, "kd": spec.get("kd"), "kd_factor": spec.get("kd_factor"),
        "val_map50": final.get("metrics/mAP50(B)"), "val_map50_95": final.get("metrics/mAP50-95(B)"),
        "train_seconds": seconds, "resumed_from": str(resume) if resume else None,
        "pruned_from": str(prune_from) if spec.get("prune") else None, "pruned_bn_channels": pruned_channels,
        "offline_settings": OFFLINE_SETTINGS, "data_manifest_sha256": manifest["splits"]["train"]["sha256"],
        "provenance": provenance(params_hash({"seed": params["seed"], "train": det["train"], "model": spec}),
                                 ("ultralytics",)),
    }
    write_json(out_dir / "train_metrics.json", metrics)
    return metrics


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=layout.DET_DATA)
    parser.add_argument("--out", required=True)
    parser.add_argument("--teacher", help="the teacher's model.pt when the teacher is a detection.models entry")
    parser.add_argument("--checkpoints", help="ultralytics run folder (default results/detection/checkpoints/<model>)")
    parser.add_argument("--prune-from", help="the trained model.pt that a `prune` entry starts from")
    args = parser.parse_args(argv)
    m = train(load_params(args.params), args.model, args.data, args.out, args.checkpoints, args.teacher,
              args.prune_from)
    print(f"trained {m['model']}: val mAP50-95 {m['val_map50_95']}, {m['train_seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
