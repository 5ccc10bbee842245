"""Knowledge distillation for ultralytics detectors: output-based (seed 001's OBKD) and feature imitation.

Feature imitation is ultralytics' own DistillationModel (``distill_model=<teacher.pt>``,
``dis=<factor>``): a 1x1-conv projector per neck level maps the student's Detect-head inputs to
the teacher's, and an L2 loss weighted by the teacher's class scores pulls them together
(fine-grained feature imitation, Wang et al. 2019, the FIKD of seed 001).

Output-based KD (Mehta & Ozturk 2018, the OBKD of seed 001's yolov5 fork) is
:class:`OutputDistillationModel`: the student's head outputs imitate the teacher's at every
anchor point -- class scores by binary cross-entropy against the teacher's sigmoid scores,
box side distributions (DFL bins) by KL divergence -- and each anchor point is weighted by the
teacher's confidence (its highest class score; the anchor-free head has no objectness, which
the original scales by). The total loss is the ground-truth loss + factor x this loss.
"""
import torch
import torch.nn.functional as F
from torch import nn

import workflow.detection.ultra  # noqa: F401 - offline settings before ultralytics
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.modules.head import Detect


def detect_head(model):
    return next(m for m in model.model if isinstance(m, Detect))


def output_kd_loss(student, teacher, reg_max):
    """Confidence-weighted imitation of the teacher's head outputs (dicts with "scores" and "boxes")."""
    teacher_prob = teacher["scores"].sigmoid()
    weight = teacher_prob.amax(1)  # (batch, anchors)
    cls = F.binary_cross_entropy_with_logits(student["scores"], teacher_prob, reduction="none").sum(1)
    b, _, a = student["boxes"].shape
    student_log = F.log_softmax(student["boxes"].view(b, 4, reg_max, a), 2)
    teacher_p = F.softmax(teacher["boxes"].view(b, 4, reg_max, a), 2)
    box = (teacher_p * (teacher_p.clamp_min(1e-9).log() - student_log)).sum(2).mean(1)
    return ((cls + box) * weight).sum() / weight.sum().clamp_min(1e-9)


class OutputDistillationModel(DistillationModel):
    """Student + frozen teacher; the distillation term compares Detect-head outputs, not features."""

    def __init__(self, teacher_model, student_model):
        super().__init__(teacher_model=teacher_model, student_model=student_model)
        self.projector = nn.ModuleList()  # no feature projection: only head outputs are distilled
        student_head, teacher_head = detect_head(self.student_model), detect_head(self.teacher_model)
        if (student_head.nc, student_head.reg_max, tuple(student_head.stride.tolist())) != \
                (teacher_head.nc, teacher_head.reg_max, tuple(teacher_head.stride.tolist())):
            raise ValueError(f"output KD needs the same classes, DFL bins and strides: student "
                             f"nc={student_head.nc} reg_max={student_head.reg_max} "
                             f"strides={student_head.stride.tolist()}, "
                             f"teacher nc={teacher_head.nc} reg_max={teacher_head.reg_max} "
                             f"strides={teacher_head.stride.tolist()}")
        self.reg_max = student_head.reg_max

    def loss(self, batch, preds=None):
        if not self.training:  # validation while training: the plain student loss (+ a zero KD term)
            return super().loss(batch, preds)
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            self.teacher_model(batch["img"])  # the hook on the Detect head keeps its outputs
        preds = self.student_model(batch["img"])
        regular_loss, loss_items = self.student_model.loss(batch, preds)
        head = len(self.feats_idx) - 1
        student = self.decouple_outputs(self._student_feats[head], branch="one2many")
        teacher = self.decouple_outputs(self._teacher_feats[head], branch="one2many")
        loss_distill = (output_kd_loss(student, teacher, self.reg_max) * self.dis).reshape(1)
        loss_items["dis_loss"] = loss_distill.detach()
        return torch.cat([regular_loss, loss_distill * batch["img"].shape[0]]), loss_items


class Trainer(DetectionTrainer):
    """ultralytics' DetectionTrainer; with ``kd_method = "output"`` the student is wrapped for output KD.

    With a teacher (``distill_model``) and ``kd_method = "feature"`` ultralytics' own trainer wraps
    the student in its feature-imitation DistillationModel; wrapping here first, before it does,
    selects the output-based loss. A resumed run comes back as a plain DistillationModel and is
    re-wrapped the same way.
    """

    kd_method = None
    # CPU threads of the training loop. ultralytics' select_device (in the trainer's constructor) sets
    # torch.set_num_threads(cpu_count - 1): 1 thread on a 2-core machine, whatever detection.train.num_threads says.
    num_threads = None

    def _setup_train(self):
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        super()._setup_train()

    def set_model_attributes(self):
        super().set_model_attributes()
        if not self.args.distill_model or self.kd_method != "output":
            return
        if isinstance(self.model, OutputDistillationModel):
            return
        student = self.model.student_model if isinstance(self.model, DistillationModel) else self.model
        self.model = OutputDistillationModel(teacher_model=self.args.distill_model, student_model=student)
