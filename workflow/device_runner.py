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

Runtimes (``--runtime``): ``onnxruntime`` (.onnx), ``litert`` (.tflite: ai-edge-litert,
or tflite-runtime on boards; ``--xnnpack on|off``, external delegates via ``--providers``)
and ``hailort`` (.hef: HailoRT's ``hailo_platform`` Python API). A runtime is one
``Runtime`` subclass registered in ``RUNTIMES``.

Optional measurements: ``--stream-workers 1,3`` (throughput of a writer thread feeding a
queue read by N inference workers, seed 000's 1 vs 3 threads), ``--perf`` (hardware
counters through ``perf stat`` when the device has them, marked unavailable otherwise),
``--rt-period-ms`` (RT-Bench-style periodic jobs: deadline misses, jitter, SCHED_FIFO
when permitted) and ``--cpus`` (core affinity). ``--accuracy-data test.npy`` (a packed
split, with ``--accuracy-format`` and ``--accuracy-size``) runs the first
``--accuracy-images`` images through the model on the device and reports top-1 and every
prediction, so the device's own kernels are checked against the host's answer.
``--pipeline`` times seed 000's pre-processing chain instead (resize + YUV->RGB + infer vs
resize + infer; needs cv2).

Process lifecycle (how workflow/remote.py runs it on a board): ``--lifeline`` makes the
runner lead its own session and end itself and its children (perf) as soon as its stdin
closes, that is when the SSH session that started it ends, for whatever reason, so a
dropped connection leaves nothing running and writes no result. ``--lock PATH`` holds an
exclusive ``flock`` on the device's lock file from before the first session is loaded
until the result is written (``--lock-wait`` seconds at most to get it), so two runners
never measure on one device at the same time; the kernel frees the lock however the
runner ends, so it is never stale. Every file the runner writes stays below the folder of
``--out``: the result, and its temporary files (perf's output, the runtime's) in a private
folder there that is removed when the run ends.

Needs Python >= 3.7 (Coral Dev Board's Mendel Linux has 3.7) and numpy 1.x or 2.x;
tests/test_runner_compat.py enforces both, and an older interpreter gets one error line.

Exit status: 2 for a mistake in the inputs (missing file, numpy not installed, Python too
old, inputs that do not match the model), 3 when the runtime cannot load or run this model
(a failing format on this device), 4 when the model's runtime is not installed for this
interpreter, 75 when the device lock stayed busy for ``--lock-wait`` seconds; each prints
one ``error: ...`` line on stderr. The
result JSON is written atomically, so a failed run leaves no file.
"""
import argparse
import contextlib
import datetime
import fcntl
import functools
import glob
import itertools
import json
import os
import platform
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MIN_PYTHON = (3, 7)
if sys.version_info < MIN_PYTHON:  # checked before anything newer is used: one line, not a traceback
    sys.stderr.write("error: device_runner.py needs Python >= %d.%d, %s is %s\n"
                     % (MIN_PYTHON + (sys.executable, platform.python_version())))
    sys.exit(2)
try:
    import numpy as np
except ImportError:
    sys.stderr.write("error: numpy is not installed for %s (pip install numpy)\n" % sys.executable)
    sys.exit(2)

SCHEMA = "device_runner/1"


class RunnerError(Exception):
    """A problem the user can fix; reported as one line, never a traceback (exit status 2)."""

    exit_status = 2


class ModelFailure(RunnerError):
    """This device cannot run this model or measurement (exit status 3): a failing format, not a crash."""

    exit_status = 3


class DeviceBusy(RunnerError):
    """Another runner held the device lock for all of --lock-wait (exit status 75, EX_TEMPFAIL)."""

    exit_status = 75


class RuntimeMissing(RunnerError):
    """The runtime the model needs is not installed for this interpreter (exit status 4)."""

    exit_status = 4


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
        """The runtime's own input object for one {name: batch-1 array} sample (checked here)."""
        check_inputs(self.input_specs(), sample)
        return sample

    def run(self, feed):
        raise NotImplementedError

    def infer(self, feed):
        """{output name: float array}: one inference with outputs dequantized (for checks, not timing)."""
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
            raise RuntimeMissing("onnxruntime is not installed (pip install onnxruntime)") from None
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
            raise ModelFailure(f"{self.model_path}: onnxruntime cannot load the model: "
                               f"{_first_line(err)}") from None
        # session.run(None, feed) as a C-level partial: no Python frame of ours between the clock reads.
        self.run = functools.partial(self.session.run, None)

    def input_specs(self):
        return [(i.name, [d if isinstance(d, int) else None for d in i.shape], self.DTYPES.get(i.type))
                for i in self.session.get_inputs()]

    def output_specs(self):
        return [(o.name, [d if isinstance(d, int) else None for d in o.shape], self.DTYPES.get(o.type))
                for o in self.session.get_outputs()]

    def infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feed)))

    def providers_active(self):
        return list(self.session.get_providers())

    def close(self):
        self.session = self.run = None


def bind_inputs(specs, sample):
    """Pair the model's inputs with the sample's arrays: [(model input, sample name)].

    Samples are named after the ONNX inputs (``image``; ``y``, ``uv``) and laid out NCHW.
    Converted models rename inputs (onnx2tf: ``serving_default_image:0``) and go NHWC, so
    a name matches after stripping those affixes; a single input matches the single
    array; otherwise each input takes the one array whose shape fits (NCHW or NHWC).
    """
    def plain(name):
        name = name.split("/")[-1].split(":")[0]
        return name[len("serving_default_"):] if name.startswith("serving_default_") else name

    if len(specs) != len(sample):
        raise RunnerError(f"input names do not match: the model expects {[n for n, _, _ in specs]}, "
                          f"the inputs file has {sorted(sample)}")
    if len(specs) == 1:
        return [(specs[0][0], next(iter(sample)))]
    pairs = []
    for name, shape, _ in specs:
        if name in sample or plain(name) in sample:
            pairs.append((name, name if name in sample else plain(name)))
            continue
        fits = [key for key, array in sample.items() if to_layout(array, shape) is not None]
        if len(fits) != 1:
            raise RunnerError(f"input '{name}' (shape {shape}): cannot tell which of {sorted(sample)} feeds it")
        pairs.append((name, fits[0]))
    return pairs


