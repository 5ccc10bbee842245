"""Training throughput: the train stage vs its compute floor, DDP, threads per stage, detection training.

    .venv/bin/python bench/training.py                       # every section, bench/results/training.json
    .venv/bin/python bench/training.py --sections stage --sizes 32 224

Sections (all on the in-repo CIFAR-10 images, tests/data; on CUDA when train.device auto finds one):

* ``stage``: images/s of ``python -m workflow.train`` (the packed split, seed 002's augmentation, RGB->model
  input, sensor noise, DataLoader, forward, backward, SGD step; evaluation excluded) against the compute
  floor: a bare loop of the same model, batch size, optimizer and threads over in-memory float tensors
  without augmentation. At 32 px (MobileNetV2 0.5, CIFAR-10 as is) and 224 px (MobileNetV2 1.0, the same
  images upscaled, as seed 000's resolution). Each is timed over its second epoch (the first warms up);
  the stage's figure is read from its checkpoint's per-epoch history. Target: stage >= 0.8x the floor.
  The stage runs with ``train.num_workers`` 0 and, as the fix measured here, 1 and 2.
* ``ddp``: the train stage at 32 px with 2 gloo processes x 1 thread vs 1 process x 2 threads (same global
  batch): images/s and the final train loss / test top-1.
* ``threads``: the train stage at 32 px with 2 threads, with 1 thread, and two 1-thread stages side by side
  (what Snakemake runs with ``train.num_threads: 1`` on 2 cores): images/s of each and in all; the figure
  behind params.yaml's default.
* ``detection``: images/s of ``python -m workflow.detection.train`` (YOLOv5n, 320 px, the in-repo COCO128
  subset, mosaic augmentation) against a bare ultralytics loop of the same model (its DetectionModel and
  loss on one in-memory batch, SGD), and the CPU utilisation of the stage's process, with its thread fix and
  with ultralytics' own thread count (cpu_count - 1).

The machine running this may be shared: the JSON says so in ``machine_note``. GPU figures appear only
when a CUDA device was present (``cuda`` is null otherwise; nothing is estimated).
"""
import argparse
import concurrent.futures
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.distributed import launch_command  # noqa: E402
from workflow.io import write_json  # noqa: E402
from workflow.models import build_model  # noqa: E402
from workflow.training import sgd, setup  # noqa: E402

CIFAR_NPZ = ROOT / "tests" / "data" / "cifar10" / "cifar10_subset.npz"
COCO128 = ROOT / "tests" / "data" / "coco128"
MODELS = {32: {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"},
          224: {"arch": "mobilenetv2", "width_mult": 1.0, "input_format": "rgb"}}
TRAIN_IMAGES = {32: 1024, 224: 256}


def params_for(npz, size, images, **train):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="npz", path=str(npz), train_subset=images, test_subset=64, calib_subset=32)
    params["models"] = {"m": MODELS[size]}
    params["benchmark"]["pipeline"]["enabled"] = False  # it names the default models
    params["train"].update(epochs=2, **train)
    params["train"]["schedule"].update(cosine_epochs=2, milestones=[])
    return params


def scaled_npz(tmp, size):
    """The in-repo CIFAR-10 images at ``size`` px (bilinear): the same content for every section."""
    if size == 32:
        return CIFAR_NPZ
    data = np.load(CIFAR_NPZ)
    out = {}
    for split in ("train", "test"):
        rows = data[f"{split}_data"].reshape(-1, 3, 32, 32)[:TRAIN_IMAGES[size] if split == "train" else 64]
        up = torch.nn.functional.interpolate(torch.from_numpy(rows).float(), size=(size, size), mode="bilinear",
                                             align_corners=False)
        out[f"{split}_data"] = up.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        out[f"{split}_labels"] = data[f"{split}_labels"][:len(rows)]
    path = tmp / f"cifar{size}.npz"
    np.savez(path, **out)
    return path


def sh(*cmd, env=None):
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{result.stderr[-3000:]}")
    return result


