"""YAML files and JSON-schema errors, worded as one line naming the file and the key.

The base of workflow.config (params.yaml) and workflow.inventory (config/devices.yaml);
it imports neither, so the two never import each other in a cycle.
"""
import json
from pathlib import Path

import yaml

from workflow.errors import UserError


def key_path(error):
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def describe(error):
    """One line: the key, the bad value and what the schema allows."""
    key = key_path(error)
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
    elif validator == "pattern":
        allowed = f"a name matching {expected}"
    elif validator == "propertyNames":
        allowed = f"names matching {expected.get('pattern', expected)}"
    else:
        allowed = error.message
    return f"key '{key}': got {value}, expected {allowed}"


def read_yaml(path, missing, expected):
    """The mapping a YAML file holds; a one-line error naming the file when it is absent (``missing``
    says what to do), not YAML (with the line) or not a mapping (``expected`` says of what)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of {expected}")
    return doc