def to_layout(array, shape):
    """``array`` as is when it has the model's shape, NCHW -> NHWC when that fits, else None."""
    def fits(a):
        return a.ndim == len(shape) and all(d is None or d == g for d, g in zip(shape, a.shape))

    if fits(array):
        return array
    if array.ndim == 4 and fits(array.transpose(0, 2, 3, 1)):
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return None


def quantize(array, dtype, scale, zero_point):
    """Float pixels -> the model's int8/uint8 input with its (scale, zero point)."""
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)


class LiteRT(Runtime):
    """TFLite models through ai-edge-litert's Interpreter (tflite-runtime on boards that only have it).

    XNNPACK is TFLite's default CPU delegate: ``xnnpack=False`` selects the builtin kernels
    without default delegates. ``providers`` are external delegate libraries (e.g.
    libedgetpu.so.1, libvx_delegate.so), loaded with ``load_delegate``. Whether a delegate
    really took nodes is read from the execution plan (DELEGATE nodes), not assumed.
    """

    name = "litert"

    def __init__(self, model_path, providers, xnnpack=True):
        self.delegate_libraries = list(providers or [])
        self.xnnpack = xnnpack
        super().__init__(model_path, self.delegate_libraries or (["XNNPACK"] if xnnpack else ["CPU"]))
        try:
            from ai_edge_litert import interpreter as tfl
            import ai_edge_litert as package
        except ImportError:
            try:
                from tflite_runtime import interpreter as tfl
                import tflite_runtime as package
            except ImportError:
                raise RuntimeMissing("neither ai-edge-litert nor tflite-runtime is installed "
                                     "(pip install ai-edge-litert)") from None
        self.tfl = tfl
        self.package = package.__name__
        self.version = getattr(package, "__version__", None)
        self.interpreter = self.run = None
        self.adaptations = set()

    def session_options(self, threads):
        resolver = "AUTO" if self.xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
        return {"num_threads": threads, "xnnpack": self.xnnpack, "op_resolver": resolver,
                "delegates": self.delegate_libraries, "package": self.package}

    def load(self, threads):
        try:
            delegates = [self.tfl.load_delegate(lib) for lib in self.delegate_libraries]
            resolver = self.tfl.OpResolverType.AUTO if self.xnnpack else \
                self.tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self.interpreter = self.tfl.Interpreter(model_path=self.model_path, num_threads=threads,
                                                    experimental_delegates=delegates or None,
                                                    experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelFailure(f"{self.model_path}: LiteRT cannot load the model: {_first_line(err)}") from None
        self.input_details = self.interpreter.get_input_details()
        self.output_indices = [d["index"] for d in self.interpreter.get_output_details()]
        set_tensor, invoke, get_tensor = (self.interpreter.set_tensor, self.interpreter.invoke,
                                          self.interpreter.get_tensor)
        outputs = self.output_indices

        def run(feed):
            for index, array in feed:
                set_tensor(index, array)
            invoke()
            return [get_tensor(i) for i in outputs]

        self.run = run

    def input_specs(self):
        return [(d["name"], [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])],
                 np.dtype(d["dtype"]).type) for d in self.input_details]

    def output_specs(self):
        return [(d["name"], [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])],
                 np.dtype(d["dtype"]).type) for d in self.interpreter.get_output_details()]

    def make_feed(self, sample):
        feed = []
        for (name, shape, dtype), (_, key) in zip(self.input_specs(), bind_inputs(self.input_specs(), sample)):
            array = to_layout(sample[key], shape)
            if array is None:
                expected = "x".join("?" if d is None else str(d) for d in shape)
                raise RunnerError(f"input '{name}': a sample has shape {'x'.join(map(str, sample[key].shape))} "
                                  f"(batch 1), the model expects {expected}")
            if array is not sample[key]:
                self.adaptations.add(f"{key} -> {name}: NCHW to NHWC")
            detail = next(d for d in self.input_details if d["name"] == name)
            scale, zero_point = detail["quantization"]
            if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating) and scale:
                array = quantize(array, dtype, scale, zero_point)
                self.adaptations.add(f"{key} -> {name}: quantized to {np.dtype(dtype).name} "
                                     f"(scale {scale:.6g}, zero point {zero_point})")
            elif array.dtype != dtype:
                array = array.astype(dtype)
                self.adaptations.add(f"{key} -> {name}: cast to {np.dtype(dtype).name}")
            feed.append((detail["index"], array))
        return feed

    def infer(self, feed):
        raw = self.run(feed)
        outputs = {}
        for detail, array in zip(self.interpreter.get_output_details(), raw):
            scale, zero_point = detail["quantization"]
            outputs[detail["name"]] = ((array.astype(np.float32) - zero_point) * scale
                                       if np.issubdtype(array.dtype, np.integer) and scale else array)
        return outputs

    def providers_active(self):
        delegated = any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())
        if not delegated:
            return ["CPU"]
        return self.delegate_libraries or ["XNNPACK"]

    def close(self):
        self.interpreter = self.run = None


