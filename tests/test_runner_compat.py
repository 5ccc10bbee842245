"""The on-device runner runs on the boards' own Python and numpy: Python >= 3.7, numpy 1.x and 2.x,
ai_edge_litert or tflite_runtime.

1. A scan of its own (always): the source must parse with Python 3.7's grammar
   (``ast.parse(feature_version=...)``) and use no standard-library API newer than 3.7
   from a table of them (methods such as ``str.removeprefix`` on any object, which
   static checkers like vermin miss, module functions, keyword arguments, modules,
   ``list[int]``-style generics and f-string ``=``). Planted violations prove it can fail.
2. Real interpreters (slow; skipped with the reason where one is missing or PyPI is
   unreachable): throwaway venvs built from PyPI run the runner on real ONNX and TFLite
   models: Python 3.7 + numpy 1.21 + onnxruntime 1.14 + tflite-runtime 2.11 (Coral's
   Mendel Linux), the host Python + numpy<2 + tflite-runtime 2.14 (the only aarch64
   tflite-runtime wheel for Python 3.11 needs numpy < 2), and Python 3.6, which must get
   one error line. numpy 2 with ai_edge_litert is the project's own venv (tests/test_litert.py).
"""
import ast
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from test_runner import RUNNER, load_runner

MIN_PYTHON = load_runner().MIN_PYTHON

# ----------------------------------------------------------------------------- the scan
# Standard-library names newer than 3.7, with the version that added them.
NEWER_METHODS = {  # attribute names that mean the new API on whatever object they are called
    "removeprefix": (3, 9), "removesuffix": (3, 9), "is_relative_to": (3, 9), "with_stem": (3, 9),
    "hardlink_to": (3, 10), "bit_count": (3, 10), "add_note": (3, 11), "is_junction": (3, 12),
}
NEWER_QUALIFIED = {  # module.name
    "math.prod": (3, 8), "math.isqrt": (3, 8), "math.dist": (3, 8), "math.comb": (3, 8), "math.perm": (3, 8),
    "math.lcm": (3, 9), "math.nextafter": (3, 9), "shlex.join": (3, 8), "statistics.fmean": (3, 8),
    "statistics.geometric_mean": (3, 8), "statistics.quantiles": (3, 8), "functools.cached_property": (3, 8),
    "functools.singledispatchmethod": (3, 8), "functools.cache": (3, 9), "os.waitstatus_to_exitcode": (3, 9),
    "os.pidfd_open": (3, 9), "os.memfd_create": (3, 8), "os.eventfd": (3, 10), "os.splice": (3, 10),
    "signal.raise_signal": (3, 8), "signal.pidfd_send_signal": (3, 9), "signal.strsignal": (3, 8),
    "sys.unraisablehook": (3, 8), "sys.orig_argv": (3, 10), "sys.stdlib_module_names": (3, 10),
    "threading.excepthook": (3, 8), "threading.get_native_id": (3, 8), "random.randbytes": (3, 9),
    "itertools.pairwise": (3, 10), "itertools.batched": (3, 12), "contextlib.chdir": (3, 11),
    "contextlib.aclosing": (3, 10), "datetime.UTC": (3, 11), "asyncio.to_thread": (3, 9),
    "asyncio.timeout": (3, 11), "asyncio.TaskGroup": (3, 11), "operator.call": (3, 11),
    "typing.Literal": (3, 8), "typing.Final": (3, 8), "typing.Protocol": (3, 8), "typing.TypedDict": (3, 8),
    "typing.Annotated": (3, 9), "typing.ParamSpec": (3, 10), "typing.TypeAlias": (3, 10),
    "typing.Self": (3, 11), "enum.StrEnum": (3, 11), "types.NoneType": (3, 10),
}
NEWER_MODULES = {"zoneinfo": (3, 9), "graphlib": (3, 9), "tomllib": (3, 11), "importlib.metadata": (3, 8),
                 "importlib.resources.abc": (3, 11), "multiprocessing.shared_memory": (3, 8)}