def pack(tmp, params):
    tmp.mkdir(parents=True, exist_ok=True)
    params_path = tmp / "pack.yaml"
    params_path.write_text(yaml.safe_dump(params))
    packed = tmp / "packed"
    sh(sys.executable, "-m", "workflow.pack", "--params", params_path, "--split", "train", "--out", packed / "train")
    sh(sys.executable, "-m", "workflow.pack", "--params", params_path, "--split", "eval", "--format", "rgb",
       "--out", packed / "rgb")
    return packed


def train_stage(tmp, name, params, packed):
    """One run of the train stage (through the DDP launcher for several processes); its timed (last) epoch."""
    params_path = tmp / f"{name}.yaml"
    params_path.write_text(yaml.safe_dump(params))
    ckpt = tmp / f"{name}-ckpt"
    command = shlex.split(launch_command(params["train"], "workflow.train", f"--params {params_path} --model m "
                                         f"--data {packed} --out {tmp / name} --checkpoints {ckpt}"))
    sh(sys.executable, *command[1:])  # the stage's own command, with this interpreter
    history = torch.load(sorted(ckpt.glob("epoch-*.pt"))[-1], weights_only=False)["history"]
    metrics = json.loads((tmp / name / "train_metrics.json").read_text())
    last = history[-1]
    return {"images_per_s": last["images"] / last["loop_seconds"], "final_train_loss": last["train_loss"],
            "test_top1": metrics["top1"], "device": metrics["device"], "world_size": metrics["world_size"]}


def compute_floor(params, npz, size):
    """The same model, optimizer, batch and threads on in-memory float tensors, no augmentation: images/s of
    the second of two epochs."""
    cfg = params["train"]
    device = setup(cfg, params["seed"])
    data = np.load(npz)
    images = data["train_data"][:TRAIN_IMAGES[size]]
    images = images.reshape(-1, 3, 32, 32) if images.ndim == 2 else images.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(images)).float()
    labels = torch.from_numpy(data["train_labels"][:len(images)].astype(np.int64))
    model = build_model(MODELS[size], 10, size).to(device).train()
    optimizer = sgd(model, cfg["lr"], cfg)
    criterion = torch.nn.CrossEntropyLoss()
    batch = cfg["batch_size"]
    for _ in range(2):
        start, seen = time.perf_counter(), 0
        for i in range(0, len(images) - batch + 1, batch):  # drop_last, as the stage
            x, y = images[i:i + batch].to(device), labels[i:i + batch].to(device)
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"images_per_s": seen / seconds, "device": str(device)}


def section_stage(tmp, sizes, threads, batch):
    """Each stage run is paired with a floor run just before it, so a change in the machine's load between
    runs does not enter the ratio."""
    out = {}
    for size in sizes:
        npz = scaled_npz(tmp, size)
        params = params_for(npz, size, TRAIN_IMAGES[size], num_threads=threads, batch_size=batch)
        packed = pack(tmp / f"s{size}", params)
        runs = {}
        for workers in (0, 1, 2):
            p = params_for(npz, size, TRAIN_IMAGES[size], num_threads=threads, batch_size=batch, num_workers=workers)
            floor = compute_floor(p, npz, size)
            stage = train_stage(tmp / f"s{size}", f"w{workers}", p, packed)
            runs[f"num_workers={workers}"] = {"stage": stage, "floor": floor,
                                               "stage_vs_floor": stage["images_per_s"] / floor["images_per_s"]}
            print(f"{size}px, num_workers={workers}: stage {stage['images_per_s']:.1f} images/s, floor "
                  f"{floor['images_per_s']:.1f} ({stage['images_per_s'] / floor['images_per_s']:.2f}x)", flush=True)
        out[f"{size}px"] = {"model": MODELS[size], "train_images": TRAIN_IMAGES[size], "batch_size": batch,
                            "threads": threads, "runs": runs}
    return out


