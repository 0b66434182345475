"""Born-Again Networks (Furlanello et al. 2018): a student of the teacher's own architecture
trained on the teacher's outputs, generation after generation.

Variants (``variant``):
  ``ban``    teacher loss only: cross-entropy with the teacher's probabilities (no temperature)
  ``ban+l``  teacher loss plus the label cross-entropy
  ``cwtm``   label cross-entropy, each sample weighted by the teacher's max probability,
             weights normalised over the batch (Confidence-Weighted by Teacher Max)
  ``dkpp``   teacher loss with the teacher's non-argmax probabilities permuted per sample
             (Dark Knowledge with Permuted Predictions): keeps the argmax and the multiset of values
The teacher is loaded from the previous generation's checkpoint: a separate, frozen module.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distillab.config import SoftLabelCacheConfig, Strict, cache_field
from distillab.data.batch import Batch
from distillab.methods.registry import register_method
from distillab.methods.base import Objective, Teacher, teacher_field, soft_cross_entropy


class BornAgainConfig(Strict):
    name: Literal["born-again"] = "born-again"
    teacher: list[str] = teacher_field()
    cache: SoftLabelCacheConfig | None = cache_field()
    variant: Literal["ban", "ban+l", "cwtm", "dkpp"] = "ban"


def cwtm_weights(teacher_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample weights max_c p_T / Σ_batch max_c p_T (they sum to 1)."""
    m = teacher_probs.max(1).values
    return m / m.sum()


def permute_non_argmax(probs: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle each row's values at its non-argmax positions; the argmax entry stays in place."""
    b, c = probs.shape
    top = probs.argmax(1, keepdim=True)
    # Positions sorted so the argmax comes first, then the others in index order.
    keys = torch.arange(c, device=probs.device).expand(b, c).clone().float()
    keys.scatter_(1, top, -1.0)
    order = keys.argsort(1)
    others = order[:, 1:]
    shuffle = torch.rand(b, c - 1, generator=gen).to(probs.device).argsort(1)
    out = probs.clone()
    out.scatter_(1, others, probs.gather(1, others.gather(1, shuffle)))
    return out


@register_method(BornAgainConfig)
class BornAgain(Objective):
    """Born-Again Networks: BAN, BAN+L, CWTM or DKPP against the previous generation."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: BornAgainConfig) -> None:
        super().__init__(student, teacher)
        self.variant = cfg.variant

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        p_t = self.teacher.soft_targets(batch)
        z = self.student(x)
        if self.variant == "cwtm":
            ce = F.cross_entropy(z, y, reduction="none")
            return {"cwtm": (cwtm_weights(p_t) * ce).sum()}
        if self.variant == "dkpp":
            p_t = permute_non_argmax(p_t)
        out = {"teacher": soft_cross_entropy(z, p_t)}
        if self.variant == "ban+l":
            out["ce"] = F.cross_entropy(z, y)
        return out