NEWER_BUILTINS = {"aiter": (3, 10), "anext": (3, 10), "ExceptionGroup": (3, 11), "BaseExceptionGroup": (3, 11),
                  "EncodingWarning": (3, 10)}
NEWER_KEYWORDS = {  # keyword argument -> (function names it is new for, version)
    "strict": ({"zip"}, (3, 10)), "missing_ok": ({"unlink"}, (3, 8)), "dirs_exist_ok": ({"copytree"}, (3, 8)),
    "ignore_cleanup_errors": ({"TemporaryDirectory"}, (3, 10)), "process_group": ({"Popen", "run"}, (3, 11)),
    "pipesize": ({"Popen", "run"}, (3, 10)), "extra_groups": ({"Popen", "run"}, (3, 9)),
    "key": ({"bisect", "bisect_left", "bisect_right", "insort", "insort_left", "insort_right"}, (3, 10)),
    "root_dir": ({"glob", "iglob"}, (3, 10)), "follow_symlinks": ({"chmod", "exists", "is_dir"}, (3, 10)),
}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}  # list[int] at run time: 3.9
FSTRING_SELF_DOC = re.compile(r"\{[^{}!:]*[^=!<>{}]=\s*(![rsa])?(:[^{}]*)?\}")  # f"{x=}": 3.8


def newer_than(source, minimum):
    """[(line, what, version)] of everything in ``source`` that needs a Python newer than ``minimum``."""
    try:
        tree = ast.parse(source, feature_version=minimum)
    except SyntaxError as err:
        return [(err.lineno, f"syntax: {err.msg}", None)]
    found = []

    def need(node, what, version):
        if version > minimum:
            found.append((node.lineno, what, version))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in NEWER_METHODS:
                need(node, f".{node.attr}()", NEWER_METHODS[node.attr])
            if isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in NEWER_QUALIFIED:
                need(node, f"{node.value.id}.{node.attr}", NEWER_QUALIFIED[f"{node.value.id}.{node.attr}"])
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            need(node, node.id, NEWER_BUILTINS[node.id])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for module in modules:
                if module in NEWER_MODULES:
                    need(node, f"import {module}", NEWER_MODULES[module])
                if module in NEWER_QUALIFIED:
                    need(node, f"from-import {module}", NEWER_QUALIFIED[module])
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for keyword in node.keywords:
                functions, version = NEWER_KEYWORDS.get(keyword.arg, (set(), None))
                if name in functions:
                    need(node, f"{name}({keyword.arg}=...)", version)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in BUILTIN_GENERICS:
            need(node, f"{node.value.id}[...] generic", (3, 9))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.BitOr) \
                and any(isinstance(side, (ast.Dict, ast.DictComp))
                        for side in (getattr(node, "left", None), getattr(node, "right", None),
                                     getattr(node, "value", None))):
            need(node, "dict | dict", (3, 9))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        prefix = re.match(r"[A-Za-z]*", token.string).group().lower()
        if token.type == tokenize.STRING and "f" in prefix and FSTRING_SELF_DOC.search(token.string):
            found.append((token.start[0], 'f-string "=" specifier', (3, 8)))
    return found


def test_runner_declares_and_keeps_python_3_7():
    assert MIN_PYTHON == (3, 7)  # Coral Dev Board's Mendel Linux; README "Remote devices" says so too
    assert newer_than(RUNNER.read_text(), MIN_PYTHON) == []
    assert "Python 3.7" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("snippet", [
    "name = 'a'\nname.removeprefix('serving_default_')",
    "import zoneinfo",
    "from importlib.metadata import version",
    "import math\nmath.prod([1, 2])",
    "from math import prod",
    "def f(a, /):\n    pass",
    "if (n := 1):\n    pass",
    "x = 1\nprint(f'{x=}')",
    "def f() -> list[int]:\n    return []",
    "zip([1], [2], strict=True)",
    "from pathlib import Path\nPath('x').unlink(missing_ok=True)",
    "match 1:\n    case 1:\n        pass",
    "a = {} | {'b': 1}",
    "(2).bit_count()",
    "raise ExceptionGroup('x', [])",
])
def test_the_scan_catches_newer_python(snippet):
    assert newer_than(snippet, (3, 7)), snippet


