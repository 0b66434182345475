"""Optimisers and learning-rate schedules: what the trainer steps, and by how much at each step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from distillab.config import OptimConfig


def make_optimizer(params: Iterable[nn.Parameter] | list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over parameters or parameter groups (a group's own ``lr`` overrides cfg.lr)."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (a pure function, so resume needs no
    scheduler state): linear warm-up, then constant, step decay at fractions of training, or cosine."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        done = step / total_steps
        return cfg.gamma ** sum(done >= m for m in cfg.milestones)
    t = (step - warm) / max(1, total_steps - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lrs(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    """Every group's lr = its base lr x ``factor`` (layer-wise groups keep their ratios)."""
    for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
        g["lr"] = base * factor
