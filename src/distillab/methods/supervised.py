"""Plain supervised training: cross-entropy on the labels, optional label smoothing and MixUp.

MixUp (Zhang et al. 2018, as BiT uses it): one λ ~ Beta(α, α) per batch, x̃ = λx + (1−λ)x[π],
loss = λ·CE(z, y) + (1−λ)·CE(z, y[π]). Randomness comes from the global generator, which the
trainer seeds per epoch, so resumed runs mix the same way.
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
from distillab.methods.base import Objective


class SupervisedConfig(Strict):
    name: Literal["supervised"] = "supervised"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp Beta(α, α); 0 = off")


def mixup(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix the batch with a permutation of itself; return (mixed x, permutation, λ)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0]).to(x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam


@register_method(SupervisedConfig)
class Supervised(Objective):
    """Cross-entropy on the labels (optional label smoothing and MixUp)."""

    def __init__(self, student: nn.Module, cfg: SupervisedConfig) -> None:
        super().__init__(student)
        self.label_smoothing = cfg.label_smoothing
        self.mixup_alpha = cfg.mixup_alpha

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        ls = self.label_smoothing
        if self.mixup_alpha > 0:
            x, perm, lam = mixup(x, self.mixup_alpha)
            z = self.student(x)
            return {"ce": lam * F.cross_entropy(z, y, label_smoothing=ls)
                    + (1 - lam) * F.cross_entropy(z, y[perm], label_smoothing=ls)}
        return {"ce": F.cross_entropy(self.student(x), y, label_smoothing=ls)}