class HailoRT(Runtime):
    """Hailo-8 .hef files through HailoRT's Python API (``hailo_platform``).

    Follows HailoRT's documented inference flow: HEF -> VDevice.configure(ConfigureParams)
    -> InferVStreams with FLOAT32 input/output vstreams (HailoRT quantizes and dequantizes
    on the host with the HEF's parameters) inside ``network_group.activate()``. Inputs are
    NHWC. Tested against a stand-in module with the same API only (no Hailo device here).
    """

    name = "hailort"
    default_providers = ("hailo",)

    def __init__(self, model_path, providers):
        super().__init__(model_path, providers)
        try:
            import hailo_platform
        except ImportError:
            raise RuntimeMissing("HailoRT is not installed (the hailo_platform wheel from Hailo's "
                                 "developer zone)") from None
        self.hp = hailo_platform
        self.version = getattr(hailo_platform, "__version__", None)
        self.stack = self.run = None

    def session_options(self, threads):
        return {"interface": "PCIe", "input_format": "FLOAT32", "output_format": "FLOAT32",
                "host_threads": threads}

    def load(self, threads):
        hp = self.hp
        self.stack = contextlib.ExitStack()
        try:
            self.hef = hp.HEF(self.model_path)
            self.target = self.stack.enter_context(hp.VDevice())
            params = hp.ConfigureParams.create_from_hef(hef=self.hef, interface=hp.HailoStreamInterface.PCIe)
            self.network_group = self.target.configure(self.hef, params)[0]
            inputs = hp.InputVStreamParams.make(self.network_group, format_type=hp.FormatType.FLOAT32)
            outputs = hp.OutputVStreamParams.make(self.network_group, format_type=hp.FormatType.FLOAT32)
            pipeline = self.stack.enter_context(hp.InferVStreams(self.network_group, inputs, outputs))
            self.stack.enter_context(self.network_group.activate(self.network_group.create_params()))
        except Exception as err:  # HailoRTException and its subclasses
            self.stack.close()
            raise ModelFailure(f"{self.model_path}: HailoRT cannot load the model: {_first_line(err)}") from None
        self.run = pipeline.infer

    def input_specs(self):
        return [(i.name, [1, *i.shape], np.float32) for i in self.hef.get_input_vstream_infos()]

    def output_specs(self):
        return [(o.name, [1, *o.shape], np.float32) for o in self.hef.get_output_vstream_infos()]

    def make_feed(self, sample):
        feed = {}
        for (name, shape, dtype), (_, key) in zip(self.input_specs(), bind_inputs(self.input_specs(), sample)):
            array = to_layout(sample[key], shape)
            if array is None:
                raise RunnerError(f"input '{name}': a sample has shape {'x'.join(map(str, sample[key].shape))} "
                                  f"(batch 1), the model expects {'x'.join(map(str, shape))}")
            feed[name] = np.ascontiguousarray(array, dtype=dtype)
        return feed

    def infer(self, feed):
        return dict(self.run(feed))

    def providers_active(self):
        ids = getattr(self.target, "get_physical_devices_ids", None)
        return [f"hailo:{i}" for i in ids()] if ids else ["hailo"]

    def close(self):
        if self.stack is not None:
            self.stack.close()
        self.stack = self.run = None


RUNTIMES = {cls.name: cls for cls in (OnnxRuntime, LiteRT, HailoRT)}
RUNTIME_BY_SUFFIX = {".onnx": "onnxruntime", ".tflite": "litert", ".hef": "hailort"}


def make_runtime(args, model_path=None):
    path = model_path or args.model
    if args.runtime == "litert":
        return LiteRT(path, args.providers, xnnpack=args.xnnpack == "on")
    return RUNTIMES[args.runtime](path, args.providers)


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
    feeds = [runtime.make_feed(sample) for sample in feeds_raw]
    t0 = time.perf_counter_ns()
    try:
        runtime.run(feeds[0])
    except Exception as err:  # the runtime's own error types
        raise ModelFailure(f"{runtime.model_path}: first inference failed: {_first_line(err)}") from None
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


def stream_throughput(new_runtime, feeds_raw, workers, min_runs, min_duration_s):
    """Seed 000's writer/reader structure: a writer thread fills a bounded queue of frames,
    ``workers`` inference threads (one single-threaded session each) take frames from it
    and a reader (this thread) collects the results. Returns throughput and the latency
    of each frame from enqueue to result, queueing included.
    """
    sessions = []
    for _ in range(workers):
        runtime = new_runtime()
        runtime.load(1)
        feeds = [runtime.make_feed(sample) for sample in feeds_raw]
        runtime.run(feeds[0])  # the slow first inference stays out of the measurement
        sessions.append((runtime, feeds))
    jobs, results = queue.Queue(maxsize=2 * workers), queue.Queue()
    stop = threading.Event()
    clock = time.perf_counter_ns

    def writer():
        for i in itertools.count():
            while not stop.is_set():
                try:
                    jobs.put((i, clock()), timeout=0.05)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return

    def worker(runtime, feeds):
        while not stop.is_set():
            try:
                i, enqueued = jobs.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                runtime.run(feeds[i % len(feeds)])
            except Exception as err:  # the runtime's own error types: reported by the reader
                results.put(err)
                return
            results.put((enqueued, clock()))

    threads = [threading.Thread(target=writer, daemon=True)]
    threads += [threading.Thread(target=worker, args=session, daemon=True) for session in sessions]
    start = clock()
    for thread in threads:
        thread.start()
    latencies, end = [], start
    try:
        while len(latencies) < min_runs or end - start < min_duration_s * 1e9:
            item = results.get(timeout=60)
            if isinstance(item, Exception):
                raise ModelFailure(f"inference failed in a stream worker: {_first_line(item)}")
            latencies.append(item[1] - item[0])
            end = item[1]
    except queue.Empty:
        raise RunnerError("stream workers produced no result for 60 s") from None
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for runtime, _ in sessions:
            runtime.close()
    return {"workers": workers, "threads_per_worker": 1, "queue_size": 2 * workers, "frames": len(latencies),
            "duration_s": (end - start) / 1e9, "throughput_fps": len(latencies) / ((end - start) / 1e9),
            "latency_ms": latency_stats(latencies)}


