"""On-device latency benchmark for one model file.

Self-contained on purpose: it is copied to boards and run there, so it imports only
the standard library, numpy and the runtime it drives (never the ``workflow`` package).

    python device_runner.py --model m.onnx --inputs samples.npz --runtime onnxruntime \
        --warmup 10 --min-runs 50 --min-duration 1 --threads 1,2 --out result.json

``samples.npz`` holds one array per model input name, first axis = sample; the runner
feeds them one at a time (batch 1), cycling. The method follows TFLite's
benchmark_model and onnxruntime_perf_test: for every thread count a fresh session is
loaded (timed), its first inference is timed on its own, warm-up runs are discarded,
then runs are timed with ``time.perf_counter_ns`` until both ``--min-runs`` and
``--min-duration`` are reached. Feeds are built before timing, so the loop does no
work besides the runtime call and reading the clock.

A runtime is one ``Runtime`` subclass registered in ``RUNTIMES``; adding LiteRT
(XNNPACK on/off) or HailoRT means adding one class.

Mistakes (missing file, runtime not installed, inputs that do not match the model)
print one ``error: ...`` line on stderr and exit with status 2. The result JSON is
written atomically, so a failed run leaves no file.
"""
import argparse
import datetime
import functools
import glob
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMA = "device_runner/1"


class RunnerError(Exception):
    """A problem the user can fix; reported as one line, never a traceback."""


# ----------------------------------------------------------------------------- runtimes
class Runtime:
    """Adapter for one inference runtime.

    ``load(threads)`` opens a fresh session; ``run`` then calls the model on one feed
    (the object ``make_feed`` built from a {input name: batch-1 array} dict).
    "Providers" are ORT execution providers, LiteRT delegates or Hailo devices.
    A subclass sets ``version`` and may bind ``run`` to the runtime's own call in
    ``load``, so the timing loop calls it directly.
    """

    name = None
    version = None
    default_providers = ()

    def __init__(self, model_path, providers):
        self.model_path = str(model_path)
        self.providers_requested = list(providers or self.default_providers)

    def load(self, threads):
        raise NotImplementedError

    def input_specs(self):
        """[(name, shape with None for a dynamic dim, numpy dtype)] of the loaded model."""
        raise NotImplementedError

    def output_specs(self):
        raise NotImplementedError

    def make_feed(self, sample):
        return sample

    def run(self, feed):
        raise NotImplementedError

    def providers_active(self):
        raise NotImplementedError

    def session_options(self, threads):
        """The settings that shape the measurement, recorded in the result."""
        return {"threads": threads}

    def close(self):
        pass


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    default_providers = ("CPUExecutionProvider",)
    DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int16)": np.int16,
              "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}

    def __init__(self, model_path, providers):
        super().__init__(model_path, providers)
        try:
            import onnxruntime
        except ImportError:
            raise RunnerError("onnxruntime is not installed (pip install onnxruntime)") from None
        self.ort = onnxruntime
        self.version = onnxruntime.__version__
        self.session = None
        self.run = None

    def session_options(self, threads):
        return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
                "graph_optimization_level": "all"}

    def load(self, threads):
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; the runner reports a provider fallback itself
        try:
            self.session = self.ort.InferenceSession(self.model_path, opts, providers=self.providers_requested)
        except Exception as err:  # ORT raises its own pybind exception types
            raise RunnerError(f"{self.model_path}: onnxruntime cannot load the model: "
                              f"{_first_line(err)}") from None
        # session.run(None, feed) as a C-level partial: no Python frame of ours between the clock reads.
        self.run = functools.partial(self.session.run, None)

    def input_specs(self):
        return [(i.name, [d if isinstance(d, int) else None for d in i.shape], self.DTYPES.get(i.type))
                for i in self.session.get_inputs()]

    def output_specs(self):
        return [(o.name, [d if isinstance(d, int) else None for d in o.shape], self.DTYPES.get(o.type))
                for o in self.session.get_outputs()]

    def providers_active(self):
        return list(self.session.get_providers())

    def close(self):
        self.session = self.run = None


RUNTIMES = {cls.name: cls for cls in (OnnxRuntime,)}


