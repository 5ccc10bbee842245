"""Set keys in params.yaml in place, keeping its comments (what `dvc exp run -S` does).

    python -m workflow.set_params data.source=npz data.path=/data/cifar10.npz
    python -m workflow.set_params --file config/papers/yuv420_mobilenetv2/small.yaml

Values are parsed as YAML (``5`` is an int, ``[1, 2]`` a list). The result is
validated before it is written, so a bad value leaves params.yaml untouched.
"""
import argparse
import io
from pathlib import Path

from ruamel.yaml import YAML

from workflow.config import clip, load_yaml_text, read_yaml, validate
from workflow.errors import UserError, cli
from workflow.io import write_text


def parse_assignments(assignments):
    values = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"{clip(assignment)!r}: expected key=value, e.g. data.source=npz")
        values[key] = load_yaml_text(raw, f"the value of {clip(key)}")
    return values


def read_overlay(path):
    """A YAML file of dotted params.yaml keys -> values (a paper's small.yaml / full.yaml)."""
    return read_yaml(path, "file not found", "dotted params.yaml keys to values")


def set_keys(path, assignments):
    set_values(path, parse_assignments(assignments))


def set_values(path, values):
    path = Path(path)
    read_yaml(path, "file not found (run from the repository root)", "sections at the top level")  # bounded
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text())
    for key, value in values.items():
        node, parts = doc, str(key).split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{path}: key '{clip(key)}': no section '{clip(part)}'")
            node = node[part]
        node[parts[-1]] = value
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    text = buffer.getvalue()
    validate(load_yaml_text(text, path), str(path))
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
