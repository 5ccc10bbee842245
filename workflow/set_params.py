"""Set keys in params.yaml in place, keeping its comments (what `dvc exp run -S` does).

    python -m workflow.set_params data.source=npz data.path=/data/cifar10.npz

Values are parsed as YAML (``5`` is an int, ``[1, 2]`` a list). The result is
validated before it is written, so a bad value leaves params.yaml untouched.
"""
import argparse
import io
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from workflow.config import validate
from workflow.errors import UserError, cli
from workflow.io import write_text


def set_keys(path, assignments):
    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text())
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"{assignment!r}: expected key=value, e.g. data.source=npz")
        node, parts = doc, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{path}: key '{key}': no section '{part}'")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    text = buffer.getvalue()
    validate(yaml.safe_load(text), str(path))
    write_text(path, text)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="+", metavar="key=value")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    set_keys(args.params, args.assignments)
    print(f"updated {args.params}: {', '.join(args.assignments)}")


if __name__ == "__main__":
    main()
