"""Time and memory to reject hostile params.yaml files (tests/test_bounded_params.py's cases).

    .venv/bin/python bench/hostile_params.py [--repeats 5]

For each crafted file (a YAML bomb of nested anchors, a 50 MB file, a 200 kB path, 10 000
levels of nesting, a recursive alias, NaN, a 5000-digit integer, 5000 unknown keys) and for
the shipped params.yaml (the baseline that loads), measures in this process the wall time
of workflow.config.load_params (median of --repeats) and the peak memory it allocates
(tracemalloc), and keeps the error line. Writes bench/results/hostile_params.json. Target:
each rejection in well under a second (< 0.25 s) with peak memory < 50 MB, one line of
< 400 characters.
"""
import argparse
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_bounded_params import HOSTILE  # noqa: E402
from workflow.config import load_params  # noqa: E402
from workflow.errors import UserError  # noqa: E402
from workflow.io import write_json  # noqa: E402

TARGET_S, TARGET_MB, TARGET_LINE = 0.25, 50, 400


def measure(path, repeats):
    """(median seconds, peak MB allocated, the error line or None)."""
    times, message = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            load_params(path)
        except UserError as err:
            message = str(err)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    try:
        load_params(path)
    except UserError:
        pass
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return statistics.median(times), peak, message


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--machine-note", default="", help="how busy the machine was (recorded as machine_note)")
    args = parser.parse_args()
    cases = {}
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        for name, (make, _) in sorted(HOSTILE.items()):
            path = Path(tmp) / "params.yaml"
            path.write_text(make())
            seconds, peak_mb, message = measure(path, args.repeats)
            cases[name] = {"file_bytes": path.stat().st_size, "seconds": seconds, "peak_mb": peak_mb,
                           "error": message and message.replace(str(path), "params.yaml"),
                           "error_chars": len(message or "")}
            print(f"{name:14s} {cases[name]['file_bytes'] / 1e6:8.2f} MB  {seconds * 1000:8.1f} ms  "
                  f"{peak_mb:6.1f} MB peak  {(message or 'LOADED')[-90:]}")
    seconds, peak_mb, message = measure(ROOT / "params.yaml", args.repeats)
    baseline = {"seconds": seconds, "peak_mb": peak_mb, "loaded": message is None}
    print(f"{'shipped':14s} {'':11s} {seconds * 1000:8.1f} ms  {peak_mb:6.1f} MB peak  (params.yaml, loads)")
    met = all(c["error"] and c["seconds"] < TARGET_S and c["peak_mb"] < TARGET_MB and c["error_chars"] < TARGET_LINE
              for c in cases.values())
    out = ROOT / "bench" / "results" / "hostile_params.json"
    write_json(out, {
        "what": "workflow.config.load_params on crafted params.yaml files: time and peak allocation to reject",
        "cases": cases, "shipped_params": baseline, "repeats": args.repeats,
        "target": {"seconds_max": TARGET_S, "peak_mb_max": TARGET_MB, "error_chars_max": TARGET_LINE},
        "met": met,
        "host": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "machine_note": args.machine_note,
    })
    print(f"{'all within target' if met else 'TARGET MISSED'} -> {out}")


if __name__ == "__main__":
    main()
