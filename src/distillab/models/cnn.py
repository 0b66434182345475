"""Small convolutional nets for 8x8 … 32x32 inputs."""

from __future__ import annotations

from typing import Any

from torch import nn

from distillab.errors import UserError
from distillab.models.blocks import BlockNet
from distillab.models.registry import parse_widths, register_model


GN_CHANNELS_PER_GROUP = 8
GN_MAX_GROUPS = 32


def gn_groups(channels: int) -> int:
    """GroupNorm's group count: groups of 8 channels, at most 32 groups (the GN paper's 32 groups
    of 8 channels at ResNet-50's 256-wide layers), the largest count ≤ that dividing ``channels``.
    A thin layer keeps several channels per group: min(32, C) groups would make GN(16, 16) — per-
    channel instance norm, which discards each channel's contrast."""
    target = max(1, min(GN_MAX_GROUPS, channels // GN_CHANNELS_PER_GROUP))
    return next(g for g in range(target, 0, -1) if channels % g == 0)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, GroupNorm (:func:`gn_groups`) or nothing."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"model norm {kind!r} unknown (use bn, gn or none)")


def cnn(in_chans: int, img_size: int, widths: list[int], num_classes: int, norm: str = "bn",
        pool_every: int = 1, fc: int | list[int] = 0, dropout: float = 0.0) -> BlockNet:
    """Conv3x3 → norm → ReLU blocks, max-pooling after every ``pool_every`` blocks while the
    feature map is at least 4x4, then fully connected blocks (``fc`` widths, each Linear → ReLU →
    Dropout) on globally pooled features, then a linear head.

    ``cnn:16-32-32-32-32`` with ``fc=[128, 128]`` is a small AlexNet-like 8-layer net: 7 blocks
    (conv1-5, fc6, fc7) + head (fc8), the layout of Yosinski et al. 2014.
    """
    blocks: list[nn.Module] = []
    c, size = in_chans, img_size
    for i, w in enumerate(widths):
        layers: list[nn.Module] = [nn.Conv2d(c, w, 3, padding=1, bias=norm == "none"), norm_layer(norm, w),
                                   nn.ReLU(inplace=True)]
        if (i + 1) % pool_every == 0 and size >= 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        blocks.append(nn.Sequential(*layers))
        c = w
    fcs = [fc] if isinstance(fc, int) and fc else (list(fc) if fc else [])
    if fcs:
        for j, f in enumerate(fcs):
            first = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if j == 0 else []
            blocks.append(nn.Sequential(*first, nn.Linear(c, f), nn.ReLU(inplace=True), nn.Dropout(dropout)))
            c = f
        head: nn.Module = nn.Linear(c, num_classes)
    else:
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
    return BlockNet(blocks, head)


@register_model("cnn", takes_arg=True, init="auto")
def _cnn_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs: Any) -> BlockNet:
    """cnn:W-W — 3x3 conv net with these widths (kwargs: norm=bn|gn|none, pool_every, fc, dropout)."""
    if not arg:
        raise UserError("model 'cnn:': give at least one conv width, e.g. cnn:32-64")
    return cnn(in_chans, img_size, parse_widths(f"cnn:{arg}", arg), num_classes, **kwargs)
