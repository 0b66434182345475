"""Seeded splits: validation hold-out, stratified subsets, few-shot subsets, and class halves A/B."""

from __future__ import annotations

import dataclasses

import torch

from distillab.config import ClassSplitConfig
from distillab.data.sources import CIFAR10_CLASSES, FASHION_CLASSES, Dataset
from distillab.errors import UserError

# Named dissimilar groupings (Yosinski et al. 2014 split ImageNet into man-made vs natural).
SEMANTIC_SPLITS: dict[str, tuple[list[str], list[str]]] = {
    # garments worn on the upper body vs trousers, footwear and bags
    "fashion-mnist": (["T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"],
                      ["Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot"]),
    # vehicles vs animals
    "cifar10": (["airplane", "automobile", "ship", "truck"],
                ["bird", "cat", "deer", "dog", "frog", "horse"]),
}
assert sorted(sum(SEMANTIC_SPLITS["fashion-mnist"], [])) == sorted(FASHION_CLASSES)
assert sorted(sum(SEMANTIC_SPLITS["cifar10"], [])) == sorted(CIFAR10_CLASSES)


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
    for c, k in zip(classes.tolist(), shares.tolist(), strict=True):
        pos = (labels == c).nonzero().flatten()
        picked.append(pos[torch.randperm(len(pos), generator=gen)[:k]])
    return torch.cat(picked).sort().values


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """``shots`` seeded examples of every class (all of a class that has fewer)."""
    gen = torch.Generator().manual_seed(seed + 31)
    picked = [pos[torch.randperm(len(pos), generator=gen)[:shots]]
              for pos in ((labels == c).nonzero().flatten() for c in labels.unique().tolist())]
    return torch.cat(picked).sort().values


def class_halves(ds: Dataset, cfg: ClassSplitConfig) -> tuple[list[int], list[int]]:
    """Original class indices of halves A and B."""
    n = ds.num_classes
    if cfg.split == "random":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        a = sorted(perm[: (n + 1) // 2])
    elif cfg.split == "semantic":
        if ds.name not in SEMANTIC_SPLITS:
            raise UserError(f"data.classes.split: no semantic split is shipped for {ds.name!r} "
                            f"(known: {', '.join(SEMANTIC_SPLITS)}); give data.classes.a explicitly")
        a = sorted(ds.classes.index(c) for c in SEMANTIC_SPLITS[ds.name][0])
    else:
        if not cfg.a:
            raise UserError("data.classes.a: the explicit split needs a list of class names or indices for half A")
        a = []
        for c in cfg.a:
            if isinstance(c, int) or (isinstance(c, str) and c.isdigit() and c not in ds.classes):
                idx = int(c)
                if not 0 <= idx < n:
                    raise UserError(f"data.classes.a: class index {idx} out of range 0..{n - 1}")
            elif c in ds.classes:
                idx = ds.classes.index(c)
            else:
                raise UserError(f"data.classes.a: unknown class {c!r} (classes: {', '.join(ds.classes)})")
            a.append(idx)
        a = sorted(set(a))
    b = [i for i in range(n) if i not in a]
    if not a or not b:
        raise UserError(f"data.classes: the split leaves half {'A' if not a else 'B'} empty")
    return a, b


def select_classes(ds: Dataset, keep: list[int]) -> Dataset:
    """The examples of classes ``keep`` only, labels re-indexed 0..len(keep)-1 in that order."""
    remap = torch.full((ds.num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    mtr, mte = remap[ds.y_train] >= 0, remap[ds.y_test] >= 0
    return dataclasses.replace(ds, x_train=ds.x_train[mtr], y_train=remap[ds.y_train[mtr]],
                               x_test=ds.x_test[mte], y_test=remap[ds.y_test[mte]],
                               classes=[ds.classes[i] for i in keep]).check()


def class_split(ds: Dataset, cfg: ClassSplitConfig) -> Dataset:
    """Half ``cfg.part`` of ``ds``'s classes."""
    a, b = class_halves(ds, cfg)
    return select_classes(ds, a if cfg.part == "A" else b)
