"""The optional keys of a params.yaml `models` entry that link models: distillation and pruning.

    distill: {teacher: <model>, type: output|feature, ...}   trained by workflow.train with a teacher
    prune:   {from: <model>, ratio, iterations, ...}         made by workflow.prune from a trained model

and, for params.yaml's ``seeds``, the model instances the DAG trains: one per model and seed
(:func:`expand_seeds`).

Defaults live here (README "Knowledge distillation, pruning, QAT" lists them); the schema checks
types and names, :func:`check_links` checks what a schema cannot: that the named models exist,
fit together and form no cycle.
"""
from workflow.errors import UserError

DISTILL_DEFAULTS = {
    "output": {"alpha": 1.0, "temperature": 4.0},
    "feature": {"feature_weight": 1.0, "feature_loss": "l2"},
}
DISTILL_KEYS = {"output": {"alpha", "temperature"}, "feature": {"layers", "feature_weight", "feature_loss"}}
# Seed 003: 15 % of the channels per iteration, 2 iterations, fine-tuning after each.
PRUNE_DEFAULTS = {"ratio": 0.15, "iterations": 2, "sparsity_lambda": 1.0e-4, "sparse_epochs": 1,
                  "finetune_epochs": 1, "lr": 0.01}
FIXED_WIDTH = {"resnet18", "ai85nascifarnet"}  # architectures without a width multiplier
RGB_ONLY = {"ai85nascifarnet"}  # its stem has stride 1: the YUV 4:2:0 split (Y at stride 2) does not apply
QAT_DEFAULTS = {"epochs": 1, "steps": None, "lr": 0.001, "per_channel": True, "freeze_bn_after": None}


def instance_name(model, seed, seeds):
    """A model's name for one training seed: the model's own with one seed, ``<model>-seed<N>`` with several."""
    return model if len(seeds) == 1 else f"{model}-seed{seed}"


def expand_seeds(params):
    """params with ``models`` holding one entry per (model, training seed): each a copy of the model's entry
    with ``base`` (the params.yaml key) and ``seed``; the models it links to (teacher, init, prune source)
    are those of the same seed, and the pre-processing table uses the first seed's models. The entries as
    params.yaml declares them stay in ``declared_models`` (what DVC tracks as ``models.<name>``)."""
    seeds = params.get("seeds") or [params["seed"]]
    models = {}
    for model, spec in params["models"].items():
        for seed in seeds:
            entry = {**spec, "base": model, "seed": seed}
            if "distill" in spec:
                d = entry["distill"] = dict(spec["distill"])
                d["teacher"] = instance_name(d["teacher"], seed, seeds)
                if d.get("init", "scratch") != "scratch":
                    d["init"] = instance_name(d["init"], seed, seeds)
            if "prune" in spec:
                entry["prune"] = {**spec["prune"], "from": instance_name(spec["prune"]["from"], seed, seeds)}
            models[instance_name(model, seed, seeds)] = entry
    pipeline = params["benchmark"]["pipeline"]
    pipeline = {**pipeline, **{key: instance_name(pipeline[key], seeds[0], seeds)
                               for key in ("rgb_model", "yuv_model") if pipeline.get(key)}}
    return {**params, "models": models, "declared_models": params["models"],
            "benchmark": {**params["benchmark"], "pipeline": pipeline}}


def base_model(params, model):
    """The params.yaml key of a model instance (itself for params that were not expanded)."""
    return params["models"][model].get("base", model)


def model_seed(params, model):
    """The training seed of a model instance (params.yaml ``seed`` for params that were not expanded)."""
    return params["models"][model].get("seed", params["seed"])


def distill_settings(spec):
    """The model's distillation settings with defaults filled in, or None."""
    d = spec.get("distill")
    if d is None:
        return None
    return {"init": "scratch", **DISTILL_DEFAULTS[d["type"]], **d}


def prune_settings(spec):
    p = spec.get("prune")
    return None if p is None else {**PRUNE_DEFAULTS, **p}


def qat_settings(entry):
    return {**QAT_DEFAULTS, **entry["qat"]}


def total_epochs(params, name):
    """Epochs of training behind a model's weights, counting the models it starts from."""
    spec = params["models"][name]
    prune = prune_settings(spec)
    if prune:
        return total_epochs(params, prune["from"]) + prune["sparse_epochs"] + prune["iterations"] * prune["finetune_epochs"]
    epochs = spec.get("epochs", params["train"]["epochs"])
    init = (spec.get("distill") or {}).get("init", "scratch")
    return epochs + (total_epochs(params, init) if init != "scratch" else 0)


def upstream_models(spec):
    """Models whose checkpoints this model is made from: {role: model key}."""
    out = {}
    if "distill" in spec:
        out["teacher"] = spec["distill"]["teacher"]
        if spec["distill"].get("init", "scratch") != "scratch":
            out["init"] = spec["distill"]["init"]
    if "prune" in spec:
        out["from"] = spec["prune"]["from"]
    return out


def check_links(params, source):
    models = params["models"]
    for name, spec in models.items():
        if spec["arch"] in FIXED_WIDTH and spec["width_mult"] != 1.0:
            raise UserError(f"{source}: key 'models.{name}.width_mult': got {spec['width_mult']}, expected 1.0 "
                            f"({spec['arch']} has no width multiplier)")
        if spec["arch"] in RGB_ONLY and spec["input_format"] != "rgb":
            raise UserError(f"{source}: key 'models.{name}.input_format': got {spec['input_format']!r}, expected "
                            f"'rgb' ({spec['arch']} has no stride-2 stem to split into Y and UV branches)")
        if "distill" in spec and "prune" in spec:
            raise UserError(f"{source}: key 'models.{name}': distill and prune in one model (prune a distilled "
                            "model by naming it in prune.from)")
        if "distill" in spec:
            d, key = spec["distill"], f"models.{name}.distill"
            stray = sorted(set(d) & (DISTILL_KEYS["output"] | DISTILL_KEYS["feature"]) - DISTILL_KEYS[d["type"]])
            if stray:
                raise UserError(f"{source}: key '{key}.{stray[0]}': not used by type {d['type']} (allowed: "
                                f"{', '.join(sorted(DISTILL_KEYS[d['type']]))})")
            if d["type"] == "feature" and "layers" not in d:
                raise UserError(f"{source}: key '{key}': type feature needs layers (student/teacher layer pairs)")
        roles = {"teacher": "distill.teacher", "init": "distill.init", "from": "prune.from"}
        for role, other in upstream_models(spec).items():
            key = f"models.{name}.{roles[role]}"
            if other not in models or other == name:
                raise UserError(f"{source}: key '{key}': got {other!r}, expected another model of models "
                                f"({', '.join(m for m in models if m != name)})" + (" or scratch" if role == "init"
                                                                                     else ""))
            if role != "teacher":
                same = {k: models[other][k] for k in ("arch", "width_mult", "input_format")}
                if same != {k: spec[k] for k in same}:
                    raise UserError(f"{source}: key '{key}': {other!r} is {same}, but {name!r} has "
                                    f"{ {k: spec[k] for k in same} } (its checkpoint must fit)")
                if "prune" in models[other] and role == "init":
                    raise UserError(f"{source}: key '{key}': {other!r} is a pruned model; a student starts from "
                                    "an unpruned one")
    _check_acyclic(models, source)


def _check_acyclic(models, source):
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise UserError(f"{source}: key 'models': models made from each other in a cycle: "
                            f"{' -> '.join(path + [name])}")
        state[name] = "visiting"
        for other in upstream_models(models[name]).values():
            visit(other, path + [name])
        state[name] = "done"

    for name in models:
        visit(name, [])
