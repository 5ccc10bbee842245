"""params.yaml `seeds`: every model (and what is made from it) once per training seed, one model entry
in params.yaml; the summary reports each seed's rows and the mean ± std over seeds, and so do the paper
tables."""
import json
import sys

import pandas as pd
import pytest

from conftest import copy_project, sh, tiny_params, write_params
from workflow.dag import param_value, stages
from workflow.model_specs import expand_seeds

MODELS = {
    "mobilenetv2-rgb": {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb"},
    "mobilenetv2-yuv420": {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420"},
    "kd-yuv": {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "yuv420", "artifacts": ["onnx-fp32"],
               "distill": {"teacher": "mobilenetv2-rgb", "type": "output"}},
    "pruned": {"arch": "mobilenetv2", "width_mult": 0.5, "input_format": "rgb", "artifacts": ["onnx-fp32"],
               "prune": {"from": "mobilenetv2-rgb"}},
}


def seeded(seeds, models=MODELS, **sections):
    """tiny params.yaml with exactly ``models`` and ``seeds``, expanded as load_params does."""
    params = tiny_params(seeds=seeds, **sections)
    params["models"] = models
    return params


def by_name(params):
    return {s.name: s for s in stages(params)}


def test_one_seed_keeps_the_model_names():
    params = expand_seeds(seeded([3]))
    assert list(params["models"]) == list(MODELS)
    train = by_name(params)["train-mobilenetv2-rgb"]
    assert "--seed 3" in train.cmd and "models.mobilenetv2-rgb" in train.params


def test_every_model_and_its_links_once_per_seed():
    params = expand_seeds(seeded([0, 1, 2]))
    assert list(params["models"])[:3] == [f"mobilenetv2-rgb-seed{s}" for s in (0, 1, 2)]
    named = by_name(params)
    for seed in (0, 1, 2):
        kd = named[f"train-kd-yuv-seed{seed}"]
        # the student of seed s learns from the teacher of seed s, and the pruned model is cut from it too
        assert f"--teacher results/models/mobilenetv2-rgb-seed{seed}/model.pt" in kd.cmd and f"--seed {seed}" in kd.cmd
        prune = named[f"prune-pruned-seed{seed}"]
        assert f"--source results/models/mobilenetv2-rgb-seed{seed}/model.pt" in prune.cmd
        # DVC tracks the model's one params.yaml entry; the seed is in the command
        assert "models.kd-yuv" in kd.params and param_value(params, "models.kd-yuv") == MODELS["kd-yuv"]
        assert f"evaluate-mobilenetv2-yuv420-seed{seed}-onnx-fp32" in named
    pipeline = [s for s in named.values() if s.rule.name == "pipeline_bench"]
    assert all("mobilenetv2-rgb-seed0/onnx-fp32.onnx" in s.cmd for s in pipeline)


def test_adding_a_seed_leaves_the_other_seeds_stages_as_they_were():
    two = by_name(expand_seeds(seeded([0, 1])))
    three = by_name(expand_seeds(seeded([0, 1, 2])))
    for name, stage in two.items():
        if name in three and "seed" in name:
            assert (three[name].cmd, three[name].deps, three[name].params) == (stage.cmd, stage.deps, stage.params)
    assert set(three) - set(two) >= {"train-mobilenetv2-rgb-seed2", "prune-pruned-seed2"}


@pytest.mark.slow
def test_two_seeds_give_per_seed_rows_and_their_mean_and_std(tmp_path_factory):
    params = seeded([0, 1], {k: MODELS[k] for k in ("mobilenetv2-rgb", "mobilenetv2-yuv420")}, targets=["onnx"])
    params["artifacts"] = {"onnx-fp32": {}}
    params["data"].update(train_subset=256, test_subset=128)
    params["benchmark"]["pipeline"]["enabled"] = False
    project = copy_project(tmp_path_factory.mktemp("seeds"))
    write_params(project / "params.yaml", params)
    sh(project, sys.executable, "-m", "workflow.dag")
    sh(project, sys.executable, "-m", "snakemake", "--cores", "2", "results/summary.csv",
       "results/papers/yuv420_mobilenetv2/table.md")
    metrics = {s: json.loads((project / f"results/models/mobilenetv2-rgb-seed{s}/train_metrics.json").read_text())
               for s in (0, 1)}
    assert [metrics[s]["seed"] for s in (0, 1)] == [0, 1]
    assert metrics[0]["model_sha256"] != metrics[1]["model_sha256"]  # two trainings, not one twice
    summary = pd.read_csv(project / "results/summary.csv")
    rows = summary[(summary["model"] == "mobilenetv2-rgb") & (summary["artifact"] == "onnx-fp32")]
    assert sorted(rows["seed"]) == [0, 1]
    assert "Mean ± std over seeds" in (project / "results/summary.md").read_text()
    verdicts = json.loads((project / "results/papers/yuv420_mobilenetv2/verdicts.json").read_text())
    assert verdicts["rows"], verdicts
    table = (project / "results/papers/yuv420_mobilenetv2/table.md").read_text()
    assert "(seeds 0: " in table and "; 1: " in table, table
