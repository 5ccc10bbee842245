import torch
import torchvision
from torch import nn

from workflow.models import YUV420Model, YUV420Stem, build_model, count_params, example_inputs, to_yuv420

SPEC = {"arch": "mobilenetv2", "width_mult": 0.5}


def test_cifar_adaptation_keeps_stride2_stem_and_gives_4x4_map():
    model = build_model({**SPEC, "input_format": "rgb"}, 10, 32).eval()
    stem = model.backbone.features[0][0]
    assert stem.stride == (2, 2)
    features = model.backbone.features(torch.zeros(1, 3, 32, 32))
    assert features.shape[-2:] == (4, 4)
    assert model(*example_inputs("rgb", 32, 32, 2)).shape == (2, 10)


def test_yuv_stem_matches_seed_000():
    model = build_model({**SPEC, "width_mult": 1.0, "input_format": "yuv420"}, 1000, 224).eval()
    stem = model.stem
    assert isinstance(stem, YUV420Stem)
    y_conv, uv_conv = stem.y_branch[0], stem.uv_branch[0]
    assert (y_conv.in_channels, y_conv.out_channels, y_conv.stride) == (1, 16, (2, 2))
    assert (uv_conv.in_channels, uv_conv.out_channels, uv_conv.stride) == (2, 16, (1, 1))
    assert isinstance(stem.y_branch[1], nn.BatchNorm2d) and isinstance(stem.y_branch[2], nn.ReLU6)
    y, uv = example_inputs("yuv420", 224, 224)
    assert stem(y, uv).shape == (1, 32, 112, 112)
    # Seed 000's Hailo profiler reports 3.49 M parameters for the YUV model (BatchNorm folded, as we count).
    assert abs(count_params(model) - 3.49e6) / 3.49e6 < 0.005
    rgb = build_model({**SPEC, "width_mult": 1.0, "input_format": "rgb"}, 1000, 224)
    def body(m):
        return [(n.split(".", 1)[1], p.shape) for n, p in m.named_parameters()
                if "features.0." not in n and not n.startswith("stem.")]

    assert body(model) == body(rgb)  # everything after the stem is identical


def test_yuv_transform_applies_to_other_backbones():
    model = to_yuv420(torchvision.models.resnet18(num_classes=7)).eval()
    assert isinstance(model, YUV420Model)
    assert model.stem.y_branch[0].out_channels + model.stem.uv_branch[0].out_channels == 64
    assert model(*example_inputs("yuv420", 64, 64)).shape == (1, 7)
    effnet = to_yuv420(torchvision.models.efficientnet_b0(num_classes=3)).eval()
    assert effnet(*example_inputs("yuv420", 64, 64)).shape == (1, 3)
