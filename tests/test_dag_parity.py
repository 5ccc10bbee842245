"""Snakemake and DVC run the same DAG, compared in both directions: the same stages, commands,
outputs, dependencies (equal sets) and params, each as the tool itself reads it (Snakemake's own
job objects, dvc.yaml as written); dvc.yaml stays what params.yaml gives; planning stays light."""
import ast
import json
import subprocess
import sys

import yaml

from conftest import REPO, sh, tiny_params, write_params
from workflow.config import load_params
from workflow.model_specs import expand_seeds
from workflow.dag import CHECK_STAGE, dvc_yaml, param_value, stages
from workflow.layout import DVC_YAML_CHECK

WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "profiles", "config", "envs")
# Every job of a forced dry run as Snakemake builds it (its Python API), printed as JSON.
SNAKEMAKE_JOBS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import DAGSettings, OutputSettings, Quietness, ResourceSettings

with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                            workdir=Path(".")).dag(dag_settings=DAGSettings(targets={sys.argv[1]},
                                                                             forceall=True)).workflow_api._workflow
    workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
    workflow._build_dag()
    print(json.dumps([{"rule": job.rule.name, "input": list(job.input), "output": list(job.output),
                       "params": dict(job.params.items()), "shell": job.shellcmd}
                      for job in workflow.dag.jobs if job.rule.name != "all"]))
