"""Model builders: torchvision backbones, small-input adaptation, and the YUV 4:2:0 stem.

Inputs are raw pixel values (0..255, float32); the per-channel normalisation is the
model's first layer, so a board feeds camera pixels unchanged (as the Hailo flow
of seed 000 does on the NPU).

Small inputs (<= 64 px, e.g. CIFAR's 32x32): torchvision's MobileNetV2 downsamples
by 32, which leaves a 1x1 map at 32x32. We keep the stride-2 stem (so the YUV
split applies exactly as in seed 000) and set the stride of the first block of the
24- and 32-channel stages (features[2] and features[4]) from 2 to 1: total stride 8,
a 4x4 final feature map at 32x32.

YUV 4:2:0 (seed 000 section 5): the stem conv (3x3, stride 2, C filters) + BN + act
is replaced by a Y branch (conv on the HxW Y plane, stride 2, C/2 filters) and a UV
branch (conv on the stacked H/2xW/2 U,V planes, stride 1, C/2 filters), each with
BN + the stem's activation, concatenated to C channels at H/2xW/2. Everything after
is the unchanged backbone. :func:`to_yuv420` works on any backbone whose first
layers are a Conv2d, a BatchNorm2d and an activation (MobileNet, EfficientNet,
ResNet, RegNet ...).

ResNet-18 for small inputs (a distillation teacher): the 7x7 stem becomes a 3x3
stride-2 conv (so the YUV split still applies), the max-pool goes, and layer2's
first block keeps stride 1: total stride 8, a 4x4 final map at 32x32 like MobileNetV2.

ai85nascifarnet (seed 002): Maxim's NAS CIFAR network for the MAX78000, from the seed's
layer list: ten conv + BN + ReLU blocks ("FusedConv2dBNReLU"), four of them with a 2x2
max-pool before the conv ("FusedMaxPoolConv2dBNReLU"), then a 2x2x128 -> classes linear layer.
The seed prints padding=1 for the last (1x1) conv; that would make its map 4x4, not the 2x2x128
the linear layer reads, and add 196,608 MACs: padding 0 (as in Maxim's ai8x-training model) gives
exactly the published 302,602 parameters and 36,180,992 MACs once BN is folded into the convs
(as the export does). Its input scaling is the MAX78000's, (pixel - 128) / 128, one scalar for all
channels, so the exported graph holds no per-channel constants beside the layers' weights.

Pruned models (workflow/prune.py) have narrower layers than their spec builds; their
checkpoint stores each layer's shape (:func:`layer_shapes`) and :func:`build_from_checkpoint`
rebuilds exactly that architecture before loading the weights.
"""
import torch
from torch import nn
import torchvision

from workflow.errors import UserError

# ImageNet statistics in 0..255 units; for Y/U/V the same statistics pass through the
# colour matrix, so both input formats start from identically normalised signals.
RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)
Y_MEAN, Y_STD = (118.0,), (57.5,)
UV_MEAN, UV_STD = (128.0, 128.0), (20.0, 20.0)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) * self.inv_std


class RGBModel(nn.Module):
    """Single input ``image`` (N, 3, H, W)."""

    input_names = ("image",)

    def __init__(self, backbone, mean=RGB_MEAN, std=RGB_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, image):
        return self.backbone(self.normalize(image))


class YUV420Stem(nn.Module):
    """Y branch (stride 2) + UV branch (stride 1), each conv + BN + activation, concatenated."""

    def __init__(self, out_channels, kernel_size, padding, activation):
        super().__init__()
        half = out_channels // 2

        def branch(in_ch, out_ch, stride):
            return nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(out_ch),
                activation(),
            )

        self.y_branch = branch(1, half, 2)
        self.uv_branch = branch(2, out_channels - half, 1)

    def forward(self, y, uv):
        return torch.cat([self.y_branch(y), self.uv_branch(uv)], dim=1)


class YUV420Model(nn.Module):
    """Two inputs: ``y`` (N, 1, H, W) and ``uv`` (N, 2, H/2, W/2)."""

    input_names = ("y", "uv")

    def __init__(self, stem, body):
        super().__init__()
        self.normalize_y = Normalize(Y_MEAN, Y_STD)
        self.normalize_uv = Normalize(UV_MEAN, UV_STD)
        self.stem = stem
        self.body = body

    def forward(self, y, uv):
        return self.body(self.stem(self.normalize_y(y), self.normalize_uv(uv)))


def _set_module(root, dotted_name, module):
    parent_name, _, child = dotted_name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def to_yuv420(backbone):
    """Replace the backbone's RGB stem (first Conv2d, BN, activation) by a YUV 4:2:0 stem."""
    named = [(n, m) for n, m in backbone.named_modules() if not list(m.children())]
    conv_index = next(i for i, (_, m) in enumerate(named) if isinstance(m, nn.Conv2d))
    conv_name, conv = named[conv_index]
    (bn_name, bn), (act_name, act) = named[conv_index + 1], named[conv_index + 2]
    if conv.in_channels != 3 or conv.stride != (2, 2) or not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"stem {conv_name} is not a 3-channel stride-2 conv followed by BatchNorm")
    stem = YUV420Stem(conv.out_channels, conv.kernel_size, conv.padding, type(act))
    for name in (conv_name, bn_name, act_name):
        _set_module(backbone, name, nn.Identity())
    return YUV420Model(stem, backbone)


def mobilenetv2(width_mult, num_classes, small_input):
    net = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    if small_input:
        for block in (net.features[2], net.features[4]):
            depthwise = block.conv[1][0]
            depthwise.stride = (1, 1)
    return net


