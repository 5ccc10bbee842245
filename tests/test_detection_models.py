"""Model yamls of the seed variants: depth codes (seed 004), leaky-ReLU slope (seed 003), scales; output KD loss."""
import functools

import pytest
import torch

from workflow.detection.modelcfg import backbone_convs, model_yaml
from workflow.errors import UserError


def build(cfg):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(cfg, verbose=False).eval()


@functools.lru_cache
def base_yolov3_tiny():
    return build(model_yaml({"yaml": "yolov3-tiny.yaml"}, 80))


@pytest.mark.parametrize("code", ["10101", "00003", "21000"])
def test_depth_code_duplicates_backbone_convs(code):
    base = model_yaml({"yaml": "yolov3-tiny.yaml"}, 80)
    cfg = model_yaml({"yaml": "yolov3-tiny.yaml", "depth_code": code}, 80)
    extra = sum(int(d) for d in code)
    assert len(cfg["backbone"]) == len(base["backbone"]) + extra
    filters = [layer[3][0] for layer in (cfg["backbone"][i] for i in backbone_convs(cfg))]
    expected = []
    for digit, f in zip(code, (16, 32, 64, 128, 256)):
        expected += [f] * (1 + int(digit))
    assert filters[:len(expected)] == expected
    model = build(cfg)
    base_model = base_yolov3_tiny()
    extra_params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in base_model.parameters())
    conv_params = {16: 16 * 16 * 9 + 32, 32: 32 * 32 * 9 + 64, 64: 64 * 64 * 9 + 128, 128: 128 * 128 * 9 + 256,
                   256: 256 * 256 * 9 + 512}  # 3x3 conv without bias + BN (weight, bias)
    assert extra_params == sum(int(d) * conv_params[f] for d, f in zip(code, (16, 32, 64, 128, 256)))
    y = model(torch.zeros(1, 3, 128, 128))[0]
    assert y.shape == base_model(torch.zeros(1, 3, 128, 128))[0].shape  # same heads: references renumbered


def test_leaky_slope_reaches_every_conv():
    model = build(model_yaml({"yaml": "yolov4-tiny.yaml", "leaky_slope": 0.125}, 80))
    slopes = {m.act.negative_slope for m in model.modules() if hasattr(m, "act") and hasattr(m.act, "negative_slope")}
    assert slopes == {0.125}
    assert build(model_yaml({"yaml": "yolov4-tiny.yaml"}, 80)).model[0].act.negative_slope == 0.1


def test_scale_letter_sets_width_and_nc():
    n, s = model_yaml({"yaml": "yolov5n.yaml"}, 3), model_yaml({"yaml": "yolov5s.yaml"}, 3)
    assert (n["width_multiple"], s["width_multiple"]) == (0.25, 0.5) and n["nc"] == 3 and "scales" not in n


@pytest.mark.parametrize("spec, fragment", [
    ({"yaml": "yolov3-tiny.yaml", "depth_code": "1010"}, "expected five digits"),
    ({"yaml": "nosuch.yaml"}, "not found"),
    ({"yaml": "yolov4-tiny.yaml", "depth_code": "00011"}, "only 3 backbone Conv modules"),
])
def test_bad_variant_is_a_user_error(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        model_yaml(spec, 80)


def test_output_kd_loss_is_zero_gradient_at_the_teacher_and_weights_confident_anchors():
    from workflow.detection.kd import output_kd_loss

    torch.manual_seed(0)
    teacher = {"scores": torch.randn(2, 5, 30), "boxes": torch.randn(2, 4 * 16, 30)}
    student = {k: v.clone().requires_grad_(True) for k, v in teacher.items()}
    output_kd_loss(student, teacher, 16).backward()
    assert student["scores"].grad.abs().max() < 1e-6 and student["boxes"].grad.abs().max() < 1e-6
    far = {k: (v + torch.randn_like(v)).requires_grad_(True) for k, v in teacher.items()}
    assert output_kd_loss(far, teacher, 16) > output_kd_loss(student, teacher, 16)