# ----------------------------------------------------------------------------- measurement
def time_runs(run, feeds, warmup, min_runs, min_duration_s):
    """Warm up, then time runs until both min_runs and min_duration_s are reached.

    Returns (latencies in ns, wall time of the timed loop in ns). The first
    inference of a session must already have happened (it is reported separately).
    """
    clock = time.perf_counter_ns
    for feed in itertools.islice(itertools.cycle(feeds), warmup):
        run(feed)
    min_duration_ns = int(min_duration_s * 1e9)
    latencies = []
    append = latencies.append
    start = clock()
    for feed in itertools.cycle(feeds):
        t0 = clock()
        run(feed)
        t1 = clock()
        append(t1 - t0)
        if len(latencies) >= min_runs and t1 - start >= min_duration_ns:
            return latencies, t1 - start


def latency_stats(latencies_ns):
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"min": float(ms.min()), "mean": float(ms.mean()), "std": float(ms.std()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(ms.max())}


def benchmark_threads(runtime, feeds_raw, threads, warmup, min_runs, min_duration_s):
    """One fresh session at ``threads``: load time, first run, then the timed loop (the session stays open)."""
    t0 = time.perf_counter_ns()
    runtime.load(threads)
    load_ns = time.perf_counter_ns() - t0
    check_inputs(runtime.input_specs(), feeds_raw[0])
    feeds = [runtime.make_feed(sample) for sample in feeds_raw]
    t0 = time.perf_counter_ns()
    try:
        runtime.run(feeds[0])
    except Exception as err:  # the runtime's own error types
        raise RunnerError(f"{runtime.model_path}: first inference failed: {_first_line(err)}") from None
    first_ns = time.perf_counter_ns() - t0
    latencies, total_ns = time_runs(runtime.run, feeds, warmup, min_runs, min_duration_s)
    result = {
        "threads": threads,
        "session_options": runtime.session_options(threads),
        "providers_active": runtime.providers_active(),
        "load_ms": load_ns / 1e6,
        "first_run_ms": first_ns / 1e6,
        "warmup_runs": warmup,
        "runs": len(latencies),
        "duration_s": total_ns / 1e9,
        "throughput_fps": len(latencies) / (total_ns / 1e9),
        "latency_ms": latency_stats(latencies),
        "latencies_ms": [round(ns / 1e6, 5) for ns in latencies],  # every timed run, for distributions
        "peak_rss_mb_so_far": peak_rss_mb(),
    }
    return result


