"""SP — Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019).

Inputs that produce similar activations in the teacher should produce similar activations in the
student. With Q ∈ R^{B×(C·H·W)} a block output flattened per example, the batch Gram matrix is
row-normalised,

    G = Q Qᵀ ∈ R^{B×B},     G̃_[i,:] = G_[i,:] / ‖G_[i,:]‖₂

and the loss compares the two networks' matrices (whose sizes do not depend on C, H, W):

    L = CE(y, z_s) + γ · Σ_pairs (1/B²) ‖G̃_t − G̃_s‖_F²,     γ = 3000

Official code (RepDistiller ``distiller_zoo/SP.py``, verified by the SP author; mdistiller): one pair,
the last stage map before pooling — here the last block of each network (the default ``pairs``).
The paper's sum over several layer pairs is available through ``pairs``.
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
from distillab.methods.features import layers_field, fp32, check_pairs, penultimate_index, student_teacher_features
from distillab.methods.registry import register_method


class SPConfig(Strict):
    name: Literal["sp"] = "sp"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    pairs: list[tuple[int, int]] | None = Field(
        None, min_length=1, description="[student_block, teacher_block] pairs; None = the last block of each network")
    weight: float = Field(3000.0, ge=0, description="γ, weight of the similarity-preserving term")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")


def similarity_matrix(feature: torch.Tensor) -> torch.Tensor:
    """(B, B) Gram matrix of the flattened features, each row L2-normalised."""
    q = feature.float().flatten(1)
    return F.normalize(q @ q.t(), dim=1)


@fp32
def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """‖G̃_t − G̃_s‖_F² / B²."""
    b = f_s.shape[0]
    return (similarity_matrix(f_t) - similarity_matrix(f_s)).pow(2).sum() / (b * b)


@register_method(SPConfig)
class SP(Objective):
    """Similarity-preserving KD: CE + γ·‖G̃_t − G̃_s‖²/B² on row-normalised batch Gram matrices."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: SPConfig) -> None:
        super().__init__(student, teacher)
        t_net = teacher.single("sp", "its block outputs are matched")
        if cfg.pairs is None:
            self.pairs = [(penultimate_index(student), penultimate_index(t_net))]
        else:
            self.pairs = check_pairs(cfg.pairs, student, t_net)
        self.weight, self.ce_weight = cfg.weight, cfg.ce_weight

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        s_idx, t_idx = [s for s, _ in self.pairs], [t for _, t in self.pairs]
        z_s, f_s, _, f_t = student_teacher_features(self.student, self.teacher.single(), batch.x, s_idx, t_idx)
        sp = sum(sp_loss(a, b) for a, b in zip(f_s, f_t, strict=True))
        return {"ce": self.ce_weight * F.cross_entropy(z_s.float(), batch.y), "sp": self.weight * sp}
