"""The block interface every model exposes, and feature taps built on it.

"The first n layers" must mean one thing for an MLP, a CIFAR ResNet, BiT or a timm model, so
every model in the zoo offers ``blocks`` (an ordered list of transferable units, input side
first) and ``head`` (the classifier). Taps read a block's output with forward hooks, so the
model itself is never changed.

Any other ``nn.Module`` works too: its taps are either named by module path
(:func:`use_layers`, a method's ``student_layers: [features.3, …]``) or found automatically
(:func:`discover_taps`: the leaf modules in the order a forward pass calls them, each called once,
the one producing the logits excluded). Subclass :class:`BlockNet` to make your blocks explicit.
"""

from __future__ import annotations

import difflib
import weakref
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


# Per-module tap lists kept outside the module (the user's model is never changed): names chosen by
# a method's config, and names found by a probe forward pass. Names, not modules, so a module
# swapped later (SyncBatchNorm conversion) is still found.
_NAMED: "weakref.WeakKeyDictionary[nn.Module, list[str]]" = weakref.WeakKeyDictionary()
_FOUND: "weakref.WeakKeyDictionary[nn.Module, list[str]]" = weakref.WeakKeyDictionary()


def _resolve(model: nn.Module, names: Sequence[str], role: str = "model") -> list[nn.Module]:
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else \
                f" (its layers: {', '.join(n for n in list(modules)[1:9] if n)}…)"
            raise UserError(f"{role} layer {name!r} not found in {type(model).__name__}{hint}")
        out.append(modules[name])
    return out


def use_layers(model: nn.Module, names: Sequence[str] | None, role: str = "model") -> None:
    """Tap ``model`` at the modules named by path (``["features.3", "layer2"]``), in that order;
    ``None`` goes back to the model's own blocks (or the automatic taps)."""
    if names is None:
        _NAMED.pop(model, None)
        return
    _resolve(model, names, role)  # unknown names fail now, with a did-you-mean
    _NAMED[model] = list(names)


@torch.no_grad()
def discover_taps(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the leaf modules of ``model`` in the order a forward pass on ``x`` calls them,
    keeping those called exactly once with a tensor output other than the logits."""
    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    calls: list[tuple[str, torch.Tensor]] = []
    count: dict[str, int] = {}

    def hook(m: nn.Module, _inp: object, out: object) -> None:
        n = names[m]
        count[n] = count.get(n, 0) + 1
        if torch.is_tensor(out):
            calls.append((n, out))

    handles = [m.register_forward_hook(hook) for m in names]
    was = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    found = [n for n, out in calls if count[n] == 1 and out is not logits]
    if not found:
        raise UserError(f"{type(model).__name__}: no layers to tap found; name them (student_layers / "
                        f"teacher_layers: module paths), or build it from distillab.BlockNet")
    return found


def taps_of(model: nn.Module, probe: torch.Tensor | None = None) -> list[nn.Module]:
    """The modules whose outputs are the model's feature taps: named layers if a method chose
    them, else the model's ``tap_modules()``, else the automatic taps (found with ``probe``)."""
    if model in _NAMED:
        return _resolve(model, _NAMED[model])
    if hasattr(model, "tap_modules"):
        return model.tap_modules()  # type: ignore[operator,no-any-return]
    if model not in _FOUND:
        if probe is None:
            raise UserError(f"{type(model).__name__} has no blocks: name its layers (student_layers / "
                            f"teacher_layers) or build it from distillab.BlockNet")
        _FOUND[model] = discover_taps(model, probe)
    return _resolve(model, _FOUND[model])


def get_blocks(model: nn.Module) -> list[nn.Module]:
    """The ordered transferable blocks of a zoo model (the head excluded)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise UserError(f"model {type(model).__name__} exposes no blocks; build it with create_model")
    return list(blocks)


def tap_features(model: nn.Module, x: torch.Tensor, indices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model`` on ``x``; return its logits and the outputs of the blocks at ``indices``."""
    taps = taps_of(model, x)
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
