"""``create_model(name, num_classes, ...)``: the one way to build a model.

Names:
  ``mlp:1200-1200``        hidden widths (kwargs: dropout, input_dropout)
  ``cnn:32-64-128``        conv widths (kwargs: norm=bn|gn|none, pool_every, fc, dropout)
  ``resnet20``, ``resnet8x4``, ``resnet32x4`` …  CIFAR ResNets (kwargs: norm)
  ``bit:R50x1`` … ``bit:R152x4``, ``bit:R26x1``, ``bit:R14x1``  BiT ResNet-v2, GN+WS (kwargs: base_width,
                           groups, small_input, zero_head, norm=gn|bn)
  ``timm:NAME``            any timm model, random init (kwargs: checkpoint=FILE to load weights)
  ``torchvision:NAME``     any torchvision classification model, random init
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from distillab.errors import UserError
from distillab.models.bit import bit_resnet
from distillab.models.cifar_resnet import cifar_resnet
from distillab.models.cnn import cnn
from distillab.models.external import timm_model, torchvision_model
from distillab.models.mlp import mlp


def _widths(name: str, spec: str) -> list[int]:
    try:
        widths = [int(w) for w in spec.split("-") if w]
    except ValueError:
        raise UserError(f"model {name!r}: widths must be integers joined by '-', e.g. mlp:1200-1200") from None
    if any(w <= 0 for w in widths):
        raise UserError(f"model {name!r}: widths must be positive")
    return widths


def create_model(name: str, num_classes: int, in_chans: int = 1, img_size: int = 28, **kwargs: Any) -> nn.Module:
    """Build a randomly initialised model with ``num_classes`` outputs and a block list.

    >>> create_model("mlp:800-800", 10).blocks[0]  # doctest: +ELLIPSIS
    Sequential(...
    """
    try:
        if name.startswith("mlp:") or name == "mlp":
            hidden = _widths(name, name.partition(":")[2])
            return mlp(in_chans * img_size * img_size, hidden, num_classes, **kwargs)
        if name.startswith("cnn:"):
            if not name[4:]:
                raise UserError(f"model {name!r}: give at least one conv width, e.g. cnn:32-64")
            return cnn(in_chans, img_size, _widths(name, name[4:]), num_classes, **kwargs)
        if m := re.fullmatch(r"resnet(\d+)(x4)?", name):
            return cifar_resnet(int(m.group(1)), num_classes, in_chans, wide=bool(m.group(2)), **kwargs)
        if name.startswith("timm:"):
            return timm_model(name[5:], num_classes, in_chans, **kwargs)
        if name.startswith("torchvision:"):
            return torchvision_model(name[12:], num_classes, in_chans, **kwargs)
        if m := re.fullmatch(r"bit:R(\d+)x(\d+)", name):
            return bit_resnet(int(m.group(1)), int(m.group(2)), num_classes, in_chans, **kwargs)
    except TypeError as e:  # unexpected keyword argument from a config
        raise UserError(f"model {name!r}: {e}") from None
    raise UserError(f"model {name!r} unknown (use mlp:W-W, cnn:W-W, resnetN, resnetNx4, bit:RDxW, timm:NAME, "
                    f"torchvision:NAME)")


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def num_blocks(name: str, **kwargs: Any) -> int:
    """How many transferable blocks the model ``name`` has (built on the meta device: no memory)."""
    from distillab.models.blocks import get_blocks

    with torch.device("meta"):
        return len(get_blocks(create_model(name, 2, **kwargs)))
