"""The BiT-HyperRule (Kolesnikov et al. 2020; google-research/big_transfer ``bit_hyperrule.py``)
as plain functions of the dataset size and the image size.

SGD momentum 0.9, no weight decay, base lr 0.003 at batch 512, linear warm-up then lr ÷ 10 at
each decay step; MixUp α = 0.1 only from 20k examples on; small images (< 96x96 area) → resize
160, crop 128, otherwise resize 512, crop 480.
"""

from __future__ import annotations

from distillab.config import OptimConfig, TrainConfig
from distillab.errors import UserError

BASE_LR = 0.003
BASE_BATCH = 512


def _check_size(dataset_size: int) -> None:
    if dataset_size < 1:
        raise UserError(f"BiT-HyperRule: dataset size {dataset_size} is not covered (need ≥ 1 example)")


def get_resolution(height: int, width: int) -> tuple[int, int]:
    """(resize to, random crop of) for images of ``height`` x ``width``."""
    if height < 1 or width < 1:
        raise UserError(f"BiT-HyperRule: image size {height}x{width} is not covered (need positive sizes)")
    return (160, 128) if height * width < 96 * 96 else (512, 480)


def get_schedule(dataset_size: int) -> list[int]:
    """Steps [warm-up end, decay, decay, decay, end]."""
    _check_size(dataset_size)
    if dataset_size < 20_000:
        return [100, 200, 300, 400, 500]
    if dataset_size < 500_000:
        return [500, 3000, 6000, 9000, 10_000]
    return [500, 6000, 12_000, 18_000, 20_000]


def get_mixup(dataset_size: int) -> float:
    """MixUp α: 0.1 from 20k examples on, else no MixUp."""
    _check_size(dataset_size)
    return 0.0 if dataset_size < 20_000 else 0.1


def get_lr(step: int, dataset_size: int, base_lr: float = BASE_LR) -> float | None:
    """The learning rate at ``step``; None once training is over."""
    warmup, *decays, end = get_schedule(dataset_size)
    if step < warmup:
        return base_lr * step / warmup
    if step >= end:
        return None
    # Official bit_hyperrule.get_lr divides by 10 once `s < step`: the decay step itself still
    # runs at the previous lr.
    return base_lr * 0.1 ** sum(step > d for d in decays)


def train_config(dataset_size: int, schedule_scale: float = 1.0, base_lr: float = BASE_LR,
                 epochs: int = 10) -> tuple[TrainConfig, int]:
    """The rule as a :class:`TrainConfig` run by *steps*, and the steps per epoch.

    The rule's step budget (× ``schedule_scale``) is split into ``epochs`` equal epochs of full
    batches (the loader draws them from repeated seeded shuffles, so a 1-shot set still fills a
    batch, as the official code's repeated dataset does); warm-up and decays stay at the rule's
    fractions of the run (< 20k examples: warm-up 20 %, ÷10 at 40/60/80 %; < 500k: 5 %, 30/60/90 %).
    ``base_lr`` is used as is, at whatever batch the data config sets (the official code's 0.003).
    Total steps = epochs × steps per epoch (the budget rounded down to a multiple of ``epochs``).
    """
    warmup, d1, d2, d3, end = get_schedule(dataset_size)
    total = max(1, round(end * schedule_scale))
    epochs = max(1, min(epochs, total))
    steps_per_epoch = total // epochs
    optim = OptimConfig(name="sgd", lr=base_lr, momentum=0.9, weight_decay=0.0, schedule="step",
                        milestones=[d1 / end, d2 / end, d3 / end], gamma=0.1, warmup_epochs=epochs * warmup / end)
    return TrainConfig(epochs=epochs, optim=optim, eval_every=epochs), steps_per_epoch  # validate at the end
