"""Label Refinery (Bagherinezhad et al. 2018): a trained refinery network relabels every
augmented crop on the fly, and the student minimises the soft cross-entropy −Σ q·log p against
the refinery's softmax on *that exact crop* (the loader augments before the objective sees the
batch, so the refinery and the student look at the same pixels). Ground-truth labels are used
only for evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.methods.base import Objective, Teacher, soft_cross_entropy


class RefineryConfig(Strict):
    name: Literal["refinery"] = "refinery"
    teacher: list[str] = Field(min_length=1, description="the refinery run folder(s)")


class Refinery(Objective):
    def __init__(self, student: nn.Module, refinery: Teacher, cfg: RefineryConfig) -> None:
        super().__init__(student, refinery)

    def forward(self, x: torch.Tensor, y: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        return {"refined": soft_cross_entropy(self.student(x), self.teacher.probs(x))}
