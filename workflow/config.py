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
import itertools
import json
import math
from pathlib import Path

import jsonschema
import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from workflow.errors import UserError
from workflow.model_specs import check_links

SCHEMA_PATH = Path(__file__).parent / "schemas" / "params.schema.yaml"


def _key_path(error):
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def clip(text, limit=60):
    """``text`` cut to ``limit`` characters, for naming a user's key or path in one line."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def excerpt(value, limit=60):
    """``value`` as JSON, at most ``limit`` characters. Only its first items are rendered, so a huge
    or deeply shared value costs no more than a small one."""
    text = _json_head(value, limit + 1, depth=3)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_head(value, budget, depth):
    if isinstance(value, str):
        return json.dumps(value[:budget])
    if isinstance(value, (list, dict)):
        is_dict = isinstance(value, dict)
        if depth == 0:
            return "{...}" if is_dict else "[...]"
        parts, used = [], 0
        for item in itertools.islice(value.items() if is_dict else value, 8):
            part = (f"{json.dumps(str(item[0])[:budget])}: {_json_head(item[1], budget, depth - 1)}" if is_dict
                    else _json_head(item, budget, depth - 1))
            parts.append(part)
            used += len(part) + 2
            if used > budget:
                break
        more = ", ..." if len(value) > len(parts) else ""
        return ("{%s%s}" if is_dict else "[%s%s]") % (", ".join(parts), more)
    return json.dumps(value, default=str)[:budget]


def _describe(error):
    """One line: the key, a short excerpt of the bad value and what the schema allows."""
    key = _key_path(error)
    value = excerpt(error.instance)
    validator, expected = error.validator, error.validator_value
    if validator == "enum":
        allowed = "one of " + ", ".join(json.dumps(v) for v in expected)
    elif validator == "type":
        allowed = f"a value of type {expected}"
    elif validator == "required":
        missing = [k for k in expected if k not in (error.instance or {})]
        return f"key '{key}': missing required key(s) {', '.join(missing)}"
    elif validator == "additionalProperties":
        allowed_keys = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed_keys]
        names = ", ".join(repr(clip(k, 40)) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        where = "" if key == "<top level>" else f"'{key}' "
        return f"unknown key(s) {names} in {where or 'the top level '}(allowed: {', '.join(allowed_keys)})"
    elif validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        allowed = f"a number {words[validator]} {expected}"
    elif validator in ("minItems", "maxItems", "minProperties", "maxProperties", "uniqueItems"):
        allowed = f"{validator} {expected}"
    elif validator in ("minLength", "maxLength"):
        allowed = f"{validator} {expected} (got {len(error.instance)} characters)"
    elif validator == "pattern":
        allowed = f"a name matching {expected}"
    elif validator == "propertyNames":
        allowed = f"names matching {expected.get('pattern', expected)}"
    elif len(error.message) <= 200:
        allowed = error.message
    else:  # jsonschema's message repeats the whole value
        allowed = f"a value that satisfies the schema's {validator!r}"
    return f"key '{key}': got {value}, expected {allowed}"


@functools.lru_cache(maxsize=1)
def load_schema():
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(params, source="params.yaml"):
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise UserError(f"{source}: {_describe(best)}")
    _check_semantics(params, source)
    return params


def _check_semantics(params, source):
    data = params["data"]
    if data["train_subset"] and data["calib_subset"] > data["train_subset"]:
        raise UserError(f"{source}: key 'data.calib_subset': got {data['calib_subset']}, expected at most "
                        f"data.train_subset ({data['train_subset']})")
    for model, spec in params["models"].items():
        for i, name in enumerate(spec.get("artifacts", [])):
            if name not in params["artifacts"]:
                raise UserError(f"{source}: key 'models.{model}.artifacts.{i}': got {name!r}, expected one of "
                                f"{', '.join(params['artifacts'])}")
    check_links(params, source)  # distill teachers, pruning sources
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


def _check_devices(params, source):
    """Every device but `local` must have a profile in the inventory (config/devices.yaml)."""
    from workflow.inventory import LOCAL, load_inventory

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


# Bounds of every YAML file read from a user. params.yaml is about 12 kB and 1500 nodes; the
# largest shipped file (a paper's reference numbers) about 60 kB.
MAX_YAML_BYTES = 256 * 1024
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


# libyaml's parser when PyYAML has it (it does in our venv): the bounds check walks its events.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_yaml_bounds(text):
    """Walk the document's parse events, before anything is composed or built: nesting depth, and the
    size of every node with its aliases expanded (from the sizes of its already closed children and
    anchors), so a bomb of nested anchors stops at the first level past MAX_YAML_NODES."""
    open_nodes, anchored = [], {}  # [size so far, anchor] per open collection; anchor -> size (None: open)

    def add(size, mark):
        if open_nodes:
            open_nodes[-1][0] += size
            size = open_nodes[-1][0]
        if size > MAX_YAML_NODES:
            raise ComposerError(None, None, f"expands to more than {MAX_YAML_NODES} nodes once its aliases "
                                            f"are followed (nested anchors?)", mark)

    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_nodes) >= MAX_YAML_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            if event.anchor:
                anchored[event.anchor] = None
            open_nodes.append([1, event.anchor])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = open_nodes.pop()
            if anchor:
                anchored[anchor] = size
            add(size, event.start_mark)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                anchored[event.anchor] = 1
            add(1, event.start_mark)
        elif isinstance(event, yaml.AliasEvent):
            if anchored.get(event.anchor, 0) is None:
                raise ComposerError(None, None, "an alias refers to a node that contains it", event.start_mark)
            add(anchored.get(event.anchor, 0), event.start_mark)  # an undefined one is reported by the loader


class BoundedLoader(_SafeLoader):
    """The safe loader, refusing values no parameter can take: .inf/.nan and integers too long for Python."""

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise ConstructorError(None, None, "infinite or NaN numbers are not accepted", node.start_mark)
        return value

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # longer than Python's int conversion limit
            raise ConstructorError(None, None, "an integer with too many digits", node.start_mark) from None


BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)
BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def load_yaml_text(text, source):
    """A YAML document (str or bytes) parsed within the bounds; a one-line UserError naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise UserError(f"{source}: larger than {MAX_YAML_BYTES // 1024} KiB, the limit for a YAML file here")
    try:
        check_yaml_bounds(text)
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = str(getattr(err, "problem", None) or err).splitlines()[0][:200]
        raise UserError(f"{source}: not valid YAML{where}: {problem}") from None


def read_yaml(path, missing, expected):
    """The mapping a YAML file holds; a one-line error naming the file when it is absent (``missing``
    says what to do), too large, not YAML (with the line) or not a mapping (``expected`` says of what).
    At most MAX_YAML_BYTES + 1 bytes are read, whatever the file's size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    doc = load_yaml_text(text, path)
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of {expected}")
    return doc


def load_params(path="params.yaml"):
    params = read_yaml(path, "file not found (run from the repository root)", "sections at the top level")
    return validate(params, str(path))


def params_hash(obj):
    """Stable hash of a params subset (canonical JSON)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