PERF_EVENTS = ("instructions", "cycles", "L1-dcache-load-misses", "LLC-load-misses")


def cache_line_bytes():
    """Line size of the last-level cache from sysfs, or None when the kernel does not say."""
    levels = []
    for folder in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        level, size = _read(f"{folder}/level"), _read(f"{folder}/coherency_line_size")
        if level and level.isdigit() and size and size.isdigit():
            levels.append((int(level), int(size)))
    return max(levels)[1] if levels else None


def perf_counters(run, feeds, min_runs, min_duration_s):
    """Hardware counters of a timed loop through ``perf stat -p <this process>``.

    ``perf`` attaches while this process sleeps (a sleeping task counts nothing), then the
    loop runs and perf is stopped with SIGINT. Events the CPU or kernel do not offer come
    back ``<not supported>`` (e.g. in VMs): they are None and listed, never estimated.
    """
    perf = shutil.which("perf")
    if perf is None:
        return {"available": False, "reason": "perf not found on PATH"}
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        out = Path(tmp) / "stat.csv"
        proc = subprocess.Popen([perf, "stat", "-x", ",", "-e", ",".join(PERF_EVENTS), "-o", str(out),
                                 "-p", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(0.5)
        if proc.poll() is not None:
            return {"available": False, "reason": f"perf stat exited with status {proc.returncode}: "
                                                  f"{_first_line(proc.stderr.read() or 'no output')}"}
        latencies, total_ns = time_runs(run, feeds, 0, min_runs, min_duration_s)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return {"available": False, "reason": "perf stat did not stop within 10 s"}
        text = out.read_text() if out.exists() else ""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2] in PERF_EVENTS:
            counts[fields[2]] = float(fields[0]) if fields[0].replace(".", "", 1).isdigit() else None
    unsupported = [e for e in PERF_EVENTS if counts.get(e) is None]
    runs = len(latencies)
    result = {"available": not {"instructions", "cycles"} & set(unsupported), "events": counts,
              "unsupported": unsupported, "runs": runs, "duration_s": total_ns / 1e9,
              "tool": f"perf stat -x, -e {','.join(PERF_EVENTS)} -p <runner pid>"}
    if not result["available"]:
        result["reason"] = (f"perf reports {', '.join(unsupported)} as not supported or not counted "
                            f"on this machine" if text else f"perf wrote no counts: {_first_line(err or 'no output')}")
        return result
    line = cache_line_bytes()
    per_run = {e: (counts[e] / runs if counts.get(e) is not None else None) for e in PERF_EVENTS}
    result.update({
        "per_inference": per_run,
        "ipc": counts["instructions"] / counts["cycles"] if counts["cycles"] else None,
        "cache_line_bytes": line,
        # DRAM traffic estimate: last-level misses x line size / time (reads only).
        "llc_bandwidth_mb_s": (counts["LLC-load-misses"] * line / (total_ns / 1e9) / 1e6
                               if counts.get("LLC-load-misses") is not None and line else None),
        "l1d_bandwidth_mb_s": (counts["L1-dcache-load-misses"] * line / (total_ns / 1e9) / 1e6
                               if counts.get("L1-dcache-load-misses") is not None and line else None),
    })
    return result


def set_fifo(priority):
    """SCHED_FIFO at ``priority`` when the OS permits it; says what was applied either way."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return {"policy": "SCHED_FIFO", "priority": priority}
    except (AttributeError, PermissionError, OSError) as err:
        return {"policy": "SCHED_OTHER", "requested": f"SCHED_FIFO {priority}", "error": _first_line(err)}


def rt_benchmark(run, feeds, period_ms, deadline_ms, jobs, priority):
    """Periodic jobs after RT-Bench: job k is released at start + k * period; it misses its
    deadline when it finishes later than release + deadline. Releases stay on the grid, so
    an overrun delays the next job (seen as start delay), as on a real periodic task.
    """
    scheduler = set_fifo(priority) if priority else {"policy": "SCHED_OTHER"}
    clock = time.perf_counter_ns
    period_ns, deadline_ns = int(period_ms * 1e6), int(deadline_ms * 1e6)
    start_delays, responses, misses = [], [], 0
    try:
        release = clock() + period_ns
        for k, feed in zip(range(jobs), itertools.cycle(feeds)):
            remaining = release - clock()
            if remaining > 300_000:
                time.sleep((remaining - 200_000) / 1e9)  # sleep, then spin the last 0.2 ms
            while clock() < release:
                pass
            begin = clock()
            run(feed)
            end = clock()
            start_delays.append(begin - release)
            responses.append(end - release)
            misses += end > release + deadline_ns
            release += period_ns
    finally:
        if scheduler["policy"] == "SCHED_FIFO":
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    response = latency_stats(responses)
    return {"period_ms": period_ms, "deadline_ms": deadline_ms, "jobs": jobs, "deadline_misses": misses,
            "deadline_miss_ratio": misses / jobs, "response_time_ms": response,
            "start_delay_ms": latency_stats(start_delays),
            "jitter_ms": response["max"] - response["min"], "scheduler": scheduler}


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


# ----------------------------------------------------------------------------- on-device accuracy
def packed_model_inputs(path, color_format, height, width, limit):
    """The first ``limit`` images (0: all) of a packed split as model inputs, and their labels.

    A packed split is a 1-D .npy of records (``image`` uint8, ``label``); the inputs have the
    layout of workflow.datasets.to_model_inputs: RGB HWC -> ``image`` (N, 3, H, W), I420
    buffers -> ``y`` (N, 1, H, W) and ``uv`` (N, 2, H/2, W/2), raw pixel values. They stay
    uint8 views of the memory-mapped file (a board's RAM is small); each image is cast to
    float32 when it is fed.
    """
    try:
        records = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise RunnerError(f"{path}: packed split not found") from None
    except (OSError, ValueError) as err:
        raise RunnerError(f"{path}: not a readable .npy file ({_first_line(err)})") from None
    if records.dtype.names != ("image", "label") or records.ndim != 1 or not len(records):
        raise RunnerError(f"{path}: not a packed split (expected a non-empty 1-D array with fields image, label)")
    records = records[:limit or len(records)]
    images, labels = records["image"], np.asarray(records["label"], dtype=np.int64)
    n, hw = len(records), height * width
    if color_format == "rgb":
        if images.shape[1:] != (height, width, 3):
            raise RunnerError(f"{path}: images are {images.shape[1:]}, expected RGB {height}x{width}x3")
        return {"image": images.transpose(0, 3, 1, 2)}, labels
    flat = images.reshape(n, -1)
    if flat.shape[1] != hw * 3 // 2:
        raise RunnerError(f"{path}: images hold {flat.shape[1]} bytes, expected I420 {height}x{width} "
                          f"({hw * 3 // 2})")
    return {"y": flat[:, :hw].reshape(n, 1, height, width),
            "uv": flat[:, hw:].reshape(n, 2, height // 2, width // 2)}, labels


def accuracy(runtime, threads, inputs, labels):
    """Top-1 of the model on packed images, one at a time (batch 1, as timed), on this device.

    The class is the argmax of the model's first output (dequantized for integer models).
    """
    runtime.load(threads)
    predictions = []
    start = time.perf_counter_ns()
    try:
        for i in range(len(labels)):
            sample = {k: np.ascontiguousarray(a[i:i + 1], dtype=np.float32) for k, a in inputs.items()}
            outputs = runtime.infer(runtime.make_feed(sample))
            predictions.append(int(np.argmax(next(iter(outputs.values())).reshape(-1))))
    except RunnerError:
        raise
    except Exception as err:  # the runtime's own error types
        raise ModelFailure(f"{runtime.model_path}: inference failed on image {len(predictions)}: "
                           f"{_first_line(err)}") from None
    duration = (time.perf_counter_ns() - start) / 1e9
    session = runtime.session_options(threads)
    runtime.close()
    correct = int((np.asarray(predictions) == labels).sum())
    return {"images": len(labels), "correct": correct, "top1": correct / len(labels),
            "session_options": session, "duration_s": duration,
            "predictions": predictions, "labels": labels.tolist()}


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
    """Peak resident memory of this process so far: VmHWM where /proc has it (a fresh count from exec on),
    else ru_maxrss (on Linux that one keeps the peak of the process image before exec, e.g. the parent
    stage that started the runner)."""
    hwm = proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
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
    facts = {"hostname": uname.node, "system": uname.system, "release": uname.release,
             "version": uname.version, "machine": uname.machine, "cpu_model": cpu_model(),
             "cpu_count": os.cpu_count(), "cpu_usable": usable, "cpufreq": cpufreq()}
    if os.environ.get("QEMU_CPU"):  # qemu-user emulation (scripts/virtual-board.sh): the CPU it emulates
        facts["qemu_cpu"] = os.environ["QEMU_CPU"]
    return facts


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


def _utc_now(timespec="seconds"):
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec=timespec)


# ----------------------------------------------------------------------------- pre-processing pipeline
def image_size(specs, channels):
    """(height, width) of the model input with ``channels`` channels, NCHW or NHWC."""
    for _, shape, _ in specs:
        if len(shape) == 4 and shape[1] == channels and shape[2] and shape[3]:
            return shape[2], shape[3]
        if len(shape) == 4 and shape[3] == channels and shape[1] and shape[2]:
            return shape[1], shape[2]
    raise RunnerError(f"the model has no fixed-size {channels}-channel image input "
                      f"(inputs: {[(n, s) for n, s, _ in specs]})")


class FramePipeline:
    """Seed 000 §7.6 for one worker: resize the I420 source to the model size, convert
    YUV 4:2:0 -> RGB (RGB model only), pack the tensor and infer. The resized planes land
    in preallocated buffers, so a frame allocates nothing but the tensor.
    """

    def __init__(self, cv2, runtime, kind, source):
        self.cv2, self.runtime, self.kind = cv2, runtime, kind
        specs = runtime.input_specs()
        h, w = image_size(specs, 3 if kind == "rgb" else 1)
        height, width = source.shape[0] * 2 // 3, source.shape[1]
        q = height * width // 4  # one chroma plane, in bytes
        self.src = (source[:height], source[height:].reshape(-1)[:q].reshape(height // 2, width // 2),
                    source[height:].reshape(-1)[q:].reshape(height // 2, width // 2))
        self.i420 = np.empty((h * 3 // 2, w), np.uint8)
        flat = self.i420.reshape(-1)
        self.dst = (self.i420[:h], flat[h * w:h * w + h * w // 4].reshape(h // 2, w // 2),
                    flat[h * w + h * w // 4:].reshape(h // 2, w // 2))
        self.sizes = ((w, h), (w // 2, h // 2), (w // 2, h // 2))
        if kind == "rgb":
            self.names = [specs[0][0]]
        else:  # the Y input has 1 channel, the UV input 2
            by_channels = {min(s[1], s[3]): n for n, s, _ in specs if len(s) == 4}
            self.names = [by_channels[1], by_channels[2]]

    def __call__(self):
        cv2, clock = self.cv2, time.perf_counter_ns
        t0 = clock()
        for src, dst, size in zip(self.src, self.dst, self.sizes):
            cv2.resize(src, size, dst=dst, interpolation=cv2.INTER_LINEAR)
        t1 = clock()
        if self.kind == "rgb":
            rgb = cv2.cvtColor(self.i420, cv2.COLOR_YUV2RGB_I420)
            t2 = clock()
            sample = {self.names[0]: rgb.transpose(2, 0, 1)[None].astype(np.float32)}
        else:
            t2 = clock()
            y, u, v = self.dst
            sample = {self.names[0]: y[None, None].astype(np.float32),
                      self.names[1]: np.stack([u, v])[None].astype(np.float32)}
        self.runtime.run(self.runtime.make_feed(sample))
        return t1 - t0, t2 - t1, clock() - t2


def pipeline_single(step, warmup, min_runs, min_duration_s):
    """Single-threaded frames until both minimums: per-frame and per-stage times."""
    for _ in range(warmup):
        step()
    stages, start, clock = [], time.perf_counter_ns(), time.perf_counter_ns
    while len(stages) < min_runs or clock() - start < min_duration_s * 1e9:
        stages.append(step())
    duration = (clock() - start) / 1e9
    stages = np.asarray(stages, dtype=np.float64)
    return {"frames": len(stages), "duration_s": duration, "fps": len(stages) / duration,
            "latency_ms": latency_stats(stages.sum(axis=1)),
            "stages_mean_ms": dict(zip(("resize", "color_conversion", "infer"), (stages.mean(axis=0) / 1e6).tolist()))}


def pipeline_multi(steps, min_duration_s):
    """Each worker runs whole frames on its own session; fps = all frames / wall time."""
    counts, stop = [0] * len(steps), threading.Event()
    barrier = threading.Barrier(len(steps) + 1)
    errors = []

    def worker(i, step):
        barrier.wait()
        try:
            while not stop.is_set():
                step()
                counts[i] += 1
        except Exception as err:  # the runtime's own error types: reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i, s), daemon=True) for i, s in enumerate(steps)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter_ns()
    time.sleep(min_duration_s)
    stop.set()
    for thread in threads:
        thread.join()
    duration = (time.perf_counter_ns() - start) / 1e9
    if errors:
        raise ModelFailure(f"inference failed in a pipeline worker: {_first_line(errors[0])}")
    return {"workers": len(steps), "frames": sum(counts), "duration_s": duration, "fps": sum(counts) / duration}


def load_frame(path):
    try:
        frame = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RunnerError(f"{path}: not a readable .npy frame ({_first_line(err)})") from None
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise RunnerError(f"{path}: expected an RGB photo as uint8 HxWx3, got {frame.dtype} {frame.shape}")
    return frame


def pipeline(args):
    """RGB model (resize -> YUV->RGB -> infer) vs YUV model (resize -> infer) per resolution."""
    try:
        import cv2
    except ImportError:  # a board without OpenCV cannot give this table: a failed row, not a user mistake
        raise ModelFailure("OpenCV is not installed on this device (pip install opencv-python-headless)") from None
    cv2.setNumThreads(1)  # one core per worker, as seed 000's CPU threads
    started = _utc_now()
    photo = load_frame(args.frame)
    models = {"rgb": Path(args.model), "yuv": Path(args.yuv_model)}
    sessions = {}
    for kind, path in models.items():
        if not path.is_file():
            raise RunnerError(f"{path}: model file not found")
        sessions[kind] = []
        for _ in range(max(args.workers, 1)):
            runtime = make_runtime(args, path)
            runtime.load(1)
            sessions[kind].append(runtime)
    rows = []
    for width, height in args.resolutions:
        # The source frame: the photo scaled to this resolution, as a camera's I420 buffer.
        source = cv2.cvtColor(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA),
                              cv2.COLOR_RGB2YUV_I420)
        row = {"width": width, "height": height, "area_px": width * height}
        for kind, runtimes in sessions.items():
            steps = [FramePipeline(cv2, runtime, kind, source) for runtime in runtimes]
            t0 = time.perf_counter_ns()
            steps[0]()
            first_ms = (time.perf_counter_ns() - t0) / 1e6
            single = pipeline_single(steps[0], args.warmup, args.min_runs, args.min_duration)
            row[kind] = {"first_frame_ms": first_ms, "single_thread": single,
                         "multi_thread": pipeline_multi(steps[:args.workers], args.min_duration)}
        rows.append(row)
    runtime = sessions["rgb"][0]
    result = {
        "schema": SCHEMA,
        "status": "ok",
        "mode": "pipeline",
        "device_name": args.device_name,
        "started_utc": started,
        "finished_utc": _utc_now(),
        "models": {kind: {"path": str(path), "size_bytes": path.stat().st_size,
                          "input_hw": list(image_size(sessions[kind][0].input_specs(), 3 if kind == "rgb" else 1))}
                   for kind, path in models.items()},
        "frame": {"path": str(args.frame), "photo_hw": list(photo.shape[:2]), "source_format": "I420",
                  "scaling": "cv2.INTER_AREA (photo -> source)", "resize": "cv2.INTER_LINEAR per plane",
                  "color_conversion": "cv2.COLOR_YUV2RGB_I420"},
        "runtime": {"name": runtime.name, "version": runtime.version,
                    "providers_requested": runtime.providers_requested,
                    "providers_active": runtime.providers_active()},
        "settings": {"warmup_frames": args.warmup, "min_frames": args.min_runs, "min_duration_s": args.min_duration,
                     "workers": args.workers, "session_threads": 1, "cv2_threads": cv2.getNumThreads()},
        "resolutions": rows,
        "memory": {"peak_rss_mb": peak_rss_mb(), "vm_hwm_mb": proc_status_mb("VmHWM")},
        "host": {**host_facts(), "temperature_c": temperatures_c()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "cv2": cv2.__version__,
                     runtime.name: runtime.version},
    }
    for runtimes in sessions.values():
        for runtime in runtimes:
            runtime.close()
    return result


# ----------------------------------------------------------------------------- process lifecycle
def end_process_group(*_):
    """SIGKILL this runner's process group: the runner and every child it started (perf)."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def supervise_lifeline():
    """Lead a new session, then end the whole process group as soon as stdin closes.

    The controller keeps the runner's stdin open for as long as it waits for the result (the
    SSH channel, or a pipe from the benchmark stage), so its end, a dropped connection
    included, ends the runner before it measures on or writes a result. SIGTERM and SIGHUP
    (``timeout``, a hang-up) end the group the same way, so no child outlives the runner.
    """
    try:
        os.setsid()
    except OSError:  # already a process-group leader (started with start_new_session)
        pass
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, end_process_group)

    def watch():
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        end_process_group()

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def hold_device_lock(path, wait_s):
    """Take the exclusive flock on ``path`` for the rest of the process, waiting up to ``wait_s`` s.

    The kernel drops it when the process ends, however it ends, so it is never stale. The
    file then names its holder, for the message of a runner that finds the device busy.
    Returns what the result records about it.
    """
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunnerError(f"--lock {path}: cannot open the device lock file ({_first_line(err)})") from None
    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - start >= wait_s:
                holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "another runner"
                os.close(fd)
                raise DeviceBusy(f"device busy: {path} is held by {holder} (waited {wait_s:g} s)") from None
            time.sleep(0.05)
    waited = time.monotonic() - start
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"runner pid {os.getpid()} since {_utc_now()}\n".encode(), 0)
    return {"path": str(path), "waited_s": round(waited, 3), "held_from_utc": _utc_now("microseconds")}


