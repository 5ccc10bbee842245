"""Set keys in params.yaml in place, keeping its comments (what `dvc exp run -S` does).

    python -m workflow.set_params data.source=npz data.path=/data/cifar10.npz
    python -m workflow.set_params --file config/papers/yuv420_mobilenetv2/small.yaml

Values are parsed as YAML (``5`` is an int, ``[1, 2]`` a list). The result is
validated before it is written, so a bad value leaves params.yaml untouched.
"""
import argparse
import io
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from workflow.config import read_yaml, validate
from workflow.errors import UserError, cli
from workflow.io import write_text


def parse_assignments(assignments):
    values = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"{assignment!r}: expected key=value, e.g. data.source=npz")
        values[key] = yaml.safe_load(raw)
    return values


def read_overlay(path):
    """A YAML file of dotted params.yaml keys -> values (a paper's small.yaml / full.yaml)."""
    return read_yaml(path, "file not found", "dotted params.yaml keys to values")


def set_keys(path, assignments):
    set_values(path, parse_assignments(assignments))


def flow_style(value):
    """Lists in flow style, as params.yaml writes them (``[5]``): ruamel emits a block list that replaces a
    flow one with the key's comment misplaced, and an empty one after such a comment as broken YAML."""
    if isinstance(value, dict):
        return CommentedMap((k, flow_style(v)) for k, v in value.items())
    if isinstance(value, list):
        out = CommentedSeq(flow_style(v) for v in value)
        out.fa.set_flow_style()
        return out
    return value


def set_values(path, values):
    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text())
    for key, value in values.items():
        node, parts = doc, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{path}: key '{key}': no section '{part}'")
            node = node[part]
        node[parts[-1]] = flow_style(value)
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    text = buffer.getvalue()
    validate(yaml.safe_load(text), str(path))
    write_text(path, text)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", metavar="key=value")
    parser.add_argument("--file", action="append", default=[],
                        help="a YAML file of dotted keys -> values, applied before the key=value pairs")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if not args.assignments and not args.file:
        parser.error("give key=value pairs and/or --file")
    values = {}
    for overlay in args.file:
        values.update(read_overlay(overlay))
    values.update(parse_assignments(args.assignments))
    set_values(args.params, values)
    print(f"updated {args.params}: {', '.join(values)}")


if __name__ == "__main__":
    main()