# ----------------------------------------------------------------------------- inputs
def load_samples(path):
    """{name: array (N, ...)} -> list of N feeds {name: (1, ...) contiguous array}."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise RunnerError(f"{path}: inputs file not found") from None
    except (OSError, ValueError) as err:
        raise RunnerError(f"{path}: not a readable .npz file ({_first_line(err)})") from None
    counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
    if not arrays or min(counts.values()) == 0:
        raise RunnerError(f"{path}: no samples (expected one array per model input, first axis = sample)")
    if len(set(counts.values())) > 1:
        raise RunnerError(f"{path}: arrays have different sample counts {counts}")
    n = next(iter(counts.values()))
    return [{name: np.ascontiguousarray(a[i:i + 1]) for name, a in arrays.items()} for i in range(n)]


def check_inputs(specs, sample):
    expected = [name for name, _, _ in specs]
    if sorted(expected) != sorted(sample):
        raise RunnerError(f"input names do not match: the model expects {expected}, "
                          f"the inputs file has {sorted(sample)}")
    for name, shape, dtype in specs:
        got = sample[name]
        if len(shape) != got.ndim or any(d is not None and d != g for d, g in zip(shape, got.shape)):
            shape_text = "x".join("?" if d is None else str(d) for d in shape)
            raise RunnerError(f"input '{name}': a sample has shape {'x'.join(map(str, got.shape))} "
                              f"(batch 1), the model expects {shape_text}")
        if dtype is not None and got.dtype != dtype:
            raise RunnerError(f"input '{name}': samples are {got.dtype}, the model expects {np.dtype(dtype)}")


# ----------------------------------------------------------------------------- host facts
def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model():
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):  # x86, Raspberry Pi, other ARM boards
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return _read("/proc/device-tree/model") or platform.processor() or None


def cpufreq():
    """Governor and current frequency of each cpufreq policy (big.LITTLE has several), or None."""
    policies = {}
    for folder in sorted(glob.glob("/sys/devices/system/cpu/cpufreq/policy*")):
        khz = _read(f"{folder}/scaling_cur_freq")
        policies[Path(folder).name] = {"cpus": _read(f"{folder}/related_cpus"),
                                       "governor": _read(f"{folder}/scaling_governor"),
                                       "cur_mhz": int(khz) / 1000 if khz and khz.isdigit() else None}
    return policies or None


def temperatures_c():
    zones = {}
    for folder in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        milli = _read(f"{folder}/temp")
        if milli and milli.lstrip("-").isdigit():
            zones[f"{Path(folder).name}:{_read(f'{folder}/type')}"] = int(milli) / 1000
    return zones or None


def peak_rss_mb():
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # macOS reports bytes


def proc_status_mb(field):
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def host_facts():
    uname = platform.uname()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"hostname": uname.node, "system": uname.system, "release": uname.release,
            "version": uname.version, "machine": uname.machine, "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "cpu_usable": usable, "cpufreq": cpufreq()}


# ----------------------------------------------------------------------------- output
def write_json_atomic(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- main
def benchmark(args):
    started = _utc_now()
    model = Path(args.model)
    if not model.is_file():
        raise RunnerError(f"{model}: model file not found")
    t0 = time.perf_counter_ns()
    runtime = RUNTIMES[args.runtime](model, args.providers)
    import_ms = (time.perf_counter_ns() - t0) / 1e6
    feeds = load_samples(args.inputs)
    rss_baseline = proc_status_mb("VmRSS")
    temps_before = temperatures_c()

    sweep = []
    for threads in args.threads:
        sweep.append(benchmark_threads(runtime, feeds, threads, args.warmup, args.min_runs, args.min_duration))
        if len(sweep) == 1:
            specs = {"inputs": runtime.input_specs(), "outputs": runtime.output_specs()}
        runtime.close()  # one session at a time, so peak RSS is one model's
    first = sweep[0]
    active = first["providers_active"]
    fallback = [p for p in runtime.providers_requested if p not in active]
    if fallback:
        print(f"warning: requested provider(s) {', '.join(fallback)} not active; ran on {', '.join(active)}",
              file=sys.stderr)
    return {
        "schema": SCHEMA,
        "device_name": args.device_name,
        "started_utc": started,
        "finished_utc": _utc_now(),
        "model": {
            "path": str(model),
            "size_bytes": model.stat().st_size,
            **{kind: [{"name": n, "shape": s, "dtype": np.dtype(d).name if d else None} for n, s, d in value]
               for kind, value in specs.items()},
        },
        "runtime": {
            "name": runtime.name,
            "version": runtime.version,
            "import_ms": import_ms,
            "providers_requested": runtime.providers_requested,
            "providers_active": active,
            "provider_fallback": bool(fallback),
        },
        "settings": {
            "batch_size": 1,
            "samples": len(feeds),
            "warmup_runs": args.warmup,
            "min_runs": args.min_runs,
            "min_duration_s": args.min_duration,
            "threads": args.threads,
            "clock": "time.perf_counter_ns",
            "std": "population (ddof=0)",
            "percentiles": "numpy linear interpolation",
        },
        # Cold figures: the first session of the process, at the first thread count.
        "load_ms": first["load_ms"],
        "first_run_ms": first["first_run_ms"],
        "threads": {str(r["threads"]): r for r in sweep},
        "memory": {
            "rss_baseline_mb": rss_baseline,
            "peak_rss_mb": peak_rss_mb(),
            "vm_hwm_mb": proc_status_mb("VmHWM"),
        },
        "host": {
            **host_facts(),
            "temperature_c_before": temps_before,
            "temperature_c_after": temperatures_c(),
        },
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     runtime.name: runtime.version},
    }


def thread_list(text):
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (.onnx)")
    p.add_argument("--inputs", required=True, help=".npz with one array per model input, first axis = sample")
    p.add_argument("--runtime", default="onnxruntime", choices=sorted(RUNTIMES))
    p.add_argument("--providers", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated execution providers / delegates (default: the runtime's CPU one)")
    p.add_argument("--warmup", type=int, default=10, help="discarded runs after the first one")
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-duration", type=float, default=1.0, help="seconds")
    p.add_argument("--threads", type=thread_list, default=[1], help="sweep, e.g. 1,2,4")
    p.add_argument("--out", required=True, help="result .json (written atomically)")
    p.add_argument("--device-name", default="local")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.min_runs < 1 or args.min_duration < 0:
        p.error("--warmup must be >= 0, --min-runs >= 1 and --min-duration >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        result = benchmark(args)
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