def section_ddp(tmp, batch):
    npz = CIFAR_NPZ
    params = params_for(npz, 32, TRAIN_IMAGES[32], num_threads=2, batch_size=batch)
    packed = pack(tmp / "ddp", params)
    one = train_stage(tmp / "ddp", "one", params, packed)
    two_params = params_for(npz, 32, TRAIN_IMAGES[32], num_threads=1, batch_size=batch, processes_per_node=2)
    two = train_stage(tmp / "ddp", "two", two_params, packed)
    print(f"DDP: 1 process x 2 threads {one['images_per_s']:.1f} images/s (loss {one['final_train_loss']:.4f}); "
          f"2 gloo processes x 1 thread {two['images_per_s']:.1f} images/s (loss {two['final_train_loss']:.4f})",
          flush=True)
    return {"one_process_2_threads": one, "two_gloo_processes_1_thread": two,
            "speedup": two["images_per_s"] / one["images_per_s"]}


def section_threads(tmp, batch):
    npz = CIFAR_NPZ
    packed = pack(tmp / "threads", params_for(npz, 32, TRAIN_IMAGES[32], batch_size=batch))
    run = lambda name, threads: train_stage(tmp / "threads", name, params_for(  # noqa: E731
        npz, 32, TRAIN_IMAGES[32], num_threads=threads, batch_size=batch), packed)
    two_threads, one_thread = run("t2", 2), run("t1", 1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        side_by_side = list(pool.map(run, ["a", "b"], [1, 1]))
    total = sum(r["images_per_s"] for r in side_by_side)
    print(f"threads: 1 process x 2 threads {two_threads['images_per_s']:.1f} images/s, x 1 thread "
          f"{one_thread['images_per_s']:.1f}; two 1-thread stages side by side {total:.1f} in all", flush=True)
    return {"one_stage_2_threads": two_threads, "one_stage_1_thread": one_thread,
            "two_stages_1_thread_each": side_by_side, "two_stages_images_per_s": total,
            "side_by_side_vs_2_threads": total / two_threads["images_per_s"]}


DETECTION_DEFAULT_THREADS = """
import sys
from workflow.detection import kd
kd.Trainer.num_threads = property(lambda self: None, lambda self, value: None)  # ultralytics' own thread count
from workflow.detection.train import main
main(sys.argv[1:])
"""


def process_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def detection_stage(tmp, name, params_path, data, ultralytics_threads=False):
    """The stage's images/s and CPU use (cores busy) between the ends of its first and third epochs: no
    start-up, no final validation. Epoch ends are seen as rows appearing in ultralytics' results.csv."""
    args = ["--params", params_path, "--model", "yolov5n", "--data", data, "--out", tmp / name,
            "--checkpoints", tmp / f"{name}-run"]
    cmd = [sys.executable, "-c", DETECTION_DEFAULT_THREADS] if ultralytics_threads else \
        [sys.executable, "-m", "workflow.detection.train"]
    proc = subprocess.Popen([*cmd, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    results, epoch_ends = tmp / f"{name}-run" / "results.csv", {}
    while proc.poll() is None:
        rows = len(results.read_text().splitlines()) - 1 if results.exists() else 0
        if rows not in epoch_ends:
            try:
                epoch_ends[rows] = (time.perf_counter(), process_cpu_seconds(proc.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
        time.sleep(0.1)
    if proc.wait():
        raise SystemExit(f"workflow.detection.train failed:\n{proc.stderr.read()[-3000:]}")
    (t1, cpu1), (t3, cpu3) = epoch_ends[1], epoch_ends[3]
    images = json.loads((tmp / name / "train_metrics.json").read_text())["train_images"]
    return {"images_per_s": 2 * images / (t3 - t1), "cpu_cores_busy": (cpu3 - cpu1) / (t3 - t1)}


def bare_ultralytics_loop(det, threads, steps=6):
    """YOLOv5n's DetectionModel and its loss on one in-memory batch, SGD: the compute floor."""
    from workflow.detection import ultra  # noqa: F401 - offline settings before ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from workflow.detection.modelcfg import write_model_yaml

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = det["models"]["yolov5n"]
    path = Path(tempfile.mkdtemp()) / "m.yaml"
    write_model_yaml(spec, 1, path)
    model = DetectionModel(str(path), nc=1, verbose=False).train()
    model.args = get_cfg()  # the loss gains (box, cls, dfl), ultralytics' defaults as the trainer's
    batch_size, imgsz = det["train"]["batch_size"], spec["imgsz"]
    rng = torch.Generator().manual_seed(0)
    batch = {"img": torch.rand(batch_size, 3, imgsz, imgsz, generator=rng),
             "batch_idx": torch.arange(batch_size).float(), "cls": torch.zeros(batch_size, 1),
             "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]]).repeat(batch_size, 1)}
    optimizer = torch.optim.SGD(model.parameters(), lr=det["train"]["lr0"], momentum=det["train"]["momentum"])
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    return {"images_per_s": steps * batch_size / (time.perf_counter() - start), "batch_size": batch_size}


def section_detection(tmp):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    det = params["detection"]
    det["data"].update(path=str(COCO128), val_fraction=0.25, calib_subset=8)  # 24 train / 8 val images
    det["train"].update(epochs=4)  # epochs 2 and 3 are timed
    params_path = tmp / "det.yaml"
    params_path.write_text(yaml.safe_dump(params))
    sh(sys.executable, "-m", "workflow.detection.pack", "--params", params_path, "--out", tmp / "det-data")
    fixed = detection_stage(tmp, "fixed", params_path, tmp / "det-data")
    default = detection_stage(tmp, "default", params_path, tmp / "det-data", ultralytics_threads=True)
    floor = bare_ultralytics_loop(det, det["train"]["num_threads"])
    print(f"detection: floor {floor['images_per_s']:.1f} images/s; stage {fixed['images_per_s']:.1f} "
          f"({fixed['cpu_cores_busy']:.2f} cores busy); with ultralytics' thread count "
          f"{default['images_per_s']:.1f} ({default['cpu_cores_busy']:.2f} cores busy)", flush=True)
    return {"model": "yolov5n", "imgsz": det["models"]["yolov5n"]["imgsz"], "batch_size": det["train"]["batch_size"],
            "num_threads": det["train"]["num_threads"], "workers": det["train"]["workers"],
            "stage": fixed, "stage_with_ultralytics_threads": default, "bare_loop": floor,
            "stage_vs_bare_loop": fixed["images_per_s"] / floor["images_per_s"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["stage", "ddp", "threads", "detection"],
                        choices=["stage", "ddp", "threads", "detection"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 224], choices=[32, 224])
    parser.add_argument("--train-images", type=int, help="training images per size (default: 1024 at 32 px, "
                        "256 at 224 px); fewer for a quick check on a busy machine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "training.json"))
    parser.add_argument("--machine-note", default="shared 2-core machine (other jobs running): rerun on an idle "
                                                  "machine for final figures")
    args = parser.parse_args()
    if args.train_images:
        TRAIN_IMAGES.update(dict.fromkeys(TRAIN_IMAGES, args.train_images))
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    result.update(target={"stage_vs_floor": ">= 0.8 on CPU"}, cuda=cuda, cpu=platform.processor() or platform.machine(),
                  cpu_count=os.cpu_count(), torch=torch.__version__, machine_note=args.machine_note)
    sections = {"stage": lambda tmp: section_stage(tmp, args.sizes, args.threads, args.batch),
                "ddp": lambda tmp: section_ddp(tmp, args.batch),
                "threads": lambda tmp: section_threads(tmp, args.batch), "detection": section_detection}
    with tempfile.TemporaryDirectory(prefix="bench-training.") as tmp:
        for name in args.sections:
            result[name] = sections[name](Path(tmp))
            result.setdefault("commands", {})[name] = " ".join(["python bench/training.py", *sys.argv[1:]])
            write_json(out, result)  # after every section: a long run keeps what it measured
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
