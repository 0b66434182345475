"""Knowledge distillation (Hinton, Vinyals, Dean 2015).

    L = (1 − α)·CE(y, softmax(z_s)) + α·T²·KL(p_T ‖ softmax(z_s / T))

``alpha`` weights the *soft* term (torchdistill's ``KDLoss(alpha)`` weights the hard one; ours
follows the lecture's formula). KL differs from the soft cross-entropy H(p_T, q_T) only by the
teacher's entropy, a constant, so the gradient is the paper's. T² keeps the soft gradient's
scale comparable as T changes. The teacher may be an ensemble: its soft targets are the average
of the members' probabilities at temperature T.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.methods.registry import register_method
from distillab.methods.base import Objective, Teacher, teacher_field


class KDConfig(Strict):
    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) term")
    teacher: list[str] = teacher_field()


def soft_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T ‖ softmax(z_s / T)), averaged over the batch."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_q, teacher_probs, reduction="batchmean")


def kd_losses(student_logits: torch.Tensor, teacher_probs: torch.Tensor, y: torch.Tensor,
              temperature: float, alpha: float) -> dict[str, torch.Tensor]:
    """The two weighted terms of Hinton's loss: ``ce`` = (1−α)·CE and ``kd`` = α·T²·KL."""
    out = {"kd": alpha * temperature**2 * soft_kl(student_logits, teacher_probs, temperature)}
    if alpha < 1:
        out["ce"] = (1 - alpha) * F.cross_entropy(student_logits, y)
    return out


@register_method(KDConfig)
class KD(Objective):
    """Hinton KD: (1 − α)·CE + α·T²·KL to the (ensemble) teacher's softened outputs."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: KDConfig) -> None:
        super().__init__(student, teacher)
        self.temperature = cfg.temperature
        self.alpha = cfg.alpha

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        p_t = self.teacher.probs(x, self.temperature)
        return kd_losses(self.student(x), p_t, y, self.temperature, self.alpha)