"""


def snakemake_jobs(workdir, target="all"):
    """{frozenset(outputs): job} of every job Snakemake plans for ``target``."""
    out = sh(workdir, sys.executable, "-c", SNAKEMAKE_JOBS, target).stdout
    return {frozenset(job["output"]): job for job in json.loads(out)}


def dvc_stages(workdir):
    """{frozenset(outputs): (name, stage entry)} of dvc.yaml, without its check stage."""
    doc = yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"]
    assert list(doc)[0] == CHECK_STAGE and doc[CHECK_STAGE]["outs"] == [DVC_YAML_CHECK]
    found = {}
    for name, entry in doc.items():
        if name != CHECK_STAGE:
            outputs = entry.get("outs", []) + [next(iter(m)) for m in entry.get("metrics", []) + entry.get("plots", [])]
            found[frozenset(outputs)] = (name, entry)
    return found


def workdir_with(tmp_path, params):
    """A project folder running the repository's workflow on ``params`` (the test's own folders kept)."""
    for item in WORKFLOW_FILES:
        target = tmp_path / item
        if target.is_dir():  # the test's own folder (e.g. config/devices.yaml): link what it lacks
            for child in (REPO / item).iterdir():
                if not (target / child.name).exists():
                    (target / child.name).symlink_to(child)
            continue
        target.symlink_to(REPO / item)
    write_params(tmp_path / "params.yaml", params)
    sh(tmp_path, sys.executable, "-m", "workflow.dag")
    return tmp_path


def check_parity(workdir, params, target="all"):
    jobs, dvc = snakemake_jobs(workdir, target), dvc_stages(workdir)
    if target != "all":  # one branch of the DAG: the DVC stages that make its jobs' outputs
        dvc = {outputs: stage for outputs, stage in dvc.items() if outputs in jobs}
    assert set(jobs) == set(dvc), (sorted(map(sorted, set(jobs) - set(dvc)))[:3],
                                   sorted(map(sorted, set(dvc) - set(jobs)))[:3])
    produced = set().union(*jobs)
    for outputs, (name, entry) in dvc.items():
        job = jobs[outputs]
        assert job["shell"].rsplit(" > logs/", 1)[0] == entry["cmd"], name  # Snakemake keeps a log per job
        # DVC's root stages also wait for the check of dvc.yaml, which only DVC needs
        deps = set(entry["deps"]) - ({DVC_YAML_CHECK} if not produced & set(entry["deps"]) else set())
        assert set(job["input"]) == deps, (name, set(job["input"]) ^ deps)
        keys = entry.get("params", [])
        assert job["params"]["values"] == {key: param_value(params, key) for key in keys}, name
    return jobs


def test_default_params_dag_agrees(tmp_path):
    params = load_params(REPO / "params.yaml")
    jobs = check_parity(workdir_with(tmp_path, yaml.safe_load((REPO / "params.yaml").read_text())), params)
    assert len(jobs) == len(stages(params))


def test_changed_matrix_still_agrees(tmp_path):
    params = tiny_params()
    params["models"]["mnv2-wide-yuv"] = {"arch": "mobilenetv2", "width_mult": 1.0, "input_format": "yuv420"}
    # a ResNet-18 teacher, a YUV student distilled from it starting from a trained model, a pruned
    # distilled student, a QAT artifact with other settings, a litert-torch TFLite file, two devices
    params["models"]["resnet-teacher"] = {"arch": "resnet18", "width_mult": 1.0, "input_format": "rgb",
                                          "artifacts": ["onnx-fp32"]}
    params["models"]["kd-yuv"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                  "distill": {"teacher": "resnet-teacher", "type": "feature", "init":
                                              "mobilenetv2-yuv420", "layers": [{"student": "features.6",
                                                                                "teacher": "layer2"}]}}
    params["models"]["kd-yuv-pruned"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                         "prune": {"from": "kd-yuv", "ratio": 0.3},
                                         "artifacts": ["onnx-fp32", "onnx-int8-qat", "tflite-torch"]}
    params["artifacts"]["onnx-int8-qat"] = {"qat": {"epochs": 2, "lr": 0.01, "per_channel": False}}
    params["artifacts"]["tflite-torch"] = {"tflite": {"precision": "fp32", "converter": "litert_torch"}}
    params["benchmark"]["threads"] = [1, 2, 4]
    check_parity(workdir_with(tmp_path, params), params)


def test_several_training_seeds_agree(tmp_path):
    """seeds: [0, 1]: every model instance's stages, with the one models.<name> entry as DVC's param."""
    params = tiny_params(seeds=[0, 1])
    params["models"] = {name: params["models"][name] for name in ("mobilenetv2-rgb", "mobilenetv2-yuv420")}
    params["models"]["kd-yuv"] = {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420",
                                  "artifacts": ["onnx-fp32"], "distill": {"teacher": "mobilenetv2-rgb",
                                                                          "type": "output"}}
    workdir = workdir_with(tmp_path, params)
    check_parity(workdir, expand_seeds(params))
    names = {name for name, _ in dvc_stages(workdir).values()}
    assert {"train-kd-yuv-seed0", "train-kd-yuv-seed1", "evaluate-mobilenetv2-rgb-seed1-onnx-fp32"} <= names


def test_detection_track_agrees(tmp_path):
    params = tiny_params()
    params["detection"]["enabled"] = True
    jobs = check_parity(workdir_with(tmp_path, params), params, target="results/detection/summary.csv")
    assert {job["rule"] for job in jobs.values()} >= {"det_pack", "det_train", "det_export_onnx",
                                                      "det_export_tflite", "det_evaluate", "det_aggregate"}


def test_committed_dvc_yaml_is_generated_from_params():
    expected = dvc_yaml(load_params(REPO / "params.yaml"))
    assert (REPO / "dvc.yaml").read_text() == expected, "run: python -m workflow.dag"


def test_dvc_parses_the_generated_file():
    result = sh(REPO, sys.executable, "-m", "dvc", "dag", "--md")
    for stage in [CHECK_STAGE] + [s.name for s in stages(load_params(REPO / "params.yaml"))]:
        assert stage in result.stdout


def test_commands_hold_no_param_value():
    """A changed value reruns stages through their params, never through a stale command in dvc.yaml."""
    params = tiny_params()
    changed = tiny_params()
    changed["data"]["calib_subset"] = 16
    changed["artifacts"]["onnx-int8-qat"]["qat"]["steps"] = 7
    changed["artifacts"]["tflite-int8-full"]["tflite"]["io_type"] = "uint8"
    changed["benchmark"]["threads"] = [1, 2]
    assert dvc_yaml(changed) == dvc_yaml(params)


def test_planning_imports_no_plotting_or_table_library():
    code = ("import sys; from workflow.dag import plan; from workflow.config import load_params; "
            "plan(load_params('params.yaml')); "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'torch', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def workflow_imports():
    """{module: the workflow modules it imports anywhere (function-level imports included)}."""
    graph = {}
    for path in (REPO / "workflow").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("workflow.")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workflow"):
                packages = ("workflow", "workflow.detection")
                graph[name] |= ({f"{node.module}.{a.name}" for a in node.names} if node.module in packages
                                else {node.module})
    return graph


def test_workflow_modules_import_each_other_without_cycles():
    graph = workflow_imports()
    assert "workflow.inventory" in graph["workflow.config"]  # config checks devices against the inventory

    def visit(module, path):
        assert module not in path, " -> ".join(path + [module])
        for other in sorted(graph.get(module, ())):
            visit(other, path + [module])

    for module in graph:
        visit(module, [])
