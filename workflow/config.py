"""Load and validate params.yaml against workflow/schemas/params.schema.yaml.

Every stage and the Snakefile call :func:`load_params`; a schema violation is a
:class:`UserError` naming the key, a short excerpt of the bad value and what is allowed.

Every YAML file the project reads from a user (params.yaml, overlays, the inventory,
paper files) goes through :func:`read_yaml`, which bounds the work before any of it is
done: at most ``MAX_YAML_BYTES`` are read, nesting stops at ``MAX_YAML_DEPTH`` levels and
the document may expand to at most ``MAX_YAML_NODES`` nodes with its aliases followed
(checked on the parser's events, so a YAML bomb of nested anchors is refused before a node
is built), and ``.inf``/``.nan`` and integers too long for Python are refused. Each is one
error line naming the file and the line.
"""
import functools
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from workflow.errors import UserError
from workflow.inventory import LOCAL, load_inventory
from workflow.model_specs import check_links, expand_seeds
from workflow.schema import describe, read_yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "params.schema.yaml"


@functools.lru_cache(maxsize=1)
def load_schema():
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(params, source="params.yaml"):
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise UserError(f"{source}: {describe(best)}")
    _check_semantics(params, source)
    return params


def _check_semantics(params, source):
    data = params["data"]
    if data["train_subset"] and data["calib_subset"] > data["train_subset"]:
        raise UserError(f"{source}: key 'data.calib_subset': got {data['calib_subset']}, expected at most "
                        f"data.train_subset ({data['train_subset']})")
    _check_image_size(params, source)
    for model, spec in params["models"].items():
        for i, name in enumerate(spec.get("artifacts", [])):
            if name not in params["artifacts"]:
                raise UserError(f"{source}: key 'models.{model}.artifacts.{i}': got {name!r}, expected one of "
                                f"{', '.join(params['artifacts'])}")
    check_links(params, source)  # distill teachers, pruning sources
    train, processes = params["train"], params["train"]["processes_per_node"] * params["train"]["nodes"]
    if train["batch_size"] % processes:
        raise UserError(f"{source}: key 'train.batch_size': got {train['batch_size']}, expected a multiple of the "
                        f"{processes} training processes (train.processes_per_node x train.nodes; it is the global "
                        "batch, split evenly)")
    for name, spec in params["artifacts"].items():
        if name != "onnx-fp32" and len(spec) != 1:
            raise UserError(f"{source}: key 'artifacts.{name}': got {len(spec)} producer keys "
                            f"({', '.join(spec) or 'none'}), expected exactly one (e.g. quantize, qat, tflite)")
        if "quantize" in spec:
            _check_quantize(spec["quantize"], f"artifacts.{name}.quantize", params, source)
        for producer, prefix in PRODUCER_FORMAT.items():
            if producer in spec and not name.startswith(f"{prefix}-"):
                raise UserError(f"{source}: key 'artifacts.{name}': the {producer} stage makes {prefix} files, so "
                                f"the name must start with '{prefix}-'")
        if "tflite" in spec:
            _check_tflite(spec["tflite"], f"artifacts.{name}.tflite", params, source)
        if "hailo" in spec and "hef" in params.get("targets", DEFAULT_TARGETS):
            _check_calib_size(spec["hailo"].get("calib_size", HAILO_CALIB_SIZE), f"artifacts.{name}.hailo.calib_size",
                              params, source)
    if "detection" in params:
        _check_detection(params["detection"], source)
    _check_devices(params, source)
    pipeline = params["benchmark"]["pipeline"]
    for key, fmt in (("rgb_model", "rgb"), ("yuv_model", "yuv420")):
        model = params["models"].get(pipeline[key])
        if pipeline["enabled"] and (model is None or model["input_format"] != fmt):
            raise UserError(f"{source}: key 'benchmark.pipeline.{key}': got {pipeline[key]!r}, expected a model "
                            f"of `models` with input_format {fmt}")


def _check_image_size(params, source):
    """The ImageNet pack-time policy needs the loader's random-resized crop; I420 needs even sizes."""
    size, crop = params["data"]["image_size"], params["train"]["augment"].get("random_resized_crop")
    if size and crop is None:
        raise UserError(f"{source}: key 'train.augment.random_resized_crop': got null, expected {{scale: [min, max], "
                        f"ratio: [min, max]}}: with data.image_size {size} training images keep their own sizes and "
                        f"the loader crops them to {size}x{size}")
    for key in ("scale", "ratio"):
        if crop and crop[key][0] > crop[key][1]:
            raise UserError(f"{source}: key 'train.augment.random_resized_crop.{key}': got {crop[key]}, expected "
                            "[min, max] with min <= max")
    yuv = [m for m, spec in params["models"].items() if spec["input_format"] == "yuv420"]
    if size % 2 and yuv:
        raise UserError(f"{source}: key 'data.image_size': got {size}, expected an even size (model {yuv[0]} "
                        "takes YUV 4:2:0, whose chroma planes are half the size)")