def resnet18(width_mult, num_classes, small_input):
    if width_mult != 1.0:
        raise ValueError("resnet18 has no width multiplier (use width_mult: 1.0)")
    net = torchvision.models.resnet18(num_classes=num_classes)
    if small_input:
        net.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        net.maxpool = nn.Identity()
        block = net.layer2[0]
        block.conv1.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    return net


def conv_bn_relu(in_channels, out_channels, kernel_size, padding, max_pool=False):
    """Maxim's FusedConv2dBNReLU, or FusedMaxPoolConv2dBNReLU with ``max_pool`` (2x2, stride 2, before the conv).
    The conv has no bias of its own: BN's shift becomes the conv bias when BN is folded at export."""
    pool = [nn.MaxPool2d(2, 2)] if max_pool else []
    return nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class AI85NASCifarNet(nn.Module):
    """ai85nascifarnet for 32x32 inputs (seed 002's layer list; module docstring)."""

    # (in, out, kernel, padding, max-pool before the conv)
    LAYERS = [(3, 64, 3, 1, False), (64, 32, 1, 0, False), (32, 64, 3, 1, False),
              (64, 32, 3, 1, True), (32, 64, 1, 0, False),
              (64, 128, 3, 1, True), (128, 128, 1, 0, False),
              (128, 64, 3, 1, True), (64, 128, 3, 1, False),
              (128, 128, 1, 0, True)]

    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(*(conv_bn_relu(*layer) for layer in self.LAYERS))
        self.classifier = nn.Linear(2 * 2 * 128, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def ai85nascifarnet(width_mult, num_classes, small_input):
    if width_mult != 1.0:
        raise ValueError("ai85nascifarnet has no width multiplier (use width_mult: 1.0)")
    return AI85NASCifarNet(num_classes)


BACKBONES = {"mobilenetv2": mobilenetv2, "resnet18": resnet18, "ai85nascifarnet": ai85nascifarnet}
# Fixed input sizes of architectures that have them (height, width).
INPUT_SIZES = {"ai85nascifarnet": (32, 32)}
MAX78000_MEAN, MAX78000_STD = (128.0,), (128.0,)  # ai8x: pixel - 128 as a signed 8-bit value, / 128


def build_model(spec, num_classes, image_size):
    """spec: one entry of params.yaml ``models``."""
    backbone = BACKBONES[spec["arch"]](spec["width_mult"], num_classes, small_input=image_size <= 64)
    if spec["input_format"] == "yuv420":
        return to_yuv420(backbone)
    if spec["arch"] == "ai85nascifarnet":
        return RGBModel(backbone, MAX78000_MEAN, MAX78000_STD)
    return RGBModel(backbone)


def backbone_of(model):
    """The backbone inside an RGB or YUV wrapper: layer names below it are the same for both formats."""
    return model.backbone if isinstance(model, RGBModel) else model.body


# ----------------------------------------------------------------------------- pruned architectures
def layer_shapes(model):
    """Channel counts of every Conv2d, BatchNorm2d and Linear: what a pruned model needs to be rebuilt."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"in_features": m.in_features, "out_features": m.out_features}
    return shapes


def _resized(m, shape):
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(shape["in_channels"], shape["out_channels"], m.kernel_size, stride=m.stride,
                         padding=m.padding, dilation=m.dilation, groups=shape["groups"], bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape["num_features"], eps=m.eps, momentum=m.momentum)
    return nn.Linear(shape["in_features"], shape["out_features"], bias=m.bias is not None)


def apply_layer_shapes(model, shapes):
    """Give ``model``'s layers the channel counts in ``shapes`` (from :func:`layer_shapes`), fresh weights."""
    for name, shape in shapes.items():
        _set_module(model, name, _resized(model.get_submodule(name), shape))
    return model


def build_from_checkpoint(ckpt):
    """The architecture of a saved model.pt (pruned or not) with its weights loaded."""
    model = build_model(ckpt["spec"], len(ckpt["classes"]), ckpt["height"])
    if ckpt.get("layer_shapes"):
        apply_layer_shapes(model, ckpt["layer_shapes"])
    model.load_state_dict(ckpt["state_dict"])
    return model


def load_checkpoint(path, role="model"):
    """(model in eval mode, checkpoint dict) of a model.pt; a one-line error naming the file and its role."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        model = build_from_checkpoint(ckpt)
    except FileNotFoundError:
        raise UserError(f"{path}: {role} checkpoint not found (train that model first)") from None
    except Exception as err:  # noqa: BLE001 - unpickling or state-dict mismatch means a bad file
        raise UserError(f"{path}: corrupt or incompatible {role} checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120]})") from None
    return model.eval(), ckpt


def count_params(model):
    """Parameters of the network as deployed, the rule of workflow/onnx_stats.py: every parameter, except
    that a BatchNorm counts one per channel (the shift it leaves in the conv bias it folds into; its scale
    folds into the conv's weights). Buffers (BatchNorm statistics, the input normalisation) are not
    parameters. Equal to the count of the model's ONNX, int8 ONNX and TF Lite files."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    in_norms = {id(p) for m in norms for p in m.parameters(recurse=False)}
    return (sum(p.numel() for p in model.parameters() if id(p) not in in_norms)
            + sum(m.num_features for m in norms))


def example_inputs(input_format, height, width, batch=1):
    if input_format == "rgb":
        return (torch.zeros(batch, 3, height, width),)
    return torch.zeros(batch, 1, height, width), torch.zeros(batch, 2, height // 2, width // 2)