@contextlib.contextmanager
def scratch_below(folder):
    """Send every temporary file of the runner, its runtime and its children (perf's output,
    ONNX Runtime's .ses file) to a private folder below ``folder``, removed when the run ends."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".runner-tmp-", dir=str(folder)) as scratch:
        tempfile.tempdir = os.environ["TMPDIR"] = scratch
        yield


# ----------------------------------------------------------------------------- main
def open_session(runtime, threads, feeds_raw):
    """Load, build the feeds and run the first inference: a session ready for a measurement."""
    runtime.load(threads)
    feeds = [runtime.make_feed(sample) for sample in feeds_raw]
    runtime.run(feeds[0])
    return feeds


def governor_check(expected):
    """Whether every cpufreq policy runs the governor the inventory expects (None: unreadable)."""
    policies = cpufreq()
    if not expected:
        return None
    if not policies:
        return {"expected": expected, "matches": None, "reason": "cpufreq not readable"}
    actual = sorted({p["governor"] for p in policies.values()})
    matches = actual == [expected]
    if not matches:
        print(f"warning: expected cpufreq governor {expected}, the device runs {', '.join(map(str, actual))}",
              file=sys.stderr)
    return {"expected": expected, "actual": actual, "matches": matches}


def benchmark(args):
    started = _utc_now()
    model = Path(args.model)
    if not model.is_file():
        raise RunnerError(f"{model}: model file not found")
    t0 = time.perf_counter_ns()
    runtime = make_runtime(args)
    import_ms = (time.perf_counter_ns() - t0) / 1e6
    feeds = load_samples(args.inputs)
    if args.accuracy_data:  # read (and checked) before any timing
        height, width = args.accuracy_size
        accuracy_inputs = packed_model_inputs(args.accuracy_data, args.accuracy_format, height, width,
                                              args.accuracy_images)
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
    fallback = [p for p in runtime.providers_requested if not any(a == p or a.startswith(p + ":") for a in active)]
    if fallback:
        print(f"warning: requested provider(s) {', '.join(fallback)} not active; ran on {', '.join(active)}",
              file=sys.stderr)
    stream = {str(n): stream_throughput(lambda: make_runtime(args), feeds, n, args.min_runs, args.min_duration)
              for n in args.stream_workers}
    counters = rt = None
    if args.perf:
        session = open_session(runtime, args.threads[0], feeds)
        counters = perf_counters(runtime.run, session, args.min_runs, args.min_duration)
        runtime.close()
    if args.rt_period_ms:
        session = open_session(runtime, args.threads[0], feeds)
        rt = rt_benchmark(runtime.run, session, args.rt_period_ms, args.rt_deadline_ms or args.rt_period_ms,
                          args.rt_jobs, args.rt_priority)
        runtime.close()
    top1 = None
    if args.accuracy_data:
        top1 = {**accuracy(runtime, args.threads[0], *accuracy_inputs),
                "data": {"path": str(args.accuracy_data), "color_format": args.accuracy_format,
                         "height": height, "width": width}}
    return {
        "schema": SCHEMA,
        "status": "ok",
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
            "input_adaptations": sorted(getattr(runtime, "adaptations", ())),
        },
        "settings": {
            "batch_size": 1,
            "samples": len(feeds),
            "warmup_runs": args.warmup,
            "min_runs": args.min_runs,
            "min_duration_s": args.min_duration,
            "threads": args.threads,
            "stream_workers": args.stream_workers,
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "clock": "time.perf_counter_ns",
            "std": "population (ddof=0)",
            "percentiles": "numpy linear interpolation",
        },
        # Cold figures: the first session of the process, at the first thread count.
        "load_ms": first["load_ms"],
        "first_run_ms": first["first_run_ms"],
        "threads": {str(r["threads"]): r for r in sweep},
        "stream": stream,
        "perf": counters if args.perf else {"available": False, "reason": "not requested"},
        "rt": rt,
        "accuracy": top1,
        "memory": {
            "rss_baseline_mb": rss_baseline,
            "peak_rss_mb": peak_rss_mb(),
            "vm_hwm_mb": proc_status_mb("VmHWM"),
        },
        "host": {
            **host_facts(),
            "governor": governor_check(args.expect_governor),
            "temperature_c_before": temps_before,
            "temperature_c_after": temperatures_c(),
        },
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     runtime.name: runtime.version},
    }


def int_list(text, minimum=1):
    try:
        values = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(values, default=minimum) < minimum:
        raise argparse.ArgumentTypeError(f"values must be >= {minimum}, got {text!r}")
    return values


def thread_list(text):
    threads = int_list(text)
    if not threads:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return threads


def image_size_arg(text):
    """'32x32' -> (32, 32): height x width; I420 needs even sizes."""
    try:
        height, width = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    if min(height, width) < 2 or height % 2 or width % 2:
        raise argparse.ArgumentTypeError(f"expected an even HxW, got {text!r}")
    return height, width


def resolution_list(text):
    """'640x360,1280x720' -> [(640, 360), (1280, 720)]; I420 needs even sizes."""
    try:
        sizes = [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH,WxH,..., got {text!r}") from None
    if not sizes or any(len(s) != 2 or min(s) < 2 or s[0] % 2 or s[1] % 2 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected even WxH sizes, got {text!r}")
    return sizes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (.onnx, .tflite, .hef); the RGB model with --pipeline")
    p.add_argument("--inputs", help=".npz with one array per model input, first axis = sample")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), help="default: from the model's file suffix")
    p.add_argument("--providers", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated execution providers / delegate libraries (default: the runtime's CPU one)")
    p.add_argument("--xnnpack", choices=("on", "off"), default="on", help="LiteRT: TFLite's default XNNPACK delegate")
    p.add_argument("--warmup", type=int, default=10, help="discarded runs after the first one")
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-duration", type=float, default=1.0, help="seconds")
    p.add_argument("--threads", type=thread_list, default=[1], help="sweep, e.g. 1,2,4")
    p.add_argument("--stream-workers", type=int_list, default=[], help="writer/reader queue throughput, e.g. 1,3")
    p.add_argument("--perf", action="store_true", help="hardware counters through perf stat, when available")
    p.add_argument("--rt-period-ms", type=float, default=0, help="periodic real-time mode (0 = off)")
    p.add_argument("--rt-deadline-ms", type=float, default=0, help="relative deadline (default: the period)")
    p.add_argument("--rt-jobs", type=int, default=200)
    p.add_argument("--rt-priority", type=int, default=0, help="SCHED_FIFO priority (0 = keep the default policy)")
    p.add_argument("--cpus", type=lambda s: int_list(s, 0), default=[], help="core affinity, e.g. 2,3")
    p.add_argument("--expect-governor", default=None, help="cpufreq governor the device should run")
    p.add_argument("--accuracy-data", help="packed split (.npy, fields image and label): top-1 on this device")
    p.add_argument("--accuracy-format", choices=("rgb", "yuv420"), help="--accuracy-data: its color format")
    p.add_argument("--accuracy-size", type=image_size_arg, help="--accuracy-data: image HxW, e.g. 32x32")
    p.add_argument("--accuracy-images", type=int, default=0, help="--accuracy-data: the first N images (0 = all)")
    p.add_argument("--pipeline", action="store_true", help="seed 000's pre-processing pipeline benchmark")
    p.add_argument("--yuv-model", help="--pipeline: the YUV 4:2:0 model")
    p.add_argument("--frame", help="--pipeline: source photo, RGB uint8 HxWx3 .npy")
    p.add_argument("--resolutions", type=resolution_list, default=[(640, 360)], help="--pipeline: WxH,WxH,...")
    p.add_argument("--workers", type=int, default=3, help="--pipeline: threads of the multi-thread run")
    p.add_argument("--out", required=True, help="result .json (written atomically); temp files go below its folder")
    p.add_argument("--device-name", default="local")
    p.add_argument("--lifeline", action="store_true",
                   help="end the runner and its children when stdin closes (the controller is gone)")
    p.add_argument("--lock", help="device lock file, held exclusively for the whole run")
    p.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for a busy --lock (exit 75 after)")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.min_runs < 1 or args.min_duration < 0 or args.lock_wait < 0:
        p.error("--warmup must be >= 0, --min-runs >= 1, --min-duration >= 0 and --lock-wait >= 0")
    if args.pipeline and not (args.yuv_model and args.frame and args.workers >= 1):
        p.error("--pipeline needs --yuv-model, --frame and --workers >= 1")
    if not args.pipeline and not args.inputs:
        p.error("--inputs is required")
    if args.accuracy_data and not (args.accuracy_format and args.accuracy_size and args.accuracy_images >= 0):
        p.error("--accuracy-data needs --accuracy-format, --accuracy-size and --accuracy-images >= 0")
    if args.rt_period_ms < 0 or args.rt_deadline_ms < 0 or args.rt_jobs < 1 or args.rt_priority < 0:
        p.error("--rt-period-ms and --rt-deadline-ms must be >= 0, --rt-jobs >= 1, --rt-priority >= 0")
    if args.runtime is None:
        args.runtime = RUNTIME_BY_SUFFIX.get(Path(args.model).suffix)
        if args.runtime is None:
            p.error(f"no runtime for '{Path(args.model).suffix}' files; pass --runtime")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.lifeline:
        supervise_lifeline()
    try:
        with scratch_below(Path(args.out).parent):
            lock = hold_device_lock(args.lock, args.lock_wait) if args.lock else None
            if args.cpus:
                try:
                    os.sched_setaffinity(0, args.cpus)
                except (AttributeError, OSError) as err:
                    raise RunnerError(f"--cpus {','.join(map(str, args.cpus))}: cannot set affinity "
                                      f"({_first_line(err)})")
            result = pipeline(args) if args.pipeline else benchmark(args)
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    if lock:
        lock["held_until_utc"] = _utc_now("microseconds")  # still held: released when the process ends
    result["device_lock"] = lock
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