def test_the_scan_passes_3_7_code():
    ok = "import os\nname = 'ab'\nprint(f'{name!r:>4} {1 == 1} {name}')\nx = {**{}, 'a': 1}\nos.sched_getaffinity\n"
    assert newer_than(ok, (3, 7)) == []


# ----------------------------------------------------------------------------- real interpreters
def interpreter(major, minor):
    """A working python<major>.<minor> on this machine (PATH, pyenv), or None."""
    pyenv = os.path.expanduser(f"~/.pyenv/versions/{major}.{minor}.*/bin/python{major}.{minor}")
    candidates = [shutil.which(f"python{major}.{minor}"), *sorted(glob.glob(pyenv))]
    for path in filter(None, candidates):
        probe = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == f"({major}, {minor})":
            return path
    return None


def host_python():
    """The interpreter this venv was made from (Python 3.11: the boards' Debian bookworm has it too)."""
    return str(Path(sys._base_executable).resolve())


def board_venv(root, python, requirements):
    """A throwaway venv with ``requirements`` from PyPI; skips when PyPI cannot be reached."""
    subprocess.run([python, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300)
    pip = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--only-binary", ":all:",
                          *requirements], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        if re.search(r"Connection|Network is unreachable|Temporary failure in name resolution|No matching distribution",
                     pip.stderr):
            pytest.skip(f"cannot install {' '.join(requirements)} from PyPI: {pip.stderr.strip().splitlines()[-1]}")
        raise AssertionError(pip.stderr[-3000:])
    return root / "bin" / "python"


TFLITE_MODELS = """
import sys
import numpy as np
import tensorflow as tf

out = sys.argv[1]
rng = np.random.default_rng(0)
kernel = tf.constant(rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.05)
dense = tf.constant(rng.normal(size=(8, 10)).astype(np.float32) * 0.1)

@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="image")])
def model(image):
    x = tf.nn.relu(tf.nn.conv2d(image / 255.0, kernel, 1, "SAME"))
    return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), dense)

@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 1], tf.float32, name="y"),
                              tf.TensorSpec([1, 8, 8, 2], tf.float32, name="uv")])
def two_inputs(y, uv):  # the YUV 4:2:0 model's inputs
    return tf.reduce_mean(y, axis=[1, 2]) + tf.reduce_mean(uv, axis=[1, 2, 3])[:, None]

def converter():
    return tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)

open(out + "/fp32.tflite", "wb").write(converter().convert())
# Through a SavedModel, as converters do: inputs are then named serving_default_y:0, serving_default_uv:0.
module = tf.Module()
module.f = two_inputs
tf.saved_model.save(module, out + "/saved", signatures=two_inputs.get_concrete_function())
open(out + "/yuv.tflite", "wb").write(tf.lite.TFLiteConverter.from_saved_model(out + "/saved").convert())
int8 = converter()
int8.optimizations = [tf.lite.Optimize.DEFAULT]
int8.representative_dataset = lambda: ([rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)] for _ in range(16))
int8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
int8.inference_input_type = int8.inference_output_type = tf.int8
open(out + "/int8.tflite", "wb").write(int8.convert())
"""


@pytest.fixture(scope="module")
def board_models(tmp_path_factory):
    """An ONNX model (opset 13, which onnxruntime 1.14 reads), fp32 and int8 TFLite models, NCHW samples."""
    import torch
    from torch import nn

    root = tmp_path_factory.mktemp("board-models")
    subprocess.run([sys.executable, "-c", TFLITE_MODELS, str(root)], check=True, capture_output=True, timeout=600,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, 16, 16),), str(root / "m.onnx"), dynamo=False,
                          opset_version=13, input_names=["image"], output_names=["logits"])
    rng = np.random.default_rng(0)
    np.savez(root / "samples.npz", image=rng.uniform(0, 255, (4, 3, 16, 16)).astype(np.float32))
    np.savez(root / "yuv.npz", y=rng.uniform(0, 255, (4, 1, 16, 16)).astype(np.float32),
             uv=rng.uniform(0, 255, (4, 2, 8, 8)).astype(np.float32))
    return root


