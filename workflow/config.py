"""Load and validate params.yaml against workflow/schemas/params.schema.yaml.

Every stage and the Snakefile call :func:`load_params`; a schema violation is a
:class:`UserError` naming the key, the bad value and what is allowed.
"""
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from workflow.errors import UserError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "params.schema.yaml"
# Devices a benchmark can run on. `local` is this machine and needs no configuration.
KNOWN_DEVICES = ("local",)


def _key_path(error):
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error):
    """One line: the key, the bad value and what the schema allows."""
    key = _key_path(error)
    value = json.dumps(error.instance, default=str)
    if len(value) > 60:
        value = value[:57] + "..."
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
        unknown = sorted(set(error.instance) - set(allowed_keys))
        where = "" if key == "<top level>" else f"'{key}' "
        return (f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {where or 'the top level '}"
                f"(allowed: {', '.join(allowed_keys)})")
    elif validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        allowed = f"a number {words[validator]} {expected}"
    elif validator in ("minItems", "maxItems", "minProperties", "uniqueItems", "minLength", "maxLength"):
        allowed = f"{validator} {expected}"
    elif validator in ("pattern", "propertyNames"):
        allowed = "a name matching ^[a-z0-9][a-z0-9_-]*$ (lower-case letters, digits, '-', '_')"
    else:
        allowed = error.message
    return f"key '{key}': got {value}, expected {allowed}"


def validate(params, source="params.yaml"):
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
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
    if "detection" in params:
        _check_detection(params["detection"], source)
    for i, device in enumerate(params["benchmark"]["devices"]):
        if device not in KNOWN_DEVICES:
            raise UserError(f"{source}: key 'benchmark.devices.{i}': got {device!r}, expected one of "
                            f"{', '.join(KNOWN_DEVICES)}")


def _check_detection(det, source):
    """A pruning source must be another detection model (a KD teacher may also be a checkpoint path)."""
    for name, spec in det["models"].items():
        prune_source = spec.get("prune", {}).get("source")
        if prune_source is not None and (prune_source not in det["models"] or prune_source == name):
            raise UserError(f"{source}: key 'detection.models.{name}.prune.source': got {prune_source!r}, "
                            f"expected another entry of detection.models")
        if spec.get("teacher") == name:
            raise UserError(f"{source}: key 'detection.models.{name}.teacher': a model cannot teach itself")


def load_params(path="params.yaml"):
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run from the repository root)") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return validate(params, str(path))


def params_hash(obj):
    """Stable hash of a params subset (canonical JSON)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
