"""The batch record every loader yields and every objective receives.

A batch is a record, not a bare ``(x, y)``: methods such as CRD need each example's index in the
training set, and a soft-label cache needs the index and the augmented view. Adding a field here
keeps one trainer for all methods (mdistiller had to copy its loop into a ``CRDTrainer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class Batch:
    """``x`` inputs, ``y`` labels, ``index`` positions in the training set (None where unknown),
    ``extra`` any further per-example tensors a method needs."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, x=mv(self.x), y=mv(self.y), index=None if self.index is None else mv(self.index),
                       extra={k: mv(v) for k, v in self.extra.items()})


def as_batch(item: Any) -> Batch:
    """A :class:`Batch` from what a user's loader yields: a Batch, ``(x, y[, index])`` or a mapping
    with ``x``/``y`` (or ``image``/``label``) and optional ``index``."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, Mapping):
        x = item.get("x", item.get("image"))
        y = item.get("y", item.get("label"))
        if x is None or y is None:
            raise TypeError(f"a batch mapping needs 'x' and 'y' keys, got {sorted(item)}")
        rest = {k: v for k, v in item.items() if k not in ("x", "y", "image", "label", "index")}
        return Batch(x, y, item.get("index"), rest)
    if isinstance(item, Sequence) and len(item) in (2, 3):
        return Batch(*item)
    raise TypeError(f"cannot read a batch from {type(item).__name__}: yield (x, y), (x, y, index) or a Batch")


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs of a loader: iterate batches, know their count. A loader that also
    has ``set_epoch(epoch)`` gets a seeded, reproducible order per epoch (what resume relies on);
    a plain ``torch.utils.data.DataLoader`` works too, without that guarantee."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
