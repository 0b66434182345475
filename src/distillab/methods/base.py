"""The objective interface and the frozen teacher.

An objective holds the student (and, where needed, a teacher and connectors) and turns a batch
into a dict of *already weighted* named losses; the trainer sums them and never asks which
method it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.data.batch import Batch
from distillab.errors import UserError

if TYPE_CHECKING:
    from distillab.methods.registry import Context


class Objective(nn.Module):
    """Base class: ``forward(batch, progress) -> {name: weighted loss}``.

    ``batch`` is a :class:`~distillab.data.batch.Batch` (``x``, ``y``, ``index``…); ``progress`` is
    the fraction of training done (0 → 1), for losses whose weights are annealed or warmed up.
    Subclasses register with ``@register_method(TheirConfig)``; ``from_config`` builds them.
    """

    def __init__(self, student: nn.Module, teacher: "BaseTeacher | None" = None) -> None:
        super().__init__()
        self.student = student
        if teacher is not None:
            self.teacher = teacher  # frozen by construction; never in saved_modules()

    @classmethod
    def from_config(cls, cfg: Any, student: nn.Module, ctx: "Context") -> "Objective":
        """Default construction: ``cls(student, teacher, cfg)`` when the config names a teacher
        field, else ``cls(student, cfg)``. Override when an objective needs more (shapes, sizes)."""
        if "teacher" in type(cfg).model_fields:
            return cls(student, ctx.teacher(cfg), cfg)  # type: ignore[call-arg]
        return cls(student, cfg)  # type: ignore[call-arg]

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
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


def teacher_field(max_length: int | None = None) -> Any:
    """The ``teacher`` key of a method config: run folders (or model files). Empty by default, since
    a recipe fills it and the Python API passes a module instead."""
    return Field(default_factory=list, max_length=max_length,
                 description="run folders (or model files) of the teacher(s); a recipe fills this")


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """−Σ_c q_c log p_c with p = softmax(logits), averaged over the batch."""
    return -(target_probs * F.log_softmax(logits.float(), 1)).sum(1).mean()


def _mean_softmax(logits: "Iterable[torch.Tensor]", n: int, temperature: float) -> torch.Tensor:
    """Mean over ``n`` logit tensors of softmax(z / T), accumulated one at a time."""
    total: torch.Tensor | None = None
    for z in logits:
        p = F.softmax(z.float() / temperature, dim=1)
        total = p if total is None else total + p
    if total is None:
        raise ValueError("a teacher without members has no soft targets")
    return total / n


class BaseTeacher(nn.Module):
    """What every objective asks a teacher, always given a batch: each member's :meth:`logits`, the
    averaged :meth:`soft_targets`, or — for a method that taps one network's features —
    :meth:`single`. A live :class:`Teacher` runs its networks; the soft-label cache
    (engine/soft_labels.py) answers the same calls from stored outputs.

    Frozen by construction: ``train(True)`` is ignored, so a trainer calling ``.train()`` on the
    objective cannot put it in training mode."""

    def __init__(self) -> None:
        super().__init__()
        super().train(False)

    def train(self, mode: bool = True) -> "BaseTeacher":  # noqa: D401 - keep eval whatever is asked
        return super().train(False)

    def logits(self, batch: Batch) -> list[torch.Tensor]:
        """Each member's logits for ``batch``."""
        raise NotImplementedError

    @torch.no_grad()
    def soft_targets(self, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
        """Average of the members' softmax(logits / T) for a batch."""
        logits = self.logits(batch)
        return _mean_softmax(logits, len(logits), temperature)

    def single(self, method: str = "this method", why: str = "its features are matched") -> nn.Module:
        """The one teacher network, for methods that tap its layers; a one-line error otherwise."""
        raise UserError(f"{method}: needs exactly one teacher network ({why}); a soft-label cache holds outputs "
                        f"only (use it with kd, born-again or refinery)")


class Teacher(BaseTeacher):
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

    @torch.no_grad()
    def logits(self, batch: Batch) -> list[torch.Tensor]:
        """Each member's logits for a batch (members run one after another)."""
        return [m(batch.x) for m in self.members]

    def single(self, method: str = "this method", why: str = "its features are matched") -> nn.Module:
        if len(self.members) != 1:
            raise UserError(f"{method}: needs exactly one teacher ({why})")
        return self.members[0]

    @torch.no_grad()
    def probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """:meth:`soft_targets` of bare images (no batch record): evaluation and tests."""
        return _mean_softmax((m(x) for m in self.members), len(self.members), temperature)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the averaged probabilities at T=1 (usable as ensemble logits by ``evaluate``)."""
        return self.probs(x).clamp_min(1e-12).log()