def run_runner_with(python, model, samples, out, *extra):
    return subprocess.run([str(python), str(RUNNER), "--model", str(model), "--inputs", str(samples), "--warmup", "2",
                           "--min-runs", "10", "--min-duration", "0", "--threads", "1,2", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


BOARDS = {
    # name: (python version, requirements, models to run)
    "mendel-py37-numpy1": ((3, 7), ["numpy<2", "onnxruntime==1.14.1", "tflite-runtime==2.11.0"],
                           ["m.onnx", "fp32.tflite", "int8.tflite", "yuv.tflite"]),
    "host-numpy1-tflite-runtime-2.14": (None, ["numpy<2", "tflite-runtime==2.14.0"],
                                        ["fp32.tflite", "int8.tflite", "yuv.tflite"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_runner_on_old_python_numpy_1_and_tflite_runtime(tmp_path, board_models, board):
    version, requirements, models = BOARDS[board]
    python = interpreter(*version) if version else host_python()
    if python is None:
        pytest.skip(f"no Python {version[0]}.{version[1]} interpreter here (pyenv install {version[0]}.{version[1]})")
    venv_python = board_venv(tmp_path / "venv", python, requirements)
    for model in models:
        for xnnpack in (["--xnnpack", "on"], ["--xnnpack", "off"]) if model.endswith(".tflite") else ([],):
            out = tmp_path / "out" / f"{model}{''.join(xnnpack)}.json"
            lock = tmp_path / "device.lock"
            samples = board_models / ("yuv.npz" if model == "yuv.tflite" else "samples.npz")
            result = run_runner_with(venv_python, board_models / model, samples, out, "--lock", lock, *xnnpack)
            assert result.returncode == 0, (board, model, result.stderr[-3000:])
            r = json.loads(out.read_text())
            assert r["status"] == "ok" and set(r["threads"]) == {"1", "2"}
            assert r["versions"]["numpy"].startswith("1.")
            if version:
                assert r["versions"]["python"].startswith(f"{version[0]}.{version[1]}.")
            if model.endswith(".tflite"):
                assert r["runtime"]["name"] == "litert"
                assert r["threads"]["1"]["session_options"]["package"] == "tflite_runtime"
                active = r["runtime"]["providers_active"]
                if xnnpack[1] == "off" or model == "fp32.tflite":  # tflite-runtime 2.14's XNNPACK takes no int8
                    assert active == (["XNNPACK"] if xnnpack[1] == "on" else ["CPU"]), (model, xnnpack, active)
                assert r["runtime"]["provider_fallback"] == (active != r["runtime"]["providers_requested"])
                if model == "int8.tflite":
                    assert any("quantized to int8" in a for a in r["runtime"]["input_adaptations"])
                if model == "yuv.tflite":  # two inputs matched by their plain names, NCHW samples fed NHWC
                    assert sorted(r["runtime"]["input_adaptations"]) == [
                        "uv -> serving_default_uv:0: NCHW to NHWC", "y -> serving_default_y:0: NCHW to NHWC"]
            assert r["device_lock"]["path"] == str(lock)


@pytest.mark.slow
def test_python_3_6_gets_one_error_line(tmp_path, board_models):
    python = interpreter(3, 6)
    if python is None:
        pytest.skip("no Python 3.6 interpreter here")
    result = run_runner_with(python, board_models / "m.onnx", board_models / "samples.npz", tmp_path / "r.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: device_runner.py needs Python >= 3.7,") and "3.6." in result.stderr
    assert not (tmp_path / "r.json").exists()
