"""AT — Attention Transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

The attention map of a block output A ∈ R^{B×C×H×W} is the channel statistic of its activations,
flattened and L2-normalised per example:

    a(A) = vec( (1/C) Σ_c A_c^p ) ∈ R^{H·W},     q(A) = a(A) / max(‖a(A)‖₂, 1e-12),     p = 2

and the student matches the teacher's maps at each (student block, teacher block) pair:

    L = CE(y, z_s) + β · Σ_pairs mean_{b, j} ( q(S)_{b,j} − q(T)_{b,j} )²,     β = 1000

This follows the official code of RepDistiller (``distiller_zoo/AT.py``) and mdistiller, not the
paper's (β/2)·‖q_s − q_t‖₂: the code squares the difference and averages it over batch and
positions, and raises A to the power p (``A.pow(p)``) rather than |A|^p — the same for p = 2.
Channel mean vs. sum is irrelevant after the normalisation. When the two maps differ in spatial
size, the larger *feature map* is adaptive-average-pooled to the smaller size first (as there).
Pairs: the stage outputs (``auto_pairs``: the last block of each spatial size, i.e. f1..f3 of the
CIFAR ResNets); only 4-D (convolutional) block outputs can be paired.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods.base import Objective, Teacher, teacher_field
from distillab.methods.features import (
    layers_field,
    fp32,
    auto_pairs,
    block_shapes,
    check_pairs,
    student_teacher_features,
)
from distillab.methods.registry import Context, register_method


class ATConfig(Strict):
    name: Literal["at"] = "at"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    pairs: list[tuple[int, int]] | None = Field(
        None, min_length=1, description="[student_block, teacher_block] pairs; None = stage outputs (auto_pairs)")
    p: float = Field(2.0, gt=0, description="exponent of the activations in the attention map")
    weight: float = Field(1000.0, ge=0, description="β, weight of the summed attention losses")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(B, H·W): channel mean of A^p, flattened and L2-normalised per example."""
    return F.normalize(feature.float().pow(p).mean(1).flatten(1), dim=1)


@fp32
def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean over batch and positions of (q_s − q_t)²; the larger map is pooled to the smaller size."""
    size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
    if f_s.shape[2:] != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if f_t.shape[2:] != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


@register_method(ATConfig)
class AT(Objective):
    """Attention transfer: CE + β·Σ mean-squared difference of L2-normalised attention maps."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: ATConfig, in_shape: tuple[int, ...]) -> None:
        super().__init__(student, teacher)
        t_net = teacher.single("at", "its block outputs are matched")
        if cfg.pairs is None:
            pairs = auto_pairs(student, t_net, in_shape)
        else:
            pairs = check_pairs(cfg.pairs, student, t_net)
        s_shapes, t_shapes = block_shapes(student, in_shape), block_shapes(t_net, in_shape)
        flat = [[s, t] for s, t in pairs if len(s_shapes[s]) != 3 or len(t_shapes[t]) != 3]
        if flat and cfg.pairs is not None:
            raise UserError(f"at: block pairs {flat} are not convolutional (C, H, W) outputs; attention needs maps")
        pairs = [pt for pt in pairs if list(pt) not in flat]  # auto: flat (MLP-style) outputs have no map
        if not pairs:
            raise UserError("at: student and teacher share no convolutional (C, H, W) block outputs to pair")
        self.pairs = pairs
        self.p, self.weight, self.ce_weight = cfg.p, cfg.weight, cfg.ce_weight

    @classmethod
    def from_config(cls, cfg: ATConfig, student: nn.Module, ctx: Context) -> "AT":
        return cls(student, ctx.teacher(cfg), cfg, ctx.in_shape)

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        s_idx, t_idx = [s for s, _ in self.pairs], [t for _, t in self.pairs]
        z_s, f_s, _, f_t = student_teacher_features(self.student, self.teacher.single(), batch.x, s_idx, t_idx)
        at = sum(at_loss(a, b, self.p) for a, b in zip(f_s, f_t, strict=True))
        return {"ce": self.ce_weight * F.cross_entropy(z_s.float(), batch.y), "at": self.weight * at}
