"""Index splits of a dataset: validation hold-out and training subsets, all seeded."""

from __future__ import annotations

import torch

from distillab.errors import UserError


def train_val_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (train, val) index tensors; the val set depends only on ``seed``."""
    if val_size >= n:
        raise UserError(f"data.val_size: {val_size} leaves no training examples (the set has {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def subset_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """A class-stratified seeded subset of ``size`` positions into ``labels``."""
    n = len(labels)
    if size >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed + 17)
    classes = labels.unique()
    picked = []
    for c in classes.tolist():
        pos = (labels == c).nonzero().flatten()
        share = round(size * len(pos) / n)
        picked.append(pos[torch.randperm(len(pos), generator=gen)[:share]])
    out = torch.cat(picked)
    return out.sort().values
