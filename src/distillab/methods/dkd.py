"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022).

With p = softmax(z / T), the binary target/non-target split b = [p_y, 1 − p_y] and the
distribution among the non-target classes p̂ = softmax(z / T − 1000·onehot(y)):

    TCKD = T²·(1/B)·Σ_b KL(b_t ‖ b_s)          NCKD = T²·(1/B)·Σ_b KL(p̂_t ‖ p̂_s)
    L    = w_ce·CE(y, z_s) + min(epoch / warmup, 1)·(α·TCKD + β·NCKD)

Follows mdistiller (``mdistiller/distillers/DKD.py``): the −1000 mask, T² on both terms, the sum
over the batch divided by B, defaults CE 1, α 1, β 8 (res32x4→res8x4; β is pair-specific), T 4 and
a 20-epoch linear warm-up. Two departures, both numerical only: log b_s is taken in log space
(z_y/T − lse, masked lse − lse) instead of ``torch.log`` of the 2-vector, which gives −inf once p_y
rounds to 1; and the warm-up uses the continuous epoch progress × epochs (mdistiller uses the
1-indexed integer epoch, i.e. a factor up to 1/warmup larger during the ramp).

Logit standardisation (Sun et al. CVPR 2024, ``distillers/DKD.py`` of their code): with
``logit_standardize`` both logits are z-scored (:func:`~distillab.methods.kd.standardize`) before
the above; DKD+LS multiplies α and β by the KD weight (res32x4→res8x4: α 9, β 72, T 2).

An ensemble teacher enters through pseudo-logits T·log(mean_m softmax(z_m / T)), whose softmax at T
is the members' averaged probabilities (as in KD); for one member this is its logits up to a
per-example shift, which no term sees, so a single teacher uses its logits directly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.methods.base import Objective, Teacher, teacher_field
from distillab.methods.kd import standardize
from distillab.methods.registry import Context, register_method


class DKDConfig(Strict):
    name: Literal["dkd"] = "dkd"
    temperature: float = Field(4.0, gt=0, description="T (base temperature with logit_standardize)")
    alpha: float = Field(1.0, ge=0, description="weight of TCKD (target vs non-target)")
    beta: float = Field(8.0, ge=0, description="weight of NCKD (among non-targets); pair-specific")
    ce_weight: float = Field(1.0, ge=0, description="weight of the label cross-entropy")
    warmup: float = Field(20.0, ge=0, description="epochs of linear warm-up of the DKD term (0: none)")
    logit_standardize: bool = Field(False, description="z-score teacher and student logits (Sun et al. 2024)")
    teacher: list[str] = teacher_field()


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (TCKD, NCKD), each already × T² and averaged over the batch."""
    T = temperature
    gt = F.one_hot(y, student_logits.shape[1]).float()
    zs, zt = student_logits.float() / T, teacher_logits.float() / T
    # Binary split. Teacher: masses of its probabilities; student: log masses in log space.
    p_t = F.softmax(zt, 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
    lse = zs.logsumexp(1)
    log_b_s = torch.stack([(zs * gt).sum(1) - lse, (zs - 1000.0 * gt).logsumexp(1) - lse], 1)
    tckd = F.kl_div(log_b_s, b_t, reduction="sum") * T**2 / y.shape[0]
    # Non-target distributions: the target logit pushed down by 1000 (exp underflows to 0).
    p_hat_t = F.softmax(zt - 1000.0 * gt, 1)
    log_p_hat_s = F.log_softmax(zs - 1000.0 * gt, 1)
    nckd = F.kl_div(log_p_hat_s, p_hat_t, reduction="sum") * T**2 / y.shape[0]
    return tckd, nckd


def warmup_factor(epoch: float, warmup: float) -> float:
    """min(epoch / warmup, 1): the DKD term's linear warm-up (1 throughout when warmup is 0)."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


@register_method(DKDConfig)
class DKD(Objective):
    """DKD: CE + warm-up × (α·TCKD + β·NCKD) on the teacher's logits, optionally z-scored."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: DKDConfig, epochs: int = 1) -> None:
        super().__init__(student, teacher)
        self.cfg, self.epochs = cfg, epochs

    @classmethod
    def from_config(cls, cfg: DKDConfig, student: nn.Module, ctx: Context) -> "DKD":
        return cls(student, ctx.teacher(cfg), cfg, ctx.epochs)

    @torch.no_grad()
    def teacher_logits(self, batch: Batch | torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch (an ensemble: T·log of its mean softened probabilities)."""
        c = self.cfg
        if isinstance(batch, torch.Tensor):  # bare images (tests, analysis): a batch without labels
            batch = Batch(batch, torch.empty(0, dtype=torch.long, device=batch.device))
        logits = self.teacher.logits(batch)
        prep = standardize if c.logit_standardize else (lambda z: z.float())
        if len(logits) == 1:
            return prep(logits[0])
        p = torch.stack([F.softmax(prep(z) / c.temperature, 1) for z in logits]).mean(0)
        return c.temperature * p.clamp_min(1e-30).log()

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y, c = batch.x, batch.y, self.cfg
        z_s = self.student(x)
        z_dkd = standardize(z_s) if c.logit_standardize else z_s
        tckd, nckd = dkd_terms(z_dkd, self.teacher_logits(batch), y, c.temperature)
        w = warmup_factor(progress * self.epochs, c.warmup)
        return {"ce": c.ce_weight * F.cross_entropy(z_s.float(), y), "tckd": w * c.alpha * tckd,
                "nckd": w * c.beta * nckd}
