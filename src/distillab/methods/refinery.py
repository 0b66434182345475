"""Label Refinery (Bagherinezhad et al. 2018): a trained refinery network relabels every
augmented crop on the fly, and the student minimises the soft cross-entropy −Σ q·log p against
the refinery's softmax on *that exact crop* (the loader augments before the objective sees the
batch, so the refinery and the student look at the same pixels). Ground-truth labels are used
only for evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from distillab.config import SoftLabelCacheConfig, Strict, cache_field
from distillab.data.batch import Batch
from distillab.methods.registry import register_method
from distillab.methods.base import Objective, Teacher, teacher_field, soft_cross_entropy


class RefineryConfig(Strict):
    name: Literal["refinery"] = "refinery"
    teacher: list[str] = teacher_field()
    cache: SoftLabelCacheConfig | None = cache_field()


@register_method(RefineryConfig)
class Refinery(Objective):
    """Label Refinery: soft cross-entropy to the refinery's softmax on the very same crop."""

    def __init__(self, student: nn.Module, refinery: Teacher, cfg: RefineryConfig) -> None:
        super().__init__(student, refinery)

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x = batch.x  # ground-truth labels are never read: the refinery relabels
        return {"refined": soft_cross_entropy(self.student(x), self.teacher.soft_targets(batch))}
