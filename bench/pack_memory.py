"""Peak memory of the pack stage at 1x and 10x the number of images (target: flat).

    .venv/bin/python bench/pack_memory.py [--images 500] [--factor 10] [--workers 2]

An ImageFolder of real, variable-size JPEGs (the in-repo COCO128 photographs and ILSVRC-2012
fixture images, linked over and over: ``--images`` training files and a quarter as many
validation files) is packed with the ImageNet policy at 224 px (``--split train``: JPEG shards;
``--split eval --format rgb``: resized + center-cropped test and calibration splits), then the
same with ``--factor`` times the files. Each run is ``python -m workflow.pack`` as the pipeline
runs it; its resident memory is sampled every 20 ms: the sum over the process and its
``--workers`` pack workers (the peak of what the stage holds) and the largest single process.
Writes bench/results/pack_memory.json.
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.io import write_json  # noqa: E402

MACHINE_NOTE = ("2-core machine shared with other jobs while this ran (times are noisy; memory is not affected "
                "by the load; rerun on an idle machine for the record)")
SOURCES = [ROOT / "tests/data/coco128/images/train2017", ROOT / "tests/data/imagenet"]


def image_folder(dest, train_count):
    files = sorted(p for folder in SOURCES for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    for split, count in (("train", train_count), ("val", max(1, train_count // 4))):
        for i in range(count):
            image = files[i % len(files)]
            target = dest / split / f"class{i % 10}" / f"{i:07d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image)
    return dest, len(files)


def peak_rss(command):
    """(peak RSS summed over the process tree, peak RSS of one process, wall seconds) of a command."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent, peaks, start = psutil.Process(process.pid), [0, 0], time.perf_counter()

    def sample():
        while process.poll() is None:
            try:
                rss = [p.memory_info().rss for p in [parent, *parent.children(recursive=True)]]
            except psutil.Error:
                continue
            peaks[0], peaks[1] = max(peaks[0], sum(rss)), max(peaks[1], max(rss))
            time.sleep(0.02)

    thread = threading.Thread(target=sample)
    thread.start()
    output = process.communicate()[0]
    thread.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{output[-2000:]}")
    return peaks[0], peaks[1], time.perf_counter() - start


def pack_run(tmp, images, workers):
    folder, distinct = image_folder(tmp / f"folder-{images}", images)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="imagefolder", path=str(folder), train_subset=0, test_subset=0, calib_subset=64,
                          image_size=224, pack_workers=workers)
    params["train"]["augment"]["random_resized_crop"] = {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}
    params_file = tmp / f"params-{images}.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = {"images": {"train": images, "val": max(1, images // 4), "distinct_files": distinct}}
    for split, extra in (("train", []), ("eval", ["--format", "rgb"])):
        total, single, seconds = peak_rss([sys.executable, "-m", "workflow.pack", "--params", str(params_file),
                                           "--split", split, *extra, "--out", str(tmp / f"packed-{images}" / split)])
        out[split] = {"peak_rss_mb_total": total / 2**20, "peak_rss_mb_largest_process": single / 2**20,
                      "seconds": seconds}
        print(f"{images} images, --split {split}: peak RSS {total / 2**20:.0f} MB (largest process "
              f"{single / 2**20:.0f} MB), {seconds:.1f} s", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=500, help="training images of the 1x run")
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="data.pack_workers")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pack_memory.json"))
    p.add_argument("--machine-note", default=MACHINE_NOTE,
                    help="how busy the machine was (recorded as machine_note)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pack-memory.") as tmp:
        runs = {f"{factor}x": pack_run(Path(tmp), args.images * factor, args.workers) for factor in (1, args.factor)}
    big, small = runs[f"{args.factor}x"], runs["1x"]
    result = {
        "runs": runs, "workers": args.workers, "image_size": 224,
        "growth": {split: big[split]["peak_rss_mb_total"] / small[split]["peak_rss_mb_total"]
                   for split in ("train", "eval")},
        "target": "peak RSS flat in the number of images (growth ~1.0)",
        "machine_note": args.machine_note, "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    write_json(args.out, result)
    print(f"growth {args.factor}x images: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["growth"].items())
          + f" -> {args.out}")


if __name__ == "__main__":
    main()
