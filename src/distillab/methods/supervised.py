"""Plain supervised training: cross-entropy on the labels (optional label smoothing)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.methods.base import Objective


class SupervisedConfig(Strict):
    name: Literal["supervised"] = "supervised"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class Supervised(Objective):
    def __init__(self, student: nn.Module, cfg: SupervisedConfig) -> None:
        super().__init__(student)
        self.label_smoothing = cfg.label_smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.student(x), y, label_smoothing=self.label_smoothing)}
