"""Multi-layer perceptrons (Hinton et al. 2015 used 2x1200 and 2x800 ReLU nets on MNIST)."""

from __future__ import annotations

from typing import Any

from torch import nn

from distillab.models.blocks import BlockNet
from distillab.models.registry import parse_widths, register_model


def mlp(in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0,
        input_dropout: float = 0.0) -> BlockNet:
    """Flatten → [Linear → ReLU → Dropout] per hidden width → Linear head.

    Each hidden layer is one block; ``input_dropout`` drops input pixels (Hinton's teacher).
    """
    blocks: list[nn.Module] = []
    width = in_features
    for i, h in enumerate(hidden):
        layers: list[nn.Module] = []
        if i == 0:
            layers.append(nn.Flatten())
            if input_dropout:
                layers.append(nn.Dropout(input_dropout))
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        blocks.append(nn.Sequential(*layers))
        width = h
    head = nn.Linear(width, num_classes) if hidden else nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes))
    return BlockNet(blocks, head)


@register_model("mlp", takes_arg=True, init="auto")
def _mlp_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs: Any) -> BlockNet:
    """mlp:W-W — ReLU MLP with these hidden widths (kwargs: dropout, input_dropout)."""
    return mlp(in_chans * img_size * img_size, parse_widths(f"mlp:{arg}", arg), num_classes, **kwargs)
