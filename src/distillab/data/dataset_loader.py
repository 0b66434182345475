"""A seeded batch loader over any map-style ``torch.utils.data.Dataset`` (the Python API's way in).

It yields :class:`Batch` records with each example's ``index`` (so index-based methods such as
CRD work on a user's own data) and has ``set_epoch``: the order of epoch e is drawn from
``(seed, e)``, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from distillab.data.batch import Batch
from distillab.data.loader import epoch_seed
from distillab.errors import UserError


class _EpochSampler(Sampler[int]):
    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        return iter(torch.randperm(self.n, generator=gen).tolist())


class _WithIndex(Dataset):
    """``dataset[i]`` → ``(x, y, i)``; accepts items that are ``(x, y)`` or ``{"x"/"image", "y"/"label"}``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    num_classes: int | None = None  # set once the model's output size is known: labels are checked against it

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        item = self.dataset[i]
        if isinstance(item, dict):
            item = (item.get("x", item.get("image")), item.get("y", item.get("label")))
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise UserError(f"dataset item {i} is a {type(item).__name__}; a dataset must yield (image, label) "
                            f"pairs or {{'x': image, 'y': label}} mappings")
        x, y = item[0], item[1]
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise UserError(f"dataset item {i}: the image is a {type(x).__name__}, not a tensor or array") from None
        return x, _labels(y, f"dataset item {i}", self.num_classes), i

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """Whole-batch fetch for tensor datasets (also inside ``Subset``s, as ``random_split``
        makes them): one gather instead of a Python call and a stack per example."""
        base: Any = self.dataset
        idx = list(indices)
        while type(base) is Subset:  # exact types: a subclass may override __getitem__ (augmentation)
            idx = [base.indices[i] for i in idx]
            base = base.dataset
        if type(base) is TensorDataset and len(base.tensors) >= 2:
            t = torch.as_tensor(idx)
            y = _labels(base.tensors[1][t], f"labels of dataset items {indices[0]}…", self.num_classes)
            return [Batch(base.tensors[0][t], y, torch.as_tensor(indices))]
        return [self[i] for i in indices]


def _labels(y: Any, where: str, num_classes: int | None) -> torch.Tensor:
    """Class indices as int64, checked: whole numbers (a float label 1.7 would be truncated to 1),
    not text, not negative, below ``num_classes`` when known."""
    if isinstance(y, (str, bytes)) or y is None:
        raise UserError(f"{where}: label {y!r} is not a class index")
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{where}: label of type {type(y).__name__} is not a class index") from None
    if t.dtype == torch.bool or t.is_complex():
        raise UserError(f"{where}: labels of dtype {t.dtype} are not class indices")
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            bad = t[~(torch.isfinite(t) & (t == t.round()))].flatten()[0].item()
            raise UserError(f"{where}: label {bad} is not a whole number (class indices are integers; a float "
                            f"label would be truncated)")
    if t.numel() and (t.min() < 0 or (num_classes is not None and t.max() >= num_classes)):
        bad = t.min().item() if t.min() < 0 else t.max().item()
        limit = f"0..{num_classes - 1}" if num_classes is not None else "0 or more"
        raise UserError(f"{where}: label {bad:g} is outside the classes {limit}")
    return t.long()


def _collate(items: list[Any]) -> Batch:
    if len(items) == 1 and isinstance(items[0], Batch):
        return items[0]  # fetched whole by __getitems__
    xs, ys, idx = zip(*items, strict=True)
    return Batch(torch.stack([torch.as_tensor(x) for x in xs]), torch.stack(ys), torch.tensor(idx))


class DatasetLoader:
    """Batches of a map-style dataset, shuffled per epoch from ``seed``; ``num_workers`` decode in
    parallel (a ``torch.utils.data.DataLoader`` underneath). A shuffled epoch drops a last batch of
    one example (BatchNorm cannot train on it), like the in-memory loader."""

    def __init__(self, dataset: Dataset, batch_size: int = 128, *, shuffle: bool = True, seed: int = 0,
                 num_workers: int = 0) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise UserError("the dataset is empty")
        self.sampler = _EpochSampler(n, seed, shuffle)
        drop = shuffle and n > batch_size and n % batch_size == 1
        self._items = _WithIndex(dataset)
        self.loader = DataLoader(self._items, batch_size=batch_size, sampler=self.sampler,
                                 collate_fn=_collate, drop_last=drop, num_workers=num_workers)
        self.num_examples = n

    def check_labels_below(self, num_classes: int) -> None:
        """From now on every label must be below ``num_classes`` (the model's output size)."""
        self._items.num_classes = num_classes

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)
