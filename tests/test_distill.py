"""Knowledge distillation: the losses by hand, feature adapters for RGB and YUV students, the
teacher architectures, params validation, and one distilled training run on real CIFAR-10 images."""
import json
import math

import pytest
import torch

from conftest import tiny_params, write_params
from workflow import train as train_stage
from workflow.config import validate
from workflow.distill import FeatureDistiller, hint_loss, output_kd_loss
from workflow.errors import UserError
from workflow.models import build_model, example_inputs

STUDENT = {"arch": "mobilenetv2", "width_mult": 0.5}
TEACHER = {"arch": "mobilenetv2", "width_mult": 1.0, "input_format": "rgb"}
LAYERS = [{"student": "features.6", "teacher": "features.6"}, {"student": "features.13", "teacher": "features.13"}]


def test_output_kd_loss_by_hand():
    student, teacher, target = [1.0, 2.0, 0.5], [0.2, 3.0, 1.0], 1
    alpha, t = 0.5, 2.0
    softmax = lambda z: [math.exp(v) / sum(math.exp(w) for w in z) for v in z]
    ce = -math.log(softmax(student)[target])
    p_s, p_t = softmax([v / t for v in student]), softmax([v / t for v in teacher])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = ce + alpha * t * t * kl
    loss = output_kd_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([target]), alpha, t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    ce_only = output_kd_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([target]), 0.0, t)
    assert ce_only.item() == pytest.approx(ce, rel=1e-6)


def test_hint_losses_by_hand():
    s, t = torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[2.0, 1.0]]]])  # differences 1 and 2
    assert hint_loss(s, t, "l2").item() == pytest.approx((1 + 4) / 2)
    assert hint_loss(s, t, "l1").item() == pytest.approx((1 + 2) / 2)
    big = torch.ones(1, 1, 4, 4)  # different spatial sizes are pooled to the smaller one
    assert hint_loss(big, torch.zeros(1, 1, 2, 2), "l1").item() == pytest.approx(1.0)


@pytest.mark.parametrize("input_format", ["rgb", "yuv420"])
def test_feature_adapters_map_student_to_teacher_channels(input_format):
    torch.manual_seed(0)
    student = build_model({**STUDENT, "input_format": input_format}, 10, 32).train()
    teacher = build_model(TEACHER, 10, 32).eval()
    example = {"student": example_inputs(input_format, 32, 32, 2), "teacher": example_inputs("rgb", 32, 32, 2)}
    distiller = FeatureDistiller(student, teacher, LAYERS, example, "l2")
    shapes = [(a.in_channels, a.out_channels, a.kernel_size) for a in distiller.adapters]
    assert shapes == [(16, 32, (1, 1)), (48, 96, (1, 1))]  # width 0.5 student -> width 1.0 teacher
    s_in = [torch.rand_like(x) * 255 for x in example["student"]]
    with torch.no_grad():
        teacher(*[torch.rand_like(x) * 255 for x in example["teacher"]])
    student(*s_in)
    loss = distiller.loss()
    loss.backward()
    assert loss.ndim == 0 and loss.item() > 0
    assert all(a.weight.grad is not None for a in distiller.adapters)
    assert student.stem.y_branch[0].weight.grad is not None if input_format == "yuv420" else True


@pytest.mark.parametrize("input_format", ["rgb", "yuv420"])
def test_resnet18_teacher_for_small_inputs(input_format):
    model = build_model({"arch": "resnet18", "width_mult": 1.0, "input_format": input_format}, 10, 32).eval()
    with torch.no_grad():
        assert model(*example_inputs(input_format, 32, 32, 2)).shape == (2, 10)
    backbone = model.backbone if input_format == "rgb" else model.body
    x = torch.zeros(1, 64, 16, 16)  # after the stride-2 stem
    assert backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x)))).shape[-2:] == (4, 4)


def kd_params(**distill):
    params = tiny_params()
    params["models"]["kd"] = {**STUDENT, "input_format": "yuv420",
                              "distill": {"teacher": "mobilenetv2-rgb", "type": "output", **distill}}
    return params


@pytest.mark.parametrize("change, fragments", [
    ({"type": "attention"}, ["models.kd.distill.type", '"output", "feature"']),
    ({"teacher": "nope"}, ["models.kd.distill.teacher", "'nope'", "mobilenetv2-rgb"]),
    ({"teacher": "kd"}, ["models.kd.distill.teacher", "another model"]),
    ({"feature_loss": "l2"}, ["models.kd.distill.feature_loss", "not used by type output"]),
    ({"type": "feature"}, ["models.kd.distill", "needs layers"]),
    ({"init": "mobilenetv2-rgb"}, ["models.kd.distill.init", "its checkpoint must fit"]),
])
def test_bad_distill_settings_are_named(change, fragments):
    with pytest.raises(UserError) as err:
        validate(kd_params(**change))
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_bad_teacher_arch_and_cycles_are_named():
    params = kd_params()
    params["models"]["mobilenetv2-rgb"]["arch"] = "vgg16"
    with pytest.raises(UserError, match='models.mobilenetv2-rgb.arch.*"mobilenetv2", "resnet18"'):
        validate(params)
    params = kd_params()
    params["models"]["mobilenetv2-rgb"]["distill"] = {"teacher": "kd", "type": "output"}
    with pytest.raises(UserError, match="cycle: mobilenetv2-rgb -> kd -> mobilenetv2-rgb"):
        validate(params)


def test_feature_distillation_trains_a_yuv_student_from_an_rgb_teacher(tmp_path, packed_dir, trained):
    params = tiny_params()
    params["models"]["kd"] = {**STUDENT, "input_format": "yuv420", "lr": 0.005,
                              "distill": {"teacher": "mobilenetv2-rgb", "type": "feature", "layers": LAYERS[:1],
                                          "feature_weight": 2.0, "init": "mobilenetv2-yuv420"}}
    path = write_params(tmp_path / "params.yaml", params)
    teacher = trained["mobilenetv2-rgb"] / "model.pt"
    args = ["--params", str(path), "--model", "kd", "--data", str(packed_dir), "--out", str(tmp_path / "kd"),
            "--checkpoints", str(tmp_path / "ckpt"), "--teacher", str(teacher)]
    with pytest.raises(SystemExit):  # init named in params.yaml but not given
        train_stage.main(args)
    train_stage.main(args + ["--init", str(trained["mobilenetv2-yuv420"] / "model.pt")])
    metrics = json.loads((tmp_path / "kd" / "train_metrics.json").read_text())
    assert (metrics["teacher"], metrics["kd_type"], metrics["kd_alpha"]) == ("mobilenetv2-rgb", "feature", 2.0)
    assert metrics["epochs"] == 1 and metrics["total_epochs"] == 2 and metrics["lr"] == 0.005
    assert 0.0 <= metrics["top1"] <= 1.0
    state = torch.load(tmp_path / "kd" / "model.pt", weights_only=False)["state_dict"]
    assert not any("adapter" in k for k in state)  # the adapters are not part of the exported student


def test_unknown_hint_layer_is_named():
    student = build_model({**STUDENT, "input_format": "rgb"}, 10, 32)
    teacher = build_model({"arch": "resnet18", "width_mult": 1.0, "input_format": "rgb"}, 10, 32)
    example = {"student": example_inputs("rgb", 32, 32, 2), "teacher": example_inputs("rgb", 32, 32, 2)}
    with pytest.raises(UserError, match=r"models.kd.distill.layers.*'features.6'.*layer1, layer2"):
        FeatureDistiller(student, teacher, [{"student": "features.6", "teacher": "features.6"}], example, "l2",
                         "models.kd.distill.layers")
