"""BiT: ResNet-v2 with GroupNorm + Weight Standardization (Kolesnikov et al. 2020, following
google-research/big_transfer).

Pre-activation bottleneck units (GN → ReLU → conv), stride on the 3x3 conv, the projection
shortcut taken from the pre-activated input; ``StdConv2d`` standardises each output channel's
weights over (in, kh, kw) with the biased variance; head GN → ReLU → global pool → 1x1 conv,
zero-initialised when ``zero_head``. ``norm="bn"`` builds the BatchNorm twin (plain convs, BN) used
to show why BiT chose GN+WS for small batches.

Names: ``bit:R50x1`` … ``bit:R152x4`` and the CPU-sized ``bit:R26x1``, ``bit:R14x1``;
kwargs ``base_width`` (64 in the paper), ``groups`` (32), ``small_input`` (3x3 stem, no pool).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import UserError
from distillab.models.blocks import BlockNet
from distillab.models.registry import register_model

DEPTHS = {14: [1, 1, 1, 1], 26: [2, 2, 2, 2], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class StdConv2d(nn.Conv2d):
    """Conv2d with Weight Standardization: w ← (w − mean) / sqrt(var + eps) per output channel."""

    eps = 1e-10

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (w - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class _Parts:
    """Conv and norm factories for the GN+WS network or its BatchNorm twin."""

    def __init__(self, norm: str, groups: int) -> None:
        if norm not in ("gn", "bn"):
            raise UserError(f"model bit: norm {norm!r} unknown (gn or bn)")
        self.norm, self.groups = norm, groups

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        cls = StdConv2d if self.norm == "gn" else nn.Conv2d
        return cls(cin, cout, k, stride=stride, padding=padding, bias=False)

    def norm_layer(self, c: int) -> nn.Module:
        if self.norm == "bn":
            return nn.BatchNorm2d(c)
        if c % self.groups:
            raise UserError(f"model bit: {c} channels are not divisible into {self.groups} groups; change groups")
        return nn.GroupNorm(self.groups, c)


class PreActBottleneck(nn.Module):
    def __init__(self, parts: _Parts, cin: int, cout: int, cmid: int, stride: int) -> None:
        super().__init__()
        self.gn1 = parts.norm_layer(cin)
        self.conv1 = parts.conv(cin, cmid, 1)
        self.gn2 = parts.norm_layer(cmid)
        self.conv2 = parts.conv(cmid, cmid, 3, stride, 1)
        self.gn3 = parts.norm_layer(cmid)
        self.conv3 = parts.conv(cmid, cout, 1)
        self.downsample = parts.conv(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.gn1(x))
        residual = self.downsample(out) if self.downsample is not None else x  # from the pre-activated input
        out = self.conv1(out)
        out = self.conv2(F.relu(self.gn2(out)))
        out = self.conv3(F.relu(self.gn3(out)))
        return out + residual


class BiTHead(nn.Module):
    def __init__(self, parts: _Parts, c: int, num_classes: int, zero_head: bool) -> None:
        super().__init__()
        self.gn = parts.norm_layer(c)
        self.conv = nn.Conv2d(c, num_classes, 1)
        if zero_head:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.gn(x)), 1)
        return self.conv(x).flatten(1)


def bit_resnet(depth: int, width: int, num_classes: int, in_chans: int = 3, *, base_width: int = 64,
               groups: int = 32, small_input: bool = False, zero_head: bool = True, norm: str = "gn") -> BlockNet:
    """ResNet-v2 ``R{depth}x{width}``; blocks = [root, unit, unit, …], head = GN-ReLU-pool-conv."""
    if depth not in DEPTHS:
        raise UserError(f"model bit:R{depth}x{width}: depth must be one of {sorted(DEPTHS)}")
    if width < 1:
        raise UserError(f"model bit:R{depth}x{width}: width must be ≥ 1")
    parts = _Parts(norm, groups)
    root_c = base_width * width
    if small_input:
        root: nn.Module = nn.Sequential(parts.conv(in_chans, root_c, 3, 1, 1))
    else:
        root = nn.Sequential(parts.conv(in_chans, root_c, 7, 2, 3), nn.ConstantPad2d(1, 0.0), nn.MaxPool2d(3, 2))
    blocks: list[nn.Module] = [root]
    cin = root_c
    for stage, units in enumerate(DEPTHS[depth]):
        cout = base_width * 4 * width * 2**stage
        for u in range(units):
            stride = 2 if (stage > 0 and u == 0) else 1
            blocks.append(PreActBottleneck(parts, cin, cout, cout // 4, stride))
            cin = cout
    return BlockNet(blocks, BiTHead(parts, cin, num_classes, zero_head))


@register_model("bit", pattern=r"bit:(R\d+x\d+)")
def _bit_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs: Any) -> BlockNet:
    """bit:RDxW — BiT ResNet-v2 with GroupNorm + Weight Standardization (R50x1 … R152x4, R26x1, R14x1)."""
    depth, width = arg[1:].split("x")
    return bit_resnet(int(depth), int(width), num_classes, in_chans, **kwargs)