def _check_devices(params, source):
    """Every device but `local` must have a profile in the inventory (config/devices.yaml)."""
    inventory_path = params["benchmark"]["inventory"]
    remote = [d for d in params["benchmark"]["devices"] if d != LOCAL]
    inventory = load_inventory(inventory_path) if remote else {}
    for i, device in enumerate(params["benchmark"]["devices"]):
        if device != LOCAL and device not in inventory:
            raise UserError(f"{source}: key 'benchmark.devices.{i}': got {device!r}, expected local or a device "
                            f"of {inventory_path} ({', '.join(inventory) or 'none defined'})")


STATIC_ONLY = ("format", "calibration", "percentile", "calib_size", "calib_batch", "activation_type")


def _check_quantize(q, key, params, source):
    if q["method"] == "dynamic":
        given = [k for k in STATIC_ONLY if k in q]
        if given:
            raise UserError(f"{source}: key '{key}.{given[0]}': only for method static (dynamic quantization "
                            "computes activation ranges at run time)")
    if "percentile" in q and q.get("calibration") != "percentile":
        raise UserError(f"{source}: key '{key}.percentile': only with calibration: percentile")
    calib_subset = params["data"]["calib_subset"]
    if q.get("calib_size", 0) > calib_subset:
        raise UserError(f"{source}: key '{key}.calib_size': got {q['calib_size']}, expected at most "
                        f"data.calib_subset ({calib_subset}), the calibration images that are packed")
    if q.get("activation_type") == "qint8" and q.get("weight_type") == "quint8":
        raise UserError(f"{source}: key '{key}.weight_type': quint8 weights with qint8 activations are not "
                        "supported by ONNX Runtime (use qint8)")


def _check_detection(det, source):
    """A pruning source must be another detection model (a KD teacher may also be a checkpoint path)."""
    for name, spec in det["models"].items():
        prune_source = spec.get("prune", {}).get("source")
        if prune_source is not None and (prune_source not in det["models"] or prune_source == name):
            raise UserError(f"{source}: key 'detection.models.{name}.prune.source': got {prune_source!r}, "
                            f"expected another entry of detection.models")
        if spec.get("teacher") == name:
            raise UserError(f"{source}: key 'detection.models.{name}.teacher': a model cannot teach itself")


# The file format each producer makes (an artifact's name starts with it).
PRODUCER_FORMAT = {"quantize": "onnx", "qat": "onnx", "tflite": "tflite", "hailo": "hef"}
# Formats built when params.yaml has no `targets` (hef needs the proprietary Hailo SDK).
DEFAULT_TARGETS = ("onnx", "tflite")
HAILO_CALIB_SIZE = 1024  # Hailo's recommended calibration set size


def _check_calib_size(size, key, params, source):
    calib_subset = params["data"]["calib_subset"]
    if size > calib_subset:
        raise UserError(f"{source}: key '{key}': got {size}, expected at most data.calib_subset ({calib_subset}), "
                        "the calibration images that are packed (raise data.calib_subset)")


def _check_tflite(t, key, params, source):
    if t["precision"] != "int8":
        given = [k for k in ("io_type", "calib_size") if k in t]
        if given:
            raise UserError(f"{source}: key '{key}.{given[0]}': only for precision int8 (full-integer "
                            "quantization with a representative dataset)")
    if t.get("converter") == "litert_torch" and t["precision"] != "fp32":
        raise UserError(f"{source}: key '{key}.converter': litert_torch makes precision fp32 here "
                        f"(got {t['precision']}; use onnx2tf)")
    if t["precision"] == "int8" and "tflite" in params.get("targets", DEFAULT_TARGETS):
        _check_calib_size(t.get("calib_size", params["data"]["calib_subset"]), f"{key}.calib_size", params, source)


def check_device(params, device):
    """A stage's --device must be one of benchmark.devices (so its job is part of the DAG)."""
    if device not in params["benchmark"]["devices"]:
        raise UserError(f"--device {device!r} is not in params.yaml benchmark.devices "
                        f"({', '.join(params['benchmark']['devices'])})")


def load_params(path="params.yaml"):
    """params.yaml validated, with one ``models`` entry per model and training seed (model_specs.expand_seeds)."""
    params = read_yaml(path, "file not found (run from the repository root)", "sections at the top level")
    return expand_seeds(validate(params, str(path)))


def params_hash(obj):
    """Stable hash of a params subset (canonical JSON)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
