"""Set keys in params.yaml in place, keeping its comments (what `dvc exp run -S` does).

    python -m workflow.set_params data.source=npz data.path=/data/cifar10.npz
    python -m workflow.set_params --file config/papers/yuv420_mobilenetv2/small.yaml

Values are parsed as YAML (``5`` is an int, ``[1, 2]`` a list). The result is
validated before it is written, so a bad value leaves params.yaml untouched; so does a data
source the assignments touch that does not exist here and cannot be downloaded.
"""
import argparse
import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from workflow import sources as data_sources
from workflow.config import validate
from workflow.detection import source as detection_source
from workflow.errors import UserError, cli
from workflow.io import write_text
from workflow.schema import clip, load_yaml_text, read_yaml


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


def set_values(path, values, origins=None):
    """Set dotted keys in params.yaml; ``origins`` says where each value came from (for errors)."""
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
        node[parts[-1]] = flow_style(value)
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    text = buffer.getvalue()
    params = validate(load_yaml_text(text, path), str(path))
    check_data_sources(params, origins or dict.fromkeys(values, "command line"), str(path))
    write_text(path, text)


def check_data_sources(params, origins, params_path):
    """The data sources the assignments touch must exist or be downloadable; else one line naming the
    key, the file (or command line) that set it and the fix."""
    sources = [("data", params["data"], data_sources.missing_source)]
    if params.get("detection", {}).get("enabled"):
        sources.append(("detection", params["detection"]["data"], detection_source.missing_source))
    for top, data, missing in sources:
        problem = missing(data) if any(key.split(".")[0] == top for key in origins) else None
        if problem:
            key = f"{top}.data.path" if top == "detection" else "data.path"
            raise UserError(f"{origins.get(key, params_path)}: key '{key}': {problem}; "
                            f"set it with -S {key}=<path>")


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
    values, origins = {}, {}
    for source, assigned in [*((overlay, read_overlay(overlay)) for overlay in args.file),
                             ("command line", parse_assignments(args.assignments))]:
        values.update(assigned)
        origins.update(dict.fromkeys(assigned, source))
    set_values(args.params, values, origins)
    print(f"updated {args.params}: {', '.join(values)}")


if __name__ == "__main__":
    main()
