"""``create_model(name, num_classes, ...)``: the one way to build a model.

Every model family registers itself with :func:`~distillab.models.registry.register_model` in its
own file; the package imports every module in it, so a new family is one new file. ``distillab list models`` prints
them. Built in:
  ``mlp:1200-1200``        hidden widths (kwargs: dropout, input_dropout)
  ``cnn:32-64-128``        conv widths (kwargs: norm=bn|gn|none, pool_every, fc, dropout)
  ``resnet20``, ``resnet8x4``, ``resnet32x4`` …  CIFAR ResNets (kwargs: norm)
  ``bit:R50x1`` … ``bit:R152x4``, ``bit:R26x1``, ``bit:R14x1``  BiT ResNet-v2, GN+WS
  ``timm:NAME``            any timm model, random init (kwargs: checkpoint=FILE to load weights)
  ``torchvision:NAME``     any torchvision classification model, random init
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distillab.errors import UserError
from distillab.models.init import init_weights
from distillab.models.registry import build, default_init


def create_model(name: str, num_classes: int, in_chans: int = 1, img_size: int = 28, *, init: str | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a randomly initialised model with ``num_classes`` outputs and a block list.

    ``init`` (kaiming | xavier | default | auto) re-initialises the block weights (models/init.py);
    unset, the family's own scheme applies (``auto`` for ``mlp`` and ``cnn``: Kaiming when the net
    has no normalisation layers).

    >>> create_model("mlp:800-800", 10).blocks[0]  # doctest: +ELLIPSIS
    Sequential(...
    """
    try:
        model = build(name, num_classes, in_chans, img_size, **kwargs)
    except TypeError as e:  # unexpected keyword argument from a config
        raise UserError(f"model {name!r}: {e}") from None
    except (ValueError, OverflowError, RuntimeError, MemoryError) as e:  # dropout 2, absurd widths …
        raise UserError(f"model {name!r} with {kwargs or 'default kwargs'}: {str(e).splitlines()[0][:200]}") from None
    model = init_weights(model, init or default_init(name))  # type: ignore[arg-type]
    # How to rebuild it: the Python API saves this with a trained model, so `distillab.load` and
    # `distillab export` rebuild an API run's model by name.
    model._distillab_spec = {"name": name, "kwargs": dict(kwargs)}
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def num_blocks(name: str, **kwargs: Any) -> int:
    """How many transferable blocks the model ``name`` has (built on the meta device: no memory)."""
    from distillab.models.blocks import get_blocks

    with torch.device("meta"):
        return len(get_blocks(create_model(name, 2, **kwargs)))
