"""Collapse watchdog: a run whose accuracy is still at chance after its first epochs has diverged
(typically a distillation term whose gradients are several times cross-entropy's, on a net without
normalisation layers). Reported as one line with its cause and fix, never silently averaged."""

from __future__ import annotations


import torch
from torch import nn

FIX = ("lower the learning rate or clip gradients (YAML: train.optim.grad_clip: 5.0; Python: grad_clip=5.0) — "
       "a distillation term's gradient is up to T times cross-entropy's, too large a step for nets without "
       "normalisation layers")


def at_chance(acc: float, num_classes: int, n: int = 10_000) -> bool:
    """Accuracy indistinguishable from guessing: at most 1.25x chance plus one point, plus two
    standard errors of an accuracy measured on ``n`` examples (a single batch is noisy)."""
    if num_classes < 2 or n < 1:
        return False
    p = 1 / num_classes
    return acc <= 1.25 * p + 0.01 + 2 * (p * (1 - p) / n) ** 0.5


def collapse_warning(acc: float, num_classes: int, epoch: int, epochs: int, where: str = "",
                     n: int = 10_000) -> str | None:
    """The one-line warning for a run at chance after ``epoch`` epochs (checked from the 2nd epoch,
    or the last one of a shorter run, so a slow first epoch is not mistaken for a collapse)."""
    if epoch < min(2, epochs) or not at_chance(acc, num_classes, n):
        return None
    run = f"run {where}: " if where else ""
    return (f"{run}accuracy {100 * acc:.1f}% is at chance (1/{num_classes}) after {epoch} epoch"
            f"{'s' if epoch > 1 else ''}: training has collapsed; {FIX}")


@torch.no_grad()
def batch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
    """Accuracy of ``model`` (in eval mode) on one batch, and its number of classes: the watchdog's
    signal when a run has no validation data (and the batch size)."""
    was = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was)
    return float((logits.argmax(1) == y).float().mean()), int(logits.shape[1]), len(y)



class Watchdog:
    """Watches one run's accuracy epoch by epoch; ``mode``: warn (one line on stderr, once, and
    ``warning`` set for the summary), stop (a :class:`UserError`) or ignore."""

    def __init__(self, mode: str = "warn") -> None:
        self.mode = mode
        self.warning: str | None = None

    def observe(self, acc: float, classes: int, n: int, epoch: int, epochs: int, label: str = "",
                speak: bool = True) -> bool:
        """Record an epoch's accuracy; return whether it is at chance."""
        if self.mode == "ignore":
            return False
        if not at_chance(acc, classes, n):
            self.warning = None  # recovered: not a failed run after all
            return False
        message = collapse_warning(acc, classes, epoch, epochs, label, n)
        if message is None or self.warning is not None:
            return True
        self.warning = message
        if self.mode == "stop":
            from distillab.errors import UserError

            raise UserError(message.replace("training has collapsed;", "training stopped (train.collapse: stop);"))
        if speak:
            import sys

            print(f"warning: {message}", file=sys.stderr, flush=True)
        return True
