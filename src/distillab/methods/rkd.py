"""RKD — Relational Knowledge Distillation (Park, Kim, Lu, Cho, CVPR 2019).

The student matches *relations* among the examples of a batch rather than their outputs, on the
penultimate (pooled) features t_i (teacher) and s_i (student), with the Huber loss l_δ (δ = 1):

    distance-wise:  ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ,   μ = mean of the positive pairwise distances
                    L_D = mean_{i,j} l_δ( ψ_D(t_i, t_j), ψ_D(s_i, s_j) )
    angle-wise:     e_ij = (t_j − t_i) / ‖t_j − t_i‖₂,   ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_ik⟩
                    L_A = mean_{i,j,k} l_δ( ψ_A(t_i, t_j, t_k), ψ_A(s_i, s_j, s_k) )
    L = CE(y, z_s) + λ_D · L_D + λ_A · L_A,     λ_D = 25, λ_A = 50

Follows RepDistiller ``distiller_zoo/RKD.py`` / mdistiller: distances are
sqrt(clamp(‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, 1e-12)) with a zero diagonal; μ is computed separately
for each network, for the student *with* gradient; all B² distances and B³ angles (degenerate
ones, with j = i or k = i, are 0 on both sides) enter the means. The teacher side has no grad.
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


class RKDConfig(Strict):
    name: Literal["rkd"] = "rkd"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    distance_weight: float = Field(25.0, ge=0, description="λ_D, weight of the distance-wise loss")
    angle_weight: float = Field(50.0, ge=0, description="λ_A, weight of the angle-wise loss (O(B²·D) memory)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, B) Euclidean distances, via the Gram matrix clamped at ``eps`` (so sqrt has a finite
    gradient), with the diagonal set to exactly 0."""
    x = x.float().flatten(1)
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(x), device=x.device, dtype=d.dtype))


def _over_mean_positive(d: torch.Tensor) -> torch.Tensor:
    """d / μ with μ the mean of its positive entries (none, for a batch of one: d unchanged)."""
    pos = d[d > 0]
    return d / pos.mean() if pos.numel() else d


@fp32
def rkd_distance_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Huber loss between the two networks' distance matrices, each divided by its mean positive entry."""
    with torch.no_grad():
        d_t = _over_mean_positive(pairwise_distances(f_t))
    return F.smooth_l1_loss(_over_mean_positive(pairwise_distances(f_s)), d_t)


def triplet_angles(x: torch.Tensor) -> torch.Tensor:
    """(B, B, B) cosines ⟨e_ij, e_ik⟩ of the unit difference vectors e_ij = normalize(x_j − x_i)."""
    x = x.float().flatten(1)
    e = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # e[i, j] = unit(x_j − x_i)
    return e @ e.transpose(1, 2)


@fp32
def rkd_angle_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Huber loss between the two networks' triplet-angle cosines."""
    with torch.no_grad():
        a_t = triplet_angles(f_t)
    return F.smooth_l1_loss(triplet_angles(f_s), a_t)


@register_method(RKDConfig)
class RKD(Objective):
    """Relational KD: CE + λ_D·(distance-wise) + λ_A·(angle-wise) Huber losses on pooled features."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: RKDConfig) -> None:
        super().__init__(student, teacher)
        self.s_idx, self.t_idx = (
            penultimate_index(student),
            penultimate_index(teacher.single("rkd", "its penultimate features are matched")),
        )
        self.distance_weight, self.angle_weight, self.ce_weight = cfg.distance_weight, cfg.angle_weight, cfg.ce_weight

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        z_s, (f_s,), _, (f_t,) = student_teacher_features(self.student, self.teacher.single(), batch.x,
                                                          [self.s_idx], [self.t_idx])
        e_s, e_t = pooled(f_s), pooled(f_t)
        out = {"ce": self.ce_weight * F.cross_entropy(z_s.float(), batch.y),
               "distance": self.distance_weight * rkd_distance_loss(e_s, e_t)}
        if self.angle_weight > 0:  # skip the B³ tensor when the term is off
            out["angle"] = self.angle_weight * rkd_angle_loss(e_s, e_t)
        return out
