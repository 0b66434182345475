"""The block interface every model exposes, and feature taps built on it.

"The first n layers" must mean one thing for an MLP, a CIFAR ResNet, BiT or a timm model, so
every model in the zoo offers ``blocks`` (an ordered list of transferable units, input side
first) and ``head`` (the classifier). Taps read a block's output with forward hooks, so the
model itself is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distillab.errors import UserError


class BlockNet(nn.Module):
    """A network that is literally ``head(blocks[-1](...blocks[0](x)))``."""

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def tap_modules(self) -> list[nn.Module]:
        """The module whose output is block i's output, for each block."""
        return list(self.blocks)


def get_blocks(model: nn.Module) -> list[nn.Module]:
    """The ordered transferable blocks of a zoo model (the head excluded)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise UserError(f"model {type(model).__name__} exposes no blocks; build it with create_model")
    return list(blocks)


def tap_features(model: nn.Module, x: torch.Tensor, indices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model`` on ``x``; return its logits and the outputs of the blocks at ``indices``."""
    taps = model.tap_modules()  # type: ignore[operator]
    n = len(taps)
    for i in indices:
        if not -n <= i < n:
            raise UserError(f"block index {i} out of range: the model has {n} blocks (0..{n - 1})")
    store: dict[int, torch.Tensor] = {}
    handles = []
    for i in indices:
        def hook(_m, _inp, out, i=i):  # bind i now, not at call time
            store[i] = out
        handles.append(taps[i].register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, [store[i] for i in indices]


def forward_to_block(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    """Output of block ``index``, computing no further than needed when the model is a BlockNet."""
    if isinstance(model, BlockNet):
        n = len(model.blocks)
        if not -n <= index < n:
            raise UserError(f"block index {index} out of range: the model has {n} blocks (0..{n - 1})")
        for block in model.blocks[: index % n + 1]:
            x = block(x)
        return x
    return tap_features(model, x, [index])[1][0]
