"""Model registry: ``@register_model`` makes a builder usable by name, in Python and in YAML.

Names have three shapes, looked up in this order:
  ``family:ARG``  the family's builder gets ``arg="ARG"`` (``mlp:1200-1200``, ``timm:resnet18``)
  ``NAME``        a builder registered under exactly that name (a user's ``@register_model("mynet")``)
  a pattern       a builder registered with ``pattern=`` gets the regex's first group
                  (``resnet32x4`` → ``arg="32x4"``)

A builder is called as ``builder(num_classes, in_chans, img_size, [arg=...], **kwargs)`` and must
return an ``nn.Module`` mapping images to logits; expose ``blocks`` (and ``head``) to make it
usable for transfer and feature taps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from distillab.errors import UserError
from distillab.registry import Registry

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    takes_arg: bool
    pattern: re.Pattern[str] | None
    help: str
    init: str = "default"  # the scheme ``model.init`` falls back to (models/init.py)


MODELS: Registry[ModelEntry] = Registry("model", "; `distillab list models` describes them")


def register_model(name: str, *, takes_arg: bool = False, pattern: str | None = None,
                   help: str = "", init: str = "default") -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``.

    >>> @register_model("tiny-linear")                      # doctest: +SKIP
    ... def tiny(num_classes, in_chans, img_size, **kw):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size**2, num_classes))

    ``takes_arg``: the name is used as ``name:ARG``; ``pattern``: a regex over the whole name whose
    first group is passed as ``arg``. The first line of the builder's docstring is its help text.
    ``init``: the weight-init scheme used when a config does not set ``model.init`` ("default" =
    keep what the builder does; "auto" = Kaiming for ReLU nets without normalisation; models/init.py).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")

    def deco(builder: Builder) -> Builder:
        text = help or (builder.__doc__ or "").strip().split("\n")[0]
        MODELS.add(name, ModelEntry(name, builder, takes_arg or pattern is not None,
                                    re.compile(pattern) if pattern else None, text, init), builder.__module__)
        return builder

    return deco


def resolve(name: str) -> tuple[ModelEntry, str | None]:
    """The registry entry for a full model name, and the argument its builder gets."""
    family, sep, arg = name.partition(":")
    if sep:
        entry = MODELS.get(family)
        if entry is not None and entry.takes_arg and entry.pattern is None:
            return entry, arg
    elif name in MODELS:
        entry = MODELS[name]
        if not entry.takes_arg:
            return entry, None
        if entry.pattern is None:
            return entry, ""  # ``mlp`` alone: the family's empty argument
    for entry in MODELS.values():
        if entry.pattern is not None and (m := entry.pattern.fullmatch(name)):
            return entry, m.group(1)
    from distillab.errors import did_you_mean

    shapes = [shape_of(e) for e in MODELS.values()]
    families = [e.name for e in MODELS.values() if e.takes_arg and e.pattern is None]
    close = did_you_mean(family, families) if sep else ""
    hint = (close.replace("?", "").split(" or ")[0] + f":{arg}?" if close else
            did_you_mean(name, [*(e.name for e in MODELS.values()), *EXAMPLES]))
    if not sep and re.fullmatch(r"(resnet|resnext|wide_resnet|efficientnet|vit|convnext|mobilenet|densenet|vgg|regnet)"
                                r"[\w.]*", name) and not hint:
        hint = f"; ImageNet models come from timm or torchvision: timm:{name} or torchvision:{name}"
    raise UserError(f"model {name!r} unknown{hint} (known: {', '.join(shapes)}); `distillab list models` "
                    f"describes them")


# Names a "did you mean" may offer besides the registered ones: one per pattern family.
EXAMPLES = ("resnet20", "resnet32", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "bit:R50x1", "bit:R26x1",
            "mlp:800-800", "cnn:32-64")


def shape_of(entry: ModelEntry) -> str:
    """How a user writes names of this family: ``mlp:ARG``, ``resnetN``, ``bit:RNxN`` (the regex of a
    pattern family made readable: digit runs become N, optional parts are bracketed)."""
    if entry.pattern is None:
        return f"{entry.name}:ARG" if entry.takes_arg else entry.name
    text = entry.pattern.pattern.replace("(?:", "[").replace(")?", "]").replace("\\d+", "N").replace("\\d", "N")
    return re.sub(r"[()^$\\]", "", text)


def parse_widths(name: str, spec: str) -> list[int]:
    """``"800-800"`` → ``[800, 800]``, with a one-line error naming the model."""
    try:
        widths = [int(w) for w in spec.split("-") if w]
    except ValueError:
        raise UserError(f"model {name!r}: widths must be integers joined by '-', e.g. mlp:1200-1200") from None
    if any(w <= 0 for w in widths):
        raise UserError(f"model {name!r}: widths must be positive")
    return widths


def default_init(name: str) -> str:
    """The init scheme of the family of model ``name`` (``model.init`` unset)."""
    return resolve(name)[0].init


def build(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs: Any) -> nn.Module:
    entry, arg = resolve(name)
    if arg is not None:
        kwargs = {**kwargs, "arg": arg}
    return entry.builder(num_classes, in_chans, img_size, **kwargs)
