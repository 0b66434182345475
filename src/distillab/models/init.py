"""Weight initialisation as a model option (``model.init: kaiming | xavier | default``).

PyTorch's default for ``Conv2d``/``Linear`` (uniform, bound 1/sqrt(fan_in)) shrinks a ReLU net's
activations by about 1/sqrt(3)·sqrt(2) per layer; in an 8-layer thin CNN without normalisation
the signal fades to a few percent of its input scale and the net stays at chance. He et al.'s
(2015) Kaiming init keeps the forward variance constant through ReLUs, which is why it is the
default for the zoo's own ReLU nets without normalisation (``mlp``, ``cnn`` with ``norm: none``).
Where BatchNorm / GroupNorm follow every conv the forward signal is rescaled anyway, and the init
scale only sets the effective learning rate: Kaiming's 2.4x larger weights train a BatchNorm
``cnn:8-16`` on digits slower (3 epochs, lr 0.05, seed 0: 71.9 % vs 91.4 % with PyTorch's
default), so ``auto`` keeps the builder's init there.

``kaiming``: normal, std sqrt(2 / fan_in), on every conv / linear weight of the blocks;
``xavier``: Glorot uniform (gain 1) on the same weights; both zero the biases and leave the head
(a linear map to logits, not followed by a ReLU) and normalisation layers at PyTorch's default.
``auto``: ``kaiming`` for a model without normalisation layers, else ``default``.
``default``: whatever the model's builder did (PyTorch's defaults, or the family's own scheme:
CIFAR ResNets are Kaiming fan-out, BiT zero-initialises its head, timm models their own).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

InitScheme = Literal["kaiming", "xavier", "default", "auto"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _targets(model: nn.Module) -> list[nn.Module]:
    """The conv / linear layers an init scheme rewrites: those of the blocks (all but the last
    linear layer for a model without blocks)."""
    blocks = getattr(model, "blocks", None)
    scope = list(blocks.modules()) if isinstance(blocks, nn.Module) else list(model.modules())
    layers = [m for m in scope if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    if not isinstance(blocks, nn.Module) and layers and isinstance(layers[-1], nn.Linear):
        layers = layers[:-1]  # the classifier
    return layers


def init_weights(model: nn.Module, scheme: InitScheme) -> nn.Module:
    """Re-initialise ``model``'s block weights in place with ``scheme`` (from the global RNG)."""
    if scheme == "auto":
        scheme = "default" if any(isinstance(m, _NORMS) for m in model.modules()) else "kaiming"
    if scheme == "default":
        return model
    for m in _targets(model):
        if scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
