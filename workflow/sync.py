"""One state for Snakemake and DVC: each tool's finished work is current for the other.

Snakemake -> DVC (:func:`record`, called by the Snakefile when a run ends, done or failed):
dvc.yaml is brought up to date with params.yaml and `dvc commit` records exactly the stages
whose jobs are complete (leaving the outputs in place), so dvc.lock holds their
dependencies, params and outputs and the outputs are in the DVC cache; `dvc status` then
lists only what did not run, and a `dvc repro` after a params change reruns only the stages
it affects.

DVC -> Snakemake (``python -m workflow.sync``, after dvc checkout / pull / repro / exp apply):
DVC writes files in its own order and resets their timestamps (treeverse/dvc#8602), so
Snakemake would rerun finished work. When `dvc status` confirms that every output matches
params.yaml and its dependencies by hash, this marks Snakemake's jobs up to date
(`snakemake --touch`) without running anything.
"""
import argparse
import collections
import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import yaml

from workflow import layout
from workflow.config import load_params
from workflow.dag import CHECK_MARKER, CHECK_STAGE, dvc_yaml, stages
from workflow.errors import UserError, cli
from workflow.io import write_text


def dvc(*args):
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def last_line(result):
    return (result.stderr.strip() or result.stdout.strip() or "?").splitlines()[-1]


@contextlib.contextmanager
def params_parsed_once():
    """DVC parses params.yaml again for the params of every stage it saves (about half of a commit's
    time); while one commit runs the file does not change, so parse it once."""
    from dvc.dependency import param

    parse, parsed = param.load_path, {}

    def parse_once(path, fs, **kwargs):
        key = (path, id(fs), tuple(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = parse(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    param.load_path = parse_once
    try:
        yield
    finally:
        param.load_path = parse


@contextlib.contextmanager
def git_index_read_once(repo):
    """DVC asks Git whether each output is tracked, and scmrepo's dulwich backend reads .git/index again
    for every question; the index does not change while one commit runs, so read it once."""
    from dvc.scm import NoSCM

    if isinstance(repo.scm, NoSCM):  # a DVC repository without Git (dvc init --no-scm)
        yield
        return
    git = repo.scm.dulwich.repo
    index = git.open_index()
    git.open_index = lambda: index
    try:
        yield
    finally:
        del git.open_index


def lockfile_yaml():
    """ruamel.yaml set up to write dvc.lock as DVC does (block style, keys in order, null as nothing)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)  # the pure emitter wraps long lines as DVC's round-trip one does
    yaml.default_flow_style = False
    yaml.representer.sort_base_mapping_type_on_output = False
    yaml.representer.add_representer(collections.OrderedDict, yaml.representer.__class__.represent_dict)
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", ""))
    return yaml


def update_lockfile(stages):
    """dvc.lock gets the entries of ``stages`` (DVC's own serialization) and keeps the others: what DVC's
    dump_stages writes, byte for byte, but read with the C loader and without the round trip that
    preserves comments (a generated file has none), which took two thirds of a commit of every stage;
    written atomically."""
    from dvc.stage.serialize import to_lockfile
    from ruamel.yaml import YAML

    path = Path(layout.DVC_LOCK)
    data = (YAML(typ="safe", pure=False).load(path.read_text()) if path.exists() else None) or {"schema": "2.0"}
    data.setdefault("stages", {})
    for stage in stages:
        data["stages"].update(to_lockfile(stage))
    text = io.StringIO()
    lockfile_yaml().dump(data, text)
    write_text(path, text.getvalue())


def dvc_commit(names):
    """`dvc commit --force --no-relink` of the stages ``names``, collecting dvc.yaml once (the command
    line collects it again for every stage it is given, about a second each): dvc.lock gets their
    dependencies, params and output hashes; the outputs are copied into the DVC cache and left in
    place, timestamps and all, so Snakemake still sees its jobs as done. The run cache is left to
    `dvc repro`, which fills it as it runs stages."""
    from dvc.repo import Repo, lock_repo

    with Repo() as repo, lock_repo(repo), params_parsed_once(), git_index_read_once(repo):
        stages = [stage for stage in repo.index.stages if stage.name in set(names)]
        for stage in stages:
            stage.save(run_cache=False)
            stage.commit(relink=False)
        update_lockfile(stages)


def recorded_stages():
    """The stages dvc.lock holds."""
    path = Path(layout.DVC_LOCK)
    return set((yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}).get("stages", {})) if path.exists() else set()


def record(params, finished, current):
    """DVC records the stages Snakemake completed: those ``finished`` in this run, and those ``current``
    (up to date, not rerun) that dvc.lock does not hold yet: dvc.lock and the DVC cache.

    Never fails the run that calls it: without a DVC repository (or when DVC refuses) it says so
    in one line."""
    from dvc.exceptions import DvcException

    names = [*finished, *sorted(set(current) - recorded_stages())]
    if not names:
        return
    if not Path(".dvc").is_dir():
        print(f"warning: no DVC repository here (.dvc/): {len(names)} completed stages not recorded", file=sys.stderr)
        return
    text = dvc_yaml(params)
    if not Path(layout.DVC_YAML).exists() or Path(layout.DVC_YAML).read_text() != text:
        write_text(layout.DVC_YAML, text)
    write_text(layout.DVC_YAML_CHECK, CHECK_MARKER)  # what the check stage writes: dvc.yaml is current
    try:
        dvc_commit([CHECK_STAGE, *names])
    except (DvcException, OSError) as err:
        print(f"warning: DVC did not record the run ({str(err).splitlines()[0]}); run `dvc commit` after fixing "
              "it", file=sys.stderr)
        return
    print(f"DVC recorded {len(names)} completed stage(s) in dvc.lock", file=sys.stderr)


def dvc_changed_stages():
    result = dvc("status", "--json")
    if result.returncode != 0:
        raise UserError(f"dvc status failed: {last_line(result)}")
    return sorted(json.loads(result.stdout or "{}"))


def existing_outputs(params_path):
    """The DAG's outputs that are present (summary, paper tables, plots, ... whatever was restored)."""
    return [f for stage in stages(load_params(params_path)) for f in stage.outputs if Path(f).exists()]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description="Mark Snakemake's jobs up to date after DVC restored or "
                                                 "reproduced their outputs.")
    parser.add_argument("targets", nargs="*", help="default: every output of dvc.yaml that exists")
    parser.add_argument("--params", default=layout.PARAMS)
    args = parser.parse_args(argv)
    changed = dvc_changed_stages()
    if changed:
        raise UserError(f"dvc.lock does not match the workspace for {', '.join(changed[:5])}"
                        f"{' ...' if len(changed) > 5 else ''}: run `dvc repro` (or `dvc checkout`) first")
    targets = args.targets or existing_outputs(args.params)
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--touch", "--cores", "1",
                             "--quiet", "all"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"snakemake --touch failed: {last_line(result)}")
    print("Snakemake now sees DVC's outputs as up to date")


if __name__ == "__main__":
    main()
