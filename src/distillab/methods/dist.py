"""DIST: Knowledge Distillation from a Stronger Teacher (Huang, You, Wang, Qian, Xu, NeurIPS 2022).

Matches *relations* rather than exact probabilities, with Pearson correlation
ρ(a, b) = cos(a − mean a, b − mean b) (eps 1e-8 in the cosine's denominator). With
Y = softmax(z / τ) as a B × C matrix for the student and the teacher:

    inter = 1 − (1/B)·Σ_b ρ(Y_s[b, :], Y_t[b, :])     (each example's prediction over the classes)
    intra = 1 − (1/C)·Σ_c ρ(Y_s[:, c], Y_t[:, c])     (each class's scores over the batch)
    L     = w_ce·CE(y, z_s) + w·τ²·(β·inter + γ·intra)

Follows the official code (hunto/image_classification_sota ``lib/models/losses/dist_kd.py`` with
``configs/strategies/distill/dist_cifar.yaml``): τ² multiplies both relation terms inside the
module, β = γ = 1 there, and the trainer weights the module by 2 (``kd_loss_weight``) and CE by 1 —
the paper's β = γ = 2. τ = 4 on CIFAR-100 (1 on ImageNet). The intra term depends on the batch.
An ensemble teacher contributes its averaged probabilities at τ.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.methods.base import Objective, Teacher, teacher_field
from distillab.methods.registry import register_method


class DISTConfig(Strict):
    name: Literal["dist"] = "dist"
    tau: float = Field(4.0, gt=0, description="temperature τ (4 on CIFAR-100, 1 on ImageNet)")
    beta: float = Field(1.0, ge=0, description="weight of the inter-class relation inside the DIST term")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class relation inside the DIST term")
    weight: float = Field(2.0, ge=0, description="weight of the DIST term (official kd_loss_weight)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the label cross-entropy")
    teacher: list[str] = teacher_field()


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: shape (N,)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(y_s: torch.Tensor, y_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra) = 1 − mean row-wise Pearson of (B, C) and of the transposed (C, B) matrices."""
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.t(), y_t.t()).mean()
    return inter, intra


def dist_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float,
              beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """τ²·(β·inter + γ·intra) between softmax(z_s / τ) and the teacher's probabilities at τ."""
    y_s = F.softmax(student_logits.float() / tau, 1)
    inter, intra = dist_relations(y_s, teacher_probs.float())
    return tau**2 * (beta * inter + gamma * intra)


@register_method(DISTConfig)
class DIST(Objective):
    """DIST: CE + 2·τ²·(inter-class + intra-class Pearson relation losses) to the teacher."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: DISTConfig) -> None:
        super().__init__(student, teacher)
        self.cfg = cfg

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y, c = batch.x, batch.y, self.cfg
        z_s = self.student(x)
        p_t = self.teacher.soft_targets(batch, c.tau)
        return {"ce": c.ce_weight * F.cross_entropy(z_s.float(), y),
                "dist": c.weight * dist_loss(z_s, p_t, c.tau, c.beta, c.gamma)}
