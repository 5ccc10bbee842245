"""YAML files and JSON-schema errors, worded as one line naming the file and the key.

The base of workflow.config (params.yaml) and workflow.inventory (config/devices.yaml);
it imports neither, so the two never import each other in a cycle.
"""
import itertools
import json
import math
from pathlib import Path

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from workflow.errors import UserError


def key_path(error):
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


def describe(error):
    """One line: the key, a short excerpt of the bad value and what the schema allows."""
    key = key_path(error)
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
