"""The objective interface and the frozen teacher.

An objective holds the student (and, where needed, a teacher and connectors) and turns a batch
into a dict of *already weighted* named losses; the trainer sums them and never asks which
method it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Objective(nn.Module):
    """Base class: ``forward(x, y, progress) -> {name: weighted loss}``.

    ``progress`` is the fraction of training done (0 → 1), for losses whose weights are annealed.
    """

    def __init__(self, student: nn.Module, teacher: "Teacher | None" = None) -> None:
        super().__init__()
        self.student = student
        if teacher is not None:
            self.teacher = teacher  # frozen by construction; never in saved_modules()

    def forward(self, x: torch.Tensor, y: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates: the student's, plus any connector's."""
        return (p for p in self.parameters() if p.requires_grad)

    def saved_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights a checkpoint must hold to resume (never the frozen teacher)."""
        return {"student": self.student}

    def eval_model(self) -> nn.Module:
        """The model whose predictions are evaluated."""
        return self.student


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """−Σ_c q_c log p_c with p = softmax(logits), averaged over the batch."""
    return -(target_probs * F.log_softmax(logits.float(), 1)).sum(1).mean()


class Teacher(nn.Module):
    """One frozen model or an ensemble of them, in eval mode by construction.

    ``train(True)`` is ignored and every parameter has ``requires_grad=False``, so neither a
    trainer calling ``.train()`` on the objective nor an optimiser can change the teacher.
    """

    def __init__(self, members: nn.Module | Sequence[nn.Module]) -> None:
        super().__init__()
        if isinstance(members, nn.Module):
            members = [members]
        self.members = nn.ModuleList(members)
        for p in self.members.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher":  # noqa: D401 - keep eval whatever is asked
        return super().train(False)

    @torch.no_grad()
    def probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Average of the members' softmax(logits / T): the ensemble's soft targets."""
        total = None
        for m in self.members:
            p = F.softmax(m(x).float() / temperature, dim=1)
            total = p if total is None else total + p
        return total / len(self.members)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the averaged probabilities at T=1 (usable as ensemble logits)."""
        return self.probs(x).clamp_min(1e-12).log()
