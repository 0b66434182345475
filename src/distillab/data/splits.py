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
    classes, counts = labels.unique(return_counts=True)
    # Largest-remainder allocation: class shares proportional to their counts, summing to ``size``.
    exact = counts.double() * size / n
    shares = exact.floor().long()
    shares[(exact - shares).argsort(descending=True)[: size - int(shares.sum())]] += 1
    picked = []
    for c, k in zip(classes.tolist(), shares.tolist()):
        pos = (labels == c).nonzero().flatten()
        picked.append(pos[torch.randperm(len(pos), generator=gen)[:k]])
    return torch.cat(picked).sort().values
