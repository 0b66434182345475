"""PKT — Probabilistic Knowledge Transfer (Passalis & Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018).

The student matches the teacher's *conditional probability distribution* of neighbours in the
batch, estimated with a cosine-similarity kernel on the penultimate (pooled) features x_i:

    x̂_i = x_i / (‖x_i‖₂ + ε),     K_ij = (x̂_i·x̂_j + 1) / 2 ∈ [0, 1],     P_ij = K_ij / Σ_k K_ik
    L = CE(y, z_s) + λ · (1/B²) Σ_ij P^t_ij · log( (P^t_ij + ε) / (P^s_ij + ε) ),     ε = 1e-7, λ = 30000

i.e. KL(P^t ‖ P^s) per row, summed and divided by B² (the mean over all B×B entries). This is the
authors' code (``passalis/probabilistic_kt``, copied as RepDistiller ``distiller_zoo/PKT.py`` and in
mdistiller): the diagonal stays in and NaNs left by the normalisation are set to 0. The kernel is
computed in each network's own space, so student and teacher dimensions may differ.
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
from distillab.methods.features import layers_field, fp32, penultimate_index, pooled, student_teacher_features
from distillab.methods.registry import register_method


class PKTConfig(Strict):
    name: Literal["pkt"] = "pkt"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    weight: float = Field(30000.0, ge=0, description="λ, weight of the PKT (KL) term")
    eps: float = Field(1e-7, gt=0, description="ε of the normalisation and of the log ratio")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")


def cosine_probabilities(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(B, B) row-stochastic matrix P_ij ∝ (cos(x_i, x_j) + 1) / 2."""
    x = x.float().flatten(1)
    x = torch.nan_to_num(x / (x.norm(dim=1, keepdim=True) + eps), nan=0.0)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


@fp32
def pkt_loss(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean over the B×B entries of P^t·log((P^t + ε) / (P^s + ε))."""
    p_s, p_t = cosine_probabilities(f_s, eps), cosine_probabilities(f_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@register_method(PKTConfig)
class PKT(Objective):
    """Probabilistic knowledge transfer: CE + λ·KL between cosine-kernel neighbour distributions."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: PKTConfig) -> None:
        super().__init__(student, teacher)
        self.s_idx, self.t_idx = (
            penultimate_index(student),
            penultimate_index(teacher.single("pkt", "its penultimate features are matched")),
        )
        self.weight, self.eps, self.ce_weight = cfg.weight, cfg.eps, cfg.ce_weight

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        z_s, (f_s,), _, (f_t,) = student_teacher_features(self.student, self.teacher.single(), batch.x,
                                                          [self.s_idx], [self.t_idx])
        return {"ce": self.ce_weight * F.cross_entropy(z_s.float(), batch.y),
                "pkt": self.weight * pkt_loss(pooled(f_s), pooled(f_t), self.eps)}
