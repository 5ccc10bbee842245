"""Knowledge distillation losses: output-based (softened logits) and feature imitation (hints).

Output-based KD (Hinton et al. 2015), in seed 001's form "student loss + distillation factor x
distillation loss":

    L = CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradient scale independent of T. alpha is the factor the seed sweeps
(0.5 ... 2).

Feature imitation (FitNets-style hints, as seed 001's FIKD imitates intermediate teacher maps):
for each (student layer, teacher layer) pair a 1x1 conv adapter maps the student's channels to
the teacher's, and

    L = CE(student, labels) + feature_weight * mean over pairs of L2 (MSE) or L1 (adapter(s), t)

When the two maps differ in size (e.g. a ResNet teacher), both are average-pooled to the smaller
one. Layer names are below the backbone (``features.7``, ``layer2``), so the same pair works for
an RGB and a YUV student. The adapters train with the student and are not part of the exported
model.
"""
import torch
from torch import nn
from torch.nn import functional as F

from workflow.errors import UserError
from workflow.models import backbone_of


def output_kd_loss(student_logits, teacher_logits, target, alpha, temperature, label_smoothing=0.0):
    ce = F.cross_entropy(student_logits, target, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return ce + alpha * temperature ** 2 * kl


def hint_loss(student_map, teacher_map, kind):
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        size = min(student_map.shape[-2:], teacher_map.shape[-2:])
        student_map, teacher_map = F.adaptive_avg_pool2d(student_map, size), F.adaptive_avg_pool2d(teacher_map, size)
    return F.mse_loss(student_map, teacher_map) if kind == "l2" else F.l1_loss(student_map, teacher_map)


class FeatureTap:
    """Keeps the output of named backbone layers from the last forward pass."""

    def __init__(self, model, names, key):
        backbone = backbone_of(model)
        self.outputs, self.handles = {}, []
        for name in names:
            try:
                layer = backbone.get_submodule(name)
            except AttributeError:
                raise UserError(f"params.yaml: key '{key}': no layer {name!r} in the backbone (its top-level "
                                f"layers: {', '.join(n for n, _ in backbone.named_children())})") from None
            self.handles.append(layer.register_forward_hook(self._keep(name)))

    def _keep(self, name):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def channels_of(model, names, example, key):
    """Output channels of the named layers, from one forward pass on ``example`` inputs."""
    tap = FeatureTap(model, names, key)
    with torch.no_grad():
        model.eval()(*example)
    tap.remove()
    return {name: tap.outputs[name].shape[1] for name in names}


class FeatureDistiller(nn.Module):
    """1x1 conv adapters (student channels -> teacher channels) and the hint loss over layer pairs."""

    def __init__(self, student, teacher, layers, example, kind, key="distill.layers"):
        super().__init__()
        self.pairs = [(p["student"], p["teacher"]) for p in layers]
        student_ch = channels_of(student, [s for s, _ in self.pairs], example["student"], key)
        teacher_ch = channels_of(teacher, [t for _, t in self.pairs], example["teacher"], key)
        self.adapters = nn.ModuleList(nn.Conv2d(student_ch[s], teacher_ch[t], 1, bias=False) for s, t in self.pairs)
        self.student_tap = FeatureTap(student, [s for s, _ in self.pairs], key)
        self.teacher_tap = FeatureTap(teacher, [t for _, t in self.pairs], key)
        self.kind = kind

    def loss(self):
        """The mean hint loss over the pairs, from the last student and teacher forward passes."""
        terms = [hint_loss(adapter(self.student_tap.outputs[s]), self.teacher_tap.outputs[t].detach(), self.kind)
                 for adapter, (s, t) in zip(self.adapters, self.pairs)]
        return torch.stack(terms).mean()
