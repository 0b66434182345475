"""Knowledge distillation (Hinton, Vinyals, Dean 2015), optionally with logit standardisation.

    L = w_ce·CE(y, softmax(z_s)) + w_kd·T²·KL(p_T ‖ softmax(z_s / T)),   w_ce = 1 − α, w_kd = α

``alpha`` weights the *soft* term (torchdistill's ``KDLoss(alpha)`` weights the hard one; ours
follows the lecture's formula); ``ce_weight`` / ``kd_weight`` replace 1 − α / α when set (KD+LS
uses 0.1 and 9). KL differs from the soft cross-entropy H(p_T, q_T) only by the teacher's entropy,
a constant, so the gradient is the paper's. T² keeps the soft gradient's scale comparable as T
changes. The teacher may be an ensemble: its soft targets are the average of the members'
probabilities at temperature T.

Logit standardisation (Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation",
CVPR 2024; official code sunshangquan/logit-standardization-KD ``distillers/KD.py``): before the
softened softmax, each example's logits — teacher's and student's — are z-scored over the classes,

    Z(z) = (z − mean_c z) / (std_c z + 1e-7)      (std unbiased, torch's default),

then p = softmax(Z(z) / T) with a base temperature T (2 on CIFAR-100). The label term keeps the raw
student logits. With an ensemble each member is z-scored before its softmax.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import SoftLabelCacheConfig, Strict, cache_field
from distillab.data.batch import Batch
from distillab.methods.registry import register_method
from distillab.methods.base import Objective, Teacher, teacher_field


class KDConfig(Strict):
    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0, description="T (base temperature with logit_standardize; KD+LS: 2)")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft term; the label term gets 1 − alpha")
    ce_weight: float | None = Field(None, ge=0, description="label-term weight replacing 1 − alpha (KD+LS: 0.1)")
    kd_weight: float | None = Field(None, ge=0, description="soft-term weight replacing alpha (KD+LS: 9)")
    logit_standardize: bool = Field(False, description="z-score teacher and student logits (Sun et al. 2024)")
    teacher: list[str] = teacher_field()
    cache: SoftLabelCacheConfig | None = cache_field()


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z(z) = (z − mean) / (std + eps) over the classes of each example (unbiased std, as the
    official code)."""
    z = logits.float()
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + eps)


@torch.no_grad()
def teacher_probs(teacher: Teacher, batch: Batch, temperature: float, standardized: bool = False) -> torch.Tensor:
    """The (ensemble) teacher's softened targets; with ``standardized`` each member's logits are
    z-scored before its softmax, then the probabilities are averaged. (Z-scoring is shift-invariant,
    so cached log-probabilities standardise exactly as the logits they came from.)"""
    if not standardized:
        return teacher.soft_targets(batch, temperature)
    return torch.stack([F.softmax(standardize(z) / temperature, 1) for z in teacher.logits(batch)]).mean(0)


def soft_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
            standardized: bool = False) -> torch.Tensor:
    """KL(p_T ‖ softmax(z_s / T)), averaged over the batch; z_s is z-scored first if ``standardized``."""
    z = standardize(student_logits) if standardized else student_logits.float()
    log_q = F.log_softmax(z / temperature, dim=1)
    return F.kl_div(log_q, teacher_probs.float(), reduction="batchmean")


def kd_losses(student_logits: torch.Tensor, teacher_probs: torch.Tensor, y: torch.Tensor,
              temperature: float, alpha: float, *, ce_weight: float | None = None,
              kd_weight: float | None = None, standardized: bool = False) -> dict[str, torch.Tensor]:
    """The two weighted terms of Hinton's loss: ``ce`` = w_ce·CE and ``kd`` = w_kd·T²·KL, with
    w_ce = 1 − α and w_kd = α unless given. ``teacher_probs`` must match ``standardized``."""
    w_ce = 1 - alpha if ce_weight is None else ce_weight
    w_kd = alpha if kd_weight is None else kd_weight
    out = {"kd": w_kd * temperature**2 * soft_kl(student_logits, teacher_probs, temperature, standardized)}
    if w_ce > 0:
        out["ce"] = w_ce * F.cross_entropy(student_logits.float(), y)
    return out


@register_method(KDConfig)
class KD(Objective):
    """Hinton KD: (1 − α)·CE + α·T²·KL to the (ensemble) teacher's softened outputs (optionally z-scored)."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: KDConfig) -> None:
        super().__init__(student, teacher)
        self.cfg = cfg

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y, c = batch.x, batch.y, self.cfg
        p_t = teacher_probs(self.teacher, batch, c.temperature, c.logit_standardize)
        return kd_losses(self.student(x), p_t, y, c.temperature, c.alpha, ce_weight=c.ce_weight,
                         kd_weight=c.kd_weight, standardized=c.logit_standardize)
