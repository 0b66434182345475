"""CIFAR-style ResNets (He et al. 2016) as used by KD benchmarks: resnet20/32/56/110 with widths
16-32-64, and the "x4" variants (resnet8x4, resnet32x4) with widths 32-64-128-256 (as in CRD /
mdistiller). Each residual block is one transferable block; the stem is block 0."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distillab.errors import UserError
from distillab.models.blocks import BlockNet
from distillab.models.cnn import norm_layer
from distillab.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def cifar_resnet(depth: int, num_classes: int, in_chans: int = 3, wide: bool = False, norm: str = "bn") -> BlockNet:
    """ResNet-(6n+2) for small images; ``wide`` gives the x4 width plan 32-64-128-256."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise UserError(f"model resnet{depth}: CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110); for the "
                        f"ImageNet ResNet use timm:resnet{depth} or torchvision:resnet{depth}")
    n = (depth - 2) // 6
    widths = [32, 64, 128, 256] if wide else [16, 16, 32, 64]
    blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
                                             norm_layer(norm, widths[0]), nn.ReLU(inplace=True))]
    cin = widths[0]
    for stage, w in enumerate(widths[1:]):
        for i in range(n):
            blocks.append(BasicBlock(cin, w, 2 if (stage > 0 and i == 0) else 1, norm))
            cin = w
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    net = BlockNet(blocks, head)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


@register_model("resnet", pattern=r"resnet(\d+(?:x4)?)")
def _resnet_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs: Any) -> BlockNet:
    """resnetN, resnetNx4 — CIFAR ResNets (resnet20, resnet8x4, resnet32x4; kwargs: norm)."""
    depth, _, wide = arg.partition("x")
    return cifar_resnet(int(depth), num_classes, in_chans, wide=bool(wide), **kwargs)
