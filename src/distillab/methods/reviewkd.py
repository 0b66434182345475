"""ReviewKD — Distilling Knowledge via Knowledge Review (Chen, Liu, Zhao, Jia, CVPR 2021).

The student's stage outputs F_1..F_{L−1} (shallow → deep) plus its pooled penultimate vector as a
1x1 map F_L are reviewed deepest first by attention-based fusion (ABF) modules; level i fuses its
own features with the residual R_{i+1} passed down from the level below it:

    X_i = BN(conv1x1(F_i)),  Y = upsample_nearest(R_{i+1}, size of X_i),  [a, b] = σ(conv1x1([X_i, Y]))
    R_i = a·X_i + b·Y   (R_L = X_L),    O_i = BN(conv3x3(R_i))  with the teacher's channels at level i

and each O_i is matched to the teacher's feature at the same level by the hierarchical context loss

    HCL(O, T) = [MSE(O, T) + Σ_j w_j·MSE(pool_{k_j}(O), pool_{k_j}(T))] / (1 + Σ_j w_j),
    k_j over (4, 2, 1) keeping k < H (H = the level's height), w_j = 0.5, 0.25, … over the kept sizes

    L = CE + 5 · min(epoch / 20, 1) · Σ_levels HCL(O_i, T_i),     epoch = progress × epochs.

Follows the official ``CIFAR-100/model/reviewkd.py`` (dvlab-research/ReviewKD) and mdistiller: the
middle width is min(512, channels of the deepest level), conv1/conv2 use kaiming_uniform(a=1), the
deepest ABF has no attention, and the residual passed on is taken *after* the nearest resize to the
teacher's size. Departures: the teacher's features are our taps' *post-activation* block outputs
(the official code uses pre-activation maps, which the block taps do not expose), and the warm-up
is continuous in progress × epochs (the official code steps it per integer epoch).
Levels: ``pairs`` (default ``auto_pairs``: the last block of each spatial size, f1..f3 on CIFAR
ResNets), keeping only (C, H, W) outputs, plus the pooled last blocks as the deepest level.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods.base import Objective, Teacher, teacher_field
from distillab.methods.features import (layers_field, auto_pairs, block_shapes, check_pairs, penultimate_index, pooled,
                                        student_teacher_features)
from distillab.methods.registry import Context, register_method


class ReviewKDConfig(Strict):
    name: Literal["reviewkd"] = "reviewkd"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    pairs: list[tuple[int, int]] | None = Field(
        None, min_length=1, description="[student_block, teacher_block] map levels; None = stage outputs (auto_pairs)")
    weight: float = Field(5.0, ge=0, description="weight of the review (HCL) loss; 0.6 for resnet56→resnet20")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")
    warmup: float = Field(20.0, ge=0, description="epochs of linear warm-up of the review loss (0: none)")
    max_mid_channels: int = Field(512, gt=0, description="cap on the ABFs' middle width")


def hcl_loss(f_s: list[torch.Tensor], f_t: list[torch.Tensor]) -> torch.Tensor:
    """Σ over levels of the normalised pyramid of MSEs at full size and pooled to 4, 2, 1 (< H)."""
    total = torch.zeros((), device=f_s[0].device)
    for s, t in zip(f_s, f_t, strict=True):
        s, t = s.float(), t.float()
        loss, w, tot = F.mse_loss(s, t), 1.0, 1.0
        for k in (4, 2, 1):
            if k >= s.shape[2]:
                continue
            w /= 2
            loss = loss + w * F.mse_loss(F.adaptive_avg_pool2d(s, k), F.adaptive_avg_pool2d(t, k))
            tot += w
        total = total + loss / tot
    return total


class ABF(nn.Module):
    """Attention-based fusion of one level's features with the residual from the deeper level."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.BatchNorm2d(mid_ch))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.att = nn.Sequential(nn.Conv2d(2 * mid_ch, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, res: torch.Tensor | None, out_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output with the teacher's channels and size, residual for the next shallower level)."""
        x = self.conv1(x)
        if self.att is not None and res is not None:
            y = F.interpolate(res, x.shape[2:], mode="nearest")
            a = self.att(torch.cat([x, y], 1))
            x = x * a[:, :1] + y * a[:, 1:]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """One ABF per level; ``forward`` takes and returns features ordered shallow → deep."""

    def __init__(self, in_channels: list[int], out_channels: list[int], out_sizes: list[tuple[int, int]],
                 max_mid: int = 512) -> None:
        super().__init__()
        mid = min(max_mid, in_channels[-1])
        n = len(in_channels)
        self.abfs = nn.ModuleList(
            ABF(c, mid, o, i < n - 1) for i, (c, o) in enumerate(zip(in_channels, out_channels, strict=True))
        )
        self.out_sizes = [tuple(s) for s in out_sizes]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        res = None
        for i in reversed(range(len(feats))):  # deepest first
            o, res = self.abfs[i](feats[i], res, self.out_sizes[i])
            outs.insert(0, o)
        return outs


@register_method(ReviewKDConfig)
class ReviewKD(Objective):
    """ReviewKD: CE + warm-up × weight × HCL between ABF-fused student features and teacher features."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: ReviewKDConfig, in_shape: tuple[int, ...],
                 epochs: int = 1) -> None:
        super().__init__(student, teacher)
        t_net = teacher.single("reviewkd", "its block outputs are matched")
        pairs = auto_pairs(student, t_net, in_shape) if cfg.pairs is None else check_pairs(cfg.pairs, student, t_net)
        s_shapes, t_shapes = block_shapes(student, in_shape), block_shapes(t_net, in_shape)
        # Shallow → deep; only (C, H, W) maps (the pooled level below covers a flat penultimate vector).
        pairs = sorted((s, t) for s, t in pairs if len(s_shapes[s]) == 3 and len(t_shapes[t]) == 3)
        if cfg.pairs is not None and len(pairs) != len(cfg.pairs):
            raise UserError("reviewkd: every block pair must be a convolutional (C, H, W) output of both networks")
        s_last, t_last = penultimate_index(student), penultimate_index(t_net)
        d = lambda s: s[0] if len(s) == 3 else math.prod(s)  # noqa: E731 - pooled width
        self.s_idx = [s for s, _ in pairs] + [s_last]
        self.t_idx = [t for _, t in pairs] + [t_last]
        self.review = ReviewFusion([s_shapes[s][0] for s, _ in pairs] + [d(s_shapes[s_last])],
                                   [t_shapes[t][0] for _, t in pairs] + [d(t_shapes[t_last])],
                                   [t_shapes[t][1:] for _, t in pairs] + [(1, 1)],
                                   cfg.max_mid_channels).to(next(student.parameters()).device)
        self.cfg, self.epochs = cfg, epochs

    @classmethod
    def from_config(cls, cfg: ReviewKDConfig, student: nn.Module, ctx: Context) -> "ReviewKD":
        return cls(student, ctx.teacher(cfg), cfg, ctx.in_shape, ctx.epochs)

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        c = self.cfg
        z_s, f_s, _, f_t = student_teacher_features(self.student, self.teacher.single(), batch.x,
                                                    self.s_idx, self.t_idx)
        # The deepest level is the pooled penultimate vector as a 1x1 map (the last tap, pooled).
        f_s = f_s[:-1] + [pooled(f_s[-1])[:, :, None, None]]
        f_t = f_t[:-1] + [pooled(f_t[-1])[:, :, None, None]]
        warm = 1.0 if c.warmup <= 0 else min(progress * self.epochs / c.warmup, 1.0)
        review = hcl_loss(self.review(f_s), f_t)
        return {"ce": c.ce_weight * F.cross_entropy(z_s.float(), batch.y), "review": c.weight * warm * review}

    def saved_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "review": self.review}
